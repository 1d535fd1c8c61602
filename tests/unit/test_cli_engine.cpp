#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include "support/cli.h"

// `icet generate` and `icet sweep` on the llava fixture, as a user runs them.
class TestCliEngine : public QObject {
  Q_OBJECT

 private:
  using Run = icet::test::CliRun;

  QTemporaryDir m_home;
  const QString m_model = QStringLiteral(ICET_FIXTURES "/hf-reference/llava");
  const QString m_image = QStringLiteral(ICET_FIXTURES "/hf-reference/llava/image.png");

  Run runCli(QStringList args) {
    args.prepend(QStringLiteral("--no-log-file"));
    return icet::test::run_cli(args, m_home.path());
  }

  static QList<qint64> ids(const QJsonValue& v) {
    QList<qint64> out;
    for (const auto& x : v.toArray()) out << x.toInteger();
    return out;
  }

 private Q_SLOTS:
  void generateJson() {
    const Run r = runCli({QStringLiteral("generate"), QStringLiteral("--model"), m_model, QStringLiteral("--image"),
                          m_image, QStringLiteral("--prompt"), QStringLiteral("What is in the picture?"),
                          QStringLiteral("--max-new-tokens"), QStringLiteral("8"), QStringLiteral("--json")});
    QVERIFY2(r.code == 0, r.err.constData());
    const QJsonObject o = QJsonDocument::fromJson(r.out).object();
    QCOMPARE(o.value(QStringLiteral("layer")).toInt(), 5);  // the checkpoint's default
    // Hugging Face's greedy continuation at the default layer (refs.json).
    QCOMPARE(ids(o.value(QStringLiteral("token_ids"))), (QList<qint64>{293, 241, 233, 233, 233, 233, 233, 233}));
    QVERIFY(o.contains(QStringLiteral("text")));
    QVERIFY(o.contains(QStringLiteral("seed")));
  }

  void generateStreamsText() {
    const Run r = runCli({QStringLiteral("generate"), QStringLiteral("--model"), m_model, QStringLiteral("--image"),
                          m_image, QStringLiteral("--prompt"), QStringLiteral("What is in the picture?"),
                          QStringLiteral("--layer"), QStringLiteral("1"), QStringLiteral("--max-new-tokens"),
                          QStringLiteral("8")});
    QVERIFY2(r.code == 0, r.err.constData());
    QVERIFY(r.out.endsWith('\n'));
    QVERIFY(r.out.contains("There"));  // layer 1 says "\x12\x07Ii%\x1e There\ufffd" (refs.json)
  }

  void sweepJsonMatchesHuggingFaceAtEveryLayer() {
    const Run r = runCli({QStringLiteral("sweep"), QStringLiteral("--model"), m_model, QStringLiteral("--image"),
                          m_image, QStringLiteral("--prompt"), QStringLiteral("What is in the picture?"),
                          QStringLiteral("--layers"), QStringLiteral("1-6"), QStringLiteral("--max-new-tokens"),
                          QStringLiteral("8"), QStringLiteral("--json")});
    QVERIFY2(r.code == 0, r.err.constData());
    const QJsonArray results = QJsonDocument::fromJson(r.out).object().value(QStringLiteral("results")).toArray();
    QCOMPARE(results.size(), 6);
    const QList<QList<qint64>> expected = {{21, 10, 76, 336, 40, 33, 305, 239}, {187, 187, 187, 187, 187, 187, 187, 187},
                                           {148, 362, 362, 362, 362, 362, 362, 362}, {293, 293, 293, 293, 250, 120, 106, 362},
                                           {293, 241, 233, 233, 233, 233, 233, 233}, {163, 233, 233, 233, 233, 233, 233, 233}};
    for (int i = 0; i < 6; ++i) {
      const QJsonObject row = results[i].toObject();
      QCOMPARE(row.value(QStringLiteral("layer")).toInt(), i + 1);
      QCOMPARE(ids(row.value(QStringLiteral("token_ids"))), expected[i]);
    }
  }

  void errorsAreClearAndExitNonZero() {
    QTemporaryDir empty;
    Run r = runCli({QStringLiteral("generate"), QStringLiteral("--model"), empty.path(), QStringLiteral("--image"),
                    m_image, QStringLiteral("--prompt"), QStringLiteral("hi")});
    QCOMPARE(r.code, 1);
    QVERIFY2(r.err.contains("not a model folder"), r.err.constData());

    const QString bad = empty.path() + QStringLiteral("/broken.png");
    QFile f(bad);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("\x89PNG\r\n\x1a\n not really");
    f.close();
    r = runCli({QStringLiteral("generate"), QStringLiteral("--model"), m_model, QStringLiteral("--image"), bad,
                QStringLiteral("--prompt"), QStringLiteral("hi")});
    QCOMPARE(r.code, 1);
    QVERIFY2(r.err.contains("broken.png"), r.err.constData());

    r = runCli({QStringLiteral("sweep"), QStringLiteral("--model"), m_model, QStringLiteral("--image"), m_image,
                QStringLiteral("--prompt"), QStringLiteral("hi"), QStringLiteral("--layers"), QStringLiteral("0-9")});
    QCOMPARE(r.code, 1);
    QVERIFY2(r.err.contains("0-9"), r.err.constData());
  }
};

QTEST_GUILESS_MAIN(TestCliEngine)
#include "test_cli_engine.moc"
