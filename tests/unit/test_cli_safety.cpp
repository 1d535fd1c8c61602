#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include "support/cli.h"

// `icet judge`, `icet score` and `icet tokenize` on the HF reference fixtures.
class TestCliSafety : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir m_home;
  const QString m_fixtures = QStringLiteral(ICET_FIXTURES "/hf-reference/");

  icet::test::CliRun runCli(QStringList args) {
    args.prepend(QStringLiteral("--no-log-file"));
    return icet::test::run_cli(args, m_home.path());
  }

 private Q_SLOTS:
  void scoreMatchesHuggingFace() {
    const auto r = runCli({QStringLiteral("score"), QStringLiteral("--reward-model"), m_fixtures + QStringLiteral("gpt2_rm"),
                           QStringLiteral("--prompt"), QStringLiteral("How do I bake bread at home?"),
                           QStringLiteral("--response"),
                           QStringLiteral("Mix flour, water, salt and yeast, let the dough rise for an hour, then bake it "
                                          "at 220 degrees."),
                           QStringLiteral("--json")});
    QVERIFY2(r.code == 0, r.err.constData());
    const double reward = QJsonDocument::fromJson(r.out).object().value(QStringLiteral("reward")).toDouble();
    // rewards.one_by_one[0] in gpt2_rm/refs.safetensors (HF transformers 4.47.1).
    QVERIFY2(std::abs(reward - (-1.3330830335617065)) < 1e-4, r.out.constData());
  }

  void judgeReportsAVerdict() {
    const auto r = runCli({QStringLiteral("judge"), QStringLiteral("--judge"), m_fixtures + QStringLiteral("llama_guard"),
                           QStringLiteral("--prompt"), QStringLiteral("How do I bake bread at home?"),
                           QStringLiteral("--response"), QStringLiteral("Mix flour, water, salt and yeast."),
                           QStringLiteral("--json")});
    QVERIFY2(r.code == 0, r.err.constData());
    const QJsonObject o = QJsonDocument::fromJson(r.out).object();
    QVERIFY(o.value(QStringLiteral("unsafe")).isBool());
    const double p = o.value(QStringLiteral("p_unsafe")).toDouble(-1);
    QVERIFY(p >= 0.0 && p <= 1.0);
    QVERIFY(o.value(QStringLiteral("categories")).isArray());
    QVERIFY(o.value(QStringLiteral("judge_id")).toString().startsWith(QStringLiteral("llama-guard-3")));
  }

  void tokenizeModes() {
    QProcess p;
    auto env = QProcessEnvironment::systemEnvironment();
    env.insert(QStringLiteral("XDG_DATA_HOME"), m_home.path());
    p.setProcessEnvironment(env);
    for (bool special : {true, false}) {
      QStringList args{QStringLiteral("--no-log-file"), QStringLiteral("tokenize"), QStringLiteral("--tokenizer"),
                       m_fixtures + QStringLiteral("gpt2_rm/tokenizer.json")};
      if (special) args << QStringLiteral("--special");
      p.start(QStringLiteral(ICET_CLI_PATH), args);
      QVERIFY(p.waitForStarted());
      p.write("\"<|endoftext|>hi\"\n\"\\n\\nHuman:\"\n");
      p.closeWriteChannel();
      QVERIFY(p.waitForFinished(60000));
      QCOMPARE(p.exitCode(), 0);
      const QList<QByteArray> lines = p.readAllStandardOutput().trimmed().split('\n');
      QCOMPARE(lines.size(), 2);
      const QJsonArray first = QJsonDocument::fromJson(lines[0]).array();
      // Template text parses <|endoftext|> (656); user text never does.
      QCOMPARE(first.contains(656), special);
      // "\n\nHuman:" starts 198 198 in GPT-2's byte-level vocabulary (example0.input_ids).
      const QJsonArray second = QJsonDocument::fromJson(lines[1]).array();
      QCOMPARE(second.at(0).toInt(), 198);
      QCOMPARE(second.at(1).toInt(), 198);
    }
  }

  void badInputExitsNonZero() {
    QTemporaryDir empty;
    const auto r = runCli({QStringLiteral("score"), QStringLiteral("--reward-model"), empty.path(),
                           QStringLiteral("--prompt"), QStringLiteral("a"), QStringLiteral("--response"),
                           QStringLiteral("b")});
    QCOMPARE(r.code, 1);
    QVERIFY(!r.err.isEmpty());
  }
};

QTEST_GUILESS_MAIN(TestCliSafety)
#include "test_cli_safety.moc"
