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

  // `icet bench sweep` at LLaVA-1.5's 576 image tokens (tiny widths, 2 text layers): the
  // batched sweep (causal tiles, row groups) gives every layer's tokens as the one-by-one
  // generations, and the compute bound it reports is the stated product.
  void benchSweepAtImageLengthStatesItsBound() {
    const Run r = runCli({QStringLiteral("--threads"), QStringLiteral("2"), QStringLiteral("bench"),
                          QStringLiteral("sweep"), QStringLiteral("--json"), QStringLiteral("--repeats"),
                          QStringLiteral("1"), QStringLiteral("--max-new-tokens"), QStringLiteral("2"),
                          QStringLiteral("--text-layers"), QStringLiteral("2"), QStringLiteral("--image-tokens"),
                          QStringLiteral("576"), QStringLiteral("--patch-size"), QStringLiteral("14")});
    QVERIFY2(r.code == 0, r.err.constData());
    const QJsonObject o = QJsonDocument::fromJson(r.out).object();
    QCOMPARE(o.value(QStringLiteral("image_tokens")).toInt(), 576);
    QVERIFY(o.value(QStringLiteral("prompt_tokens")).toInt() > 576);
    QCOMPARE(o.value(QStringLiteral("layers")).toInt(), 24);
    QVERIFY2(o.value(QStringLiteral("identical_tokens")).toBool(), r.out.constData());
    const auto num = [&](const char* key) {
      const QJsonValue v = o.value(QLatin1String(key));
      if (!v.isDouble() || v.toDouble() <= 0.0) qWarning("%s: %s", key, r.out.constData());
      return v.toDouble();
    };
    // Every row's prefill FLOPs at the measured matmul rate, and the prefill against it.
    const double bound = num("prefill_bound_s");
    QVERIFY(qAbs(bound - 24 * num("prefill_gflop_per_row") / num("matmul_gflops")) < 1e-9 * bound);
    QVERIFY(qAbs(num("batched_prefill_vs_bound") - num("batched_prefill_s") / bound) < 1e-9);
    QVERIFY(num("prefill_bound_sustained_s") > 0.0);
    QVERIFY(num("prefill_dense_products_s") > 0.0);
    QVERIFY(num("sequential_prefill_s") > 0.0);
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
