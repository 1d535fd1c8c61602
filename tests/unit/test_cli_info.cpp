#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include "core/runtime/blas_kernels.h"
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

  // Which OpenBLAS kernel set replaces which (core/runtime/blas_kernels.h).
  void blasKernelPolicy() {
    using icet::runtime::better_blas_core;
    const icet::runtime::CpuFeatures intel{true, false}, amd{true, true}, no_avx512{false, true};
    QCOMPARE(better_blas_core("Haswell", true, intel).value_or(""),
             std::string("SkylakeX"));  // CPU newer than OpenBLAS
    QCOMPARE(better_blas_core("Zen", true, amd).value_or(""), std::string("SkylakeX"));
    QCOMPARE(better_blas_core("Cooperlake", true, amd).value_or(""),
             std::string("SkylakeX"));                      // Zen 5: 63 vs 278 GFLOP/s
    QVERIFY(!better_blas_core("Cooperlake", true, intel));  // its own CPU: kept
    QVERIFY(!better_blas_core("SkylakeX", true, amd));
    QVERIFY(!better_blas_core("Haswell", false, intel));  // no DYNAMIC_ARCH: cannot switch
    QVERIFY(!better_blas_core("Haswell", true, no_avx512));
  }

  // Without OPENBLAS_CORETYPE, icet runs the kernels the policy names for OpenBLAS's own pick,
  // restarting itself once to get them (OPENBLAS_VERBOSE=2 prints each load's "Core: X" line
  // on stderr); a set OPENBLAS_CORETYPE is kept, with a hint when it leaves AVX-512 unused.
  void blasKernelsAreChosenUnlessSet() {
    const auto blas_of = [](const Run& r) {
      return QJsonDocument::fromJson(r.out).object().value(QStringLiteral("blas")).toObject();
    };
    const QStringList args{QStringLiteral("info"), QStringLiteral("--json")};
    const Run unset = icet::test::run_cli(args, m_home.path(), 60000, [](QProcessEnvironment& env) {
      env.remove(QStringLiteral("OPENBLAS_CORETYPE"));
      env.insert(QStringLiteral("OPENBLAS_VERBOSE"), QStringLiteral("2"));
    });
    QCOMPARE(unset.code, 0);
    QStringList cores;
    for (const QByteArray& line : unset.err.split('\n')) {
      if (line.startsWith("Core: ")) cores << QString::fromUtf8(line.mid(6)).trimmed();
    }
    QVERIFY2(!cores.isEmpty(), unset.err.constData());
    const QJsonObject blas = blas_of(unset);
    const bool dynamic =
        blas.value(QStringLiteral("version")).toString().contains(QStringLiteral("DYNAMIC_ARCH"));
    const auto better = icet::runtime::better_blas_core(cores.first().toStdString(), dynamic,
                                                        icet::runtime::this_cpu());
    const QString kernels = blas.value(QStringLiteral("kernels")).toString();
    if (better) {
      QCOMPARE(cores.size(), 2);  // loaded with OpenBLAS's pick, then restarted
      QCOMPARE(kernels, QString::fromStdString(*better));
      QCOMPARE(cores.last(), kernels);
      QVERIFY(blas.value(QStringLiteral("kernels_note"))
                  .toString()
                  .contains(QStringLiteral("chosen by icet")));
    } else {
      QCOMPARE(cores.size(), 1);
      QCOMPARE(kernels, cores.first());
    }

    const Run set = icet::test::run_cli(args, m_home.path(), 60000, [](QProcessEnvironment& env) {
      env.insert(QStringLiteral("OPENBLAS_CORETYPE"), QStringLiteral("Haswell"));
    });
    QCOMPARE(set.code, 0);
    QCOMPARE(blas_of(set).value(QStringLiteral("kernels")).toString(), QStringLiteral("Haswell"));
    if (dynamic && icet::runtime::this_cpu().avx512) {
      QVERIFY(blas_of(set)
                  .value(QStringLiteral("kernels_note"))
                  .toString()
                  .contains(QStringLiteral("OPENBLAS_CORETYPE")));
    }
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
