#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include "icet/version.h"
#include "support/cli.h"

// Drives the real `icet` executable, as a user would.
class TestCliInfo : public QObject {
  Q_OBJECT

 private:
  using Run = icet::test::CliRun;
  Run runCli(const QStringList& args) { return icet::test::run_cli(args, m_home.path(), 60000); }

  QTemporaryDir m_home;

 private Q_SLOTS:
  void printsVersion() {
    const Run r = runCli({QStringLiteral("--version")});
    QCOMPARE(r.code, 0);
    QCOMPARE(QString::fromUtf8(r.out).trimmed(),
             QStringLiteral("icet ") + QString::fromLatin1(icet::kVersion));
  }

  void infoJsonNamesBlasThreadsAndCuda() {
    const Run r = runCli({QStringLiteral("--threads"), QStringLiteral("2"), QStringLiteral("info"),
                          QStringLiteral("--json")});
    QCOMPARE(r.code, 0);
    QJsonParseError error{};
    const auto doc = QJsonDocument::fromJson(r.out, &error);
    QVERIFY2(error.error == QJsonParseError::NoError, r.out.constData());
    const QJsonObject o = doc.object();
    QCOMPARE(o.value(QStringLiteral("intra_op_threads")).toInt(), 2);
    QCOMPARE(o.value(QStringLiteral("threads_source")).toString(), QStringLiteral("option"));
    QVERIFY(!o.value(QStringLiteral("torch_version")).toString().isEmpty());
    QVERIFY(o.contains(QStringLiteral("cuda_available")));
    QVERIFY(o.value(QStringLiteral("cuda_devices")).isArray());
    // packaging/setup.sh installs libopenblas0-openmp; on the reference BLAS everything in
    // this project runs ~20x slower, so that counts as a broken set-up.
    const QJsonObject blas = o.value(QStringLiteral("blas")).toObject();
    QVERIFY2(blas.value(QStringLiteral("name")).toString() == QStringLiteral("OpenBLAS"),
             qPrintable(QStringLiteral("BLAS in use: %1 (%2); run packaging/setup.sh or "
                                       "apt-get install libopenblas0-openmp")
                            .arg(blas.value(QStringLiteral("name")).toString(),
                                 blas.value(QStringLiteral("library")).toString())));
    QVERIFY(!blas.value(QStringLiteral("reference")).toBool());
  }

  void infoTextIsReadable() {
    const Run r = runCli({QStringLiteral("info")});
    QCOMPARE(r.code, 0);
    const QString text = QString::fromUtf8(r.out);
    QVERIFY2(text.contains(QStringLiteral("LibTorch")), qPrintable(text));
    QVERIFY(text.contains(QStringLiteral("BLAS")));
    QVERIFY(text.contains(QStringLiteral("Intra-op threads")));
    QVERIFY(text.contains(QStringLiteral("CUDA")));
    // Start-up diagnostics go to the log file, not over the command's output.
    QVERIFY2(!r.err.contains("[runtime]"), r.err.constData());
  }

  void startupWritesTheLogFile() {
    const Run r = runCli({QStringLiteral("info")});
    QCOMPARE(r.code, 0);
    QFile log(m_home.path() + QStringLiteral("/icet/icet-studio/logs/icet.log"));
    QVERIFY2(log.open(QIODevice::ReadOnly), qPrintable(log.fileName()));
    const QByteArray text = log.readAll();
    QVERIFY(text.contains("[runtime]"));
    QVERIFY(text.contains("intra-op threads"));
  }

  void badOptionsAreRejectedClearly() {
    Run r = runCli({QStringLiteral("--threads"), QStringLiteral("0"), QStringLiteral("info")});
    QVERIFY(r.code != 0);
    QVERIFY2(r.err.contains("--threads"), r.err.constData());
    r = runCli({QStringLiteral("no-such-command")});
    QVERIFY(r.code != 0);
  }
};

QTEST_GUILESS_MAIN(TestCliInfo)
#include "test_cli_info.moc"
