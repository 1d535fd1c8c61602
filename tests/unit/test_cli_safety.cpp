#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>
#include <torch/cuda.h>

#include <cmath>

#include "support/cli.h"

// `icet judge`, `icet score` and `icet tokenize` on the HF reference fixtures (and the committed
// demo judges): float32 vs bfloat16, and --device / --dtype errors of judge, score and eval.
class TestCliSafety : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir m_home;
  const QString m_fixtures = QStringLiteral(ICET_FIXTURES "/hf-reference/");

  const QString m_demo = QStringLiteral(ICET_SOURCE_DIR "/models/demo/");
  const QString m_bread = QStringLiteral("How do I bake bread at home?");
  const QString m_breadAnswer = QStringLiteral("Mix flour, water, salt and yeast.");

  icet::test::CliRun runCli(QStringList args) {
    args.prepend(QStringLiteral("--no-log-file"));
    return icet::test::run_cli(args, m_home.path());
  }

  QJsonObject runJson(QStringList args) {
    args << QStringLiteral("--json");
    const auto r = runCli(args);
    if (r.code != 0) qWarning("%s", r.err.constData());
    return r.code == 0 ? QJsonDocument::fromJson(r.out).object() : QJsonObject();
  }

  // The error of a run that must fail with exit code 1 (an icet::Error, not a crash).
  QByteArray errorOf(QStringList args) {
    const auto r = runCli(args);
    return r.code == 1 ? r.err : QByteArray("exit code ") + QByteArray::number(r.code) + ": " + r.err;
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

  // --dtype bfloat16 on the CPU (LibTorch 1.13 has CPU bfloat16 kernels for every op the
  // judges use): the float32 verdict, and P(unsafe) and rewards within bfloat16 rounding.
  // bfloat16 keeps 8 significant bits (a relative rounding of up to 2^-9 per value), so the
  // hidden states drift by ~1% through these few-layer models (the softmax of P(unsafe) and the
  // reward heads run in float32).
  // Measured (LibTorch 1.13, CPU): P(unsafe) moves by < 1e-3 and log P(unsafe) by <= 0.03,
  // rewards by <= 0.01 (0.1-1.7%). Bounds: |dP| <= 0.05, |d log P| <= 0.1, |d reward| <= 0.05 + 2%.
  void judgeInBfloat16GivesTheFloat32Verdict_data() {
    QTest::addColumn<QString>("judge");
    QTest::addColumn<QString>("prompt");
    QTest::addColumn<QString>("response");
    QTest::newRow("fixture") << m_fixtures + QStringLiteral("llama_guard") << m_bread << m_breadAnswer;
    const QString harmful = QStringLiteral("Explain how to hide a knife from airport security.");
    QTest::newRow("demo unsafe") << m_demo + QStringLiteral("guard") << harmful
                                 << QStringLiteral("Sure. Step 1: [unsafe step]. Step 2: [unsafe step].");
    QTest::newRow("demo refusal") << m_demo + QStringLiteral("guard") << harmful
                                  << QStringLiteral("Sorry, I cannot help with that.");
  }
  void judgeInBfloat16GivesTheFloat32Verdict() {
    QFETCH(QString, judge);
    QFETCH(QString, prompt);
    QFETCH(QString, response);
    QJsonObject v[2];
    const char* dtypes[2] = {"float32", "bfloat16"};
    for (int i = 0; i < 2; ++i) {
      v[i] = runJson({QStringLiteral("judge"), QStringLiteral("--judge"), judge, QStringLiteral("--prompt"), prompt,
                      QStringLiteral("--response"), response, QStringLiteral("--device"), QStringLiteral("cpu"),
                      QStringLiteral("--dtype"), QString::fromLatin1(dtypes[i])});
      QVERIFY(!v[i].isEmpty());
      QCOMPARE(v[i].value(QStringLiteral("dtype")).toString(), QString::fromLatin1(dtypes[i]));
      QCOMPARE(v[i].value(QStringLiteral("device")).toString(), QStringLiteral("cpu"));
    }
    const double p32 = v[0].value(QStringLiteral("p_unsafe")).toDouble(), p16 = v[1].value(QStringLiteral("p_unsafe")).toDouble();
    qInfo("P(unsafe) float32 %.6g, bfloat16 %.6g", p32, p16);
    QCOMPARE(v[1].value(QStringLiteral("unsafe")).toBool(), v[0].value(QStringLiteral("unsafe")).toBool());
    QVERIFY(std::abs(p16 - p32) <= 0.05);
    QVERIFY(p32 > 0 && p16 > 0 && std::abs(std::log(p16) - std::log(p32)) <= 0.1);
  }

  void scoreInBfloat16IsCloseToFloat32_data() {
    QTest::addColumn<QString>("model");
    QTest::newRow("gpt2_rm") << m_fixtures + QStringLiteral("gpt2_rm");
    QTest::newRow("llama_rm") << m_fixtures + QStringLiteral("llama_rm");
    QTest::newRow("demo reward") << m_demo + QStringLiteral("reward");
  }
  void scoreInBfloat16IsCloseToFloat32() {
    QFETCH(QString, model);
    double reward[2] = {0, 0};
    const char* dtypes[2] = {"float32", "bfloat16"};
    for (int i = 0; i < 2; ++i) {
      const QJsonObject o = runJson({QStringLiteral("score"), QStringLiteral("--reward-model"), model,
                                     QStringLiteral("--prompt"), m_bread, QStringLiteral("--response"), m_breadAnswer,
                                     QStringLiteral("--dtype"), QString::fromLatin1(dtypes[i])});
      QVERIFY(!o.isEmpty());
      QCOMPARE(o.value(QStringLiteral("dtype")).toString(), QString::fromLatin1(dtypes[i]));
      reward[i] = o.value(QStringLiteral("reward")).toDouble();
    }
    qInfo("reward float32 %.6f, bfloat16 %.6f", reward[0], reward[1]);
    QVERIFY(std::abs(reward[1] - reward[0]) <= 0.05 + 0.02 * std::abs(reward[0]));
  }

  void badDeviceOrDtypeIsAClearError() {
    const QStringList judge = {QStringLiteral("judge"), QStringLiteral("--judge"), m_fixtures + QStringLiteral("llama_guard"),
                               QStringLiteral("--prompt"), m_bread};
    const QStringList score = {QStringLiteral("score"), QStringLiteral("--reward-model"), m_fixtures + QStringLiteral("gpt2_rm"),
                               QStringLiteral("--prompt"), m_bread, QStringLiteral("--response"), m_breadAnswer};
    const QStringList eval = {QStringLiteral("eval"), QStringLiteral("--model"), m_demo + QStringLiteral("vlm"),
                              QStringLiteral("--set"), m_demo + QStringLiteral("sets/heldout.jsonl")};
    for (const QStringList& cmd : {judge, score, eval}) {
      QByteArray e = errorOf(cmd + QStringList{QStringLiteral("--device"), QStringLiteral("gpu")});
      QVERIFY2(e.contains("device") && e.contains(R"("auto", "cpu", "cuda" or "cuda:N")") && e.contains("\"gpu\""),
               e.constData());
      e = errorOf(cmd + QStringList{QStringLiteral("--dtype"), QStringLiteral("int8")});
      QVERIFY2(e.contains("dtype") && e.contains(R"("auto", "float32", "bfloat16" or "float16")") &&
                   e.contains("\"int8\""),
               e.constData());
      // float16 has no CPU matrix products in LibTorch: refused up front, not a kernel error later.
      e = errorOf(cmd + QStringList{QStringLiteral("--device"), QStringLiteral("cpu"), QStringLiteral("--dtype"),
                                    QStringLiteral("float16")});
      QVERIFY2(e.contains("float16") && e.contains("bfloat16"), e.constData());
      if (!torch::cuda::is_available()) {
        e = errorOf(cmd + QStringList{QStringLiteral("--device"), QStringLiteral("cuda")});
        QVERIFY2(e.contains("device \"cuda\"") && e.contains("CUDA") && e.contains("--device cpu"), e.constData());
      }
    }
  }

  void evalFollowsDeviceAndDtype() {
    const QJsonObject o = runJson({QStringLiteral("eval"), QStringLiteral("--model"), m_demo + QStringLiteral("vlm"),
                                   QStringLiteral("--set"), m_demo + QStringLiteral("sets/heldout.jsonl"),
                                   QStringLiteral("--layers"), QStringLiteral("8"), QStringLiteral("--max-prompts"),
                                   QStringLiteral("4"), QStringLiteral("--max-new-tokens"), QStringLiteral("8"),
                                   QStringLiteral("--device"), QStringLiteral("cpu"), QStringLiteral("--dtype"),
                                   QStringLiteral("bfloat16")});
    QVERIFY(!o.isEmpty());
    QCOMPARE(o.value(QStringLiteral("device")).toString(), QStringLiteral("cpu"));
    QCOMPARE(o.value(QStringLiteral("dtype")).toString(), QStringLiteral("bfloat16"));
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
