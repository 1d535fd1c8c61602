#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>

#include "support/cli.h"

// `icet generate` and `icet sweep` on the llava_next and mllama fixtures, as a user runs them:
// --prompt is the user's message; the chat template detected from the snapshot wraps it.
class TestCliVlmFamilies : public QObject {
  Q_OBJECT

 private:
  using Run = icet::test::CliRun;
  QTemporaryDir m_home;

  Run runCli(QStringList args) {
    args.prepend(QStringLiteral("--no-log-file"));
    return icet::test::run_cli(args, m_home.path());
  }

  static QList<qint64> ids(const QJsonValue& v) {
    QList<qint64> out;
    for (const auto& x : v.toArray()) out << x.toInteger();
    return out;
  }

  static QString model(const QString& family) { return QStringLiteral(ICET_FIXTURES "/hf-reference/") + family; }

 private Q_SLOTS:
  void generateJson_data() {
    QTest::addColumn<QString>("family");
    QTest::addColumn<int>("defaultLayer");
    QTest::addColumn<QList<qint64>>("expected");
    // Hugging Face's greedy continuations at the default layer (refs.json).
    QTest::newRow("llava_next") << QStringLiteral("llava_next") << 5 << QList<qint64>{74, 98, 22, 382, 164, 51, 150, 74};
    QTest::newRow("mllama") << QStringLiteral("mllama") << 6 << QList<qint64>{120, 281, 80, 284, 54, 284, 54, 54};
  }

  void generateJson() {
    QFETCH(QString, family);
    QFETCH(int, defaultLayer);
    QFETCH(QList<qint64>, expected);
    const Run r = runCli({QStringLiteral("generate"), QStringLiteral("--model"), model(family), QStringLiteral("--image"),
                          model(family) + QStringLiteral("/image.png"), QStringLiteral("--prompt"),
                          QStringLiteral("What is in the picture?"), QStringLiteral("--max-new-tokens"),
                          QStringLiteral("8"), QStringLiteral("--json")});
    QVERIFY2(r.code == 0, r.err.constData());
    const QJsonObject o = QJsonDocument::fromJson(r.out).object();
    QCOMPARE(o.value(QStringLiteral("layer")).toInt(), defaultLayer);
    QCOMPARE(ids(o.value(QStringLiteral("token_ids"))), expected);
  }

  void sweepJson_data() {
    QTest::addColumn<QString>("family");
    QTest::addColumn<QList<qint64>>("layer3");
    QTest::newRow("llava_next") << QStringLiteral("llava_next") << QList<qint64>{136, 111, 134, 267, 236, 302, 4, 241};
    QTest::newRow("mllama") << QStringLiteral("mllama") << QList<qint64>{80, 171, 259, 256, 161, 81, 81, 81};
  }

  void sweepJson() {
    QFETCH(QString, family);
    QFETCH(QList<qint64>, layer3);
    const Run r = runCli({QStringLiteral("sweep"), QStringLiteral("--model"), model(family), QStringLiteral("--image"),
                          model(family) + QStringLiteral("/image.png"), QStringLiteral("--prompt"),
                          QStringLiteral("What is in the picture?"), QStringLiteral("--layers"), QStringLiteral("1-6"),
                          QStringLiteral("--max-new-tokens"), QStringLiteral("8"), QStringLiteral("--json")});
    QVERIFY2(r.code == 0, r.err.constData());
    const QJsonObject o = QJsonDocument::fromJson(r.out).object();
    QCOMPARE(o.value(QStringLiteral("model")).toObject().value(QStringLiteral("family")).toString(), family);
    const QJsonArray results = o.value(QStringLiteral("results")).toArray();
    QCOMPARE(results.size(), 6);
    QCOMPARE(results.at(2).toObject().value(QStringLiteral("layer")).toInt(), 3);
    QCOMPARE(ids(results.at(2).toObject().value(QStringLiteral("token_ids"))), layer3);
  }

  void sweepTextLabelsTheMllamaExitPolicy() {
    const Run r = runCli({QStringLiteral("sweep"), QStringLiteral("--model"), model(QStringLiteral("mllama")),
                          QStringLiteral("--image"), model(QStringLiteral("mllama")) + QStringLiteral("/image.png"),
                          QStringLiteral("--prompt"), QStringLiteral("What is in the picture?"), QStringLiteral("--layers"),
                          QStringLiteral("2,6"), QStringLiteral("--max-new-tokens"), QStringLiteral("2")});
    QVERIFY2(r.code == 0, r.err.constData());
    QVERIFY2(r.out.startsWith("note: assumption:"), r.out.constData());
    QVERIFY(r.out.contains("ICET-2: "));
    QVERIFY(r.out.contains("ICET-6 (default): "));
  }

  void promptFormatOptionIsChecked() {
    const Run r = runCli({QStringLiteral("generate"), QStringLiteral("--model"), model(QStringLiteral("mllama")),
                          QStringLiteral("--image"), model(QStringLiteral("mllama")) + QStringLiteral("/image.png"),
                          QStringLiteral("--prompt"), QStringLiteral("Hi"), QStringLiteral("--prompt-format"),
                          QStringLiteral("mistral")});
    QVERIFY(r.code != 0);
    QVERIFY2(r.err.contains("prompt format"), r.err.constData());
  }
};

QTEST_GUILESS_MAIN(TestCliVlmFamilies)
#include "test_cli_vlm_families.moc"
