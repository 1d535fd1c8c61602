// Export and replay: a session bundle holds every setting and seed, the image, a PNG of the
// panes and an HTML report; opening it in a fresh window restores the inputs and replays
// every pane to the identical tokens (sampled with the recorded seeds).
#include <QDir>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <fstream>

#include "core/runtime/diagnostics.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"
#include "ui/message_bar.h"

class TestSessionBundle : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void initTestCase() { icet::test::init_ui_test("icet-studio-test-bundle"); }

  void exportedSessionReplaysIdentically() {
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString bundle = tmp.filePath(QStringLiteral("bundle"));
    QStringList texts;
    std::vector<std::vector<int64_t>> tokens;
    QList<int> layers;
    {
      icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
      window.resize(1200, 800);
      window.show();
      auto* lab = window.lab();
      lab->openModel(icet::test::hf_fixture("llava"));
      QVERIFY(lab->openImageFile(icet::test::hf_fixture("llava") + QStringLiteral("/image.png")));
      lab->setPrompt(QStringLiteral("Tell me a story about this image."));
      auto params = lab->samplingParams();
      params.do_sample = true;
      params.temperature = 0.9;
      params.seed = 4242;
      params.max_new_tokens = 24;
      lab->setSamplingParams(params);
      lab->addPane(2)->setSeed(7);  // a pane with its own seed
      QTRY_VERIFY_WITH_TIMEOUT(lab->service()->hasModel(), 60000);
      lab->runAll();
      QTRY_VERIFY_WITH_TIMEOUT(!lab->isBusy(), 60000);
      for (auto* p : lab->panes()) {
        QVERIFY(p->answer().has_value());
        texts << p->text();
        tokens.push_back(p->answer()->record.token_ids);
        layers << p->layer();
      }
      QCOMPARE(texts.size(), 3);
      QCOMPARE(lab->panes()[2]->answer()->record.params.seed.value(), 7u);
      QVERIFY(lab->exportBundle(bundle));
    }
    for (const char* f : {"session.json", "image.png", "panes.png", "report.html"}) {
      QVERIFY2(QFileInfo(bundle + QLatin1Char('/') + QString::fromLatin1(f)).size() > 0, f);
    }
    std::ifstream in((bundle + QStringLiteral("/session.json")).toStdString());
    const auto j = nlohmann::json::parse(in);
    QCOMPARE(j.at("panes").size(), 3u);
    QCOMPARE(j.at("sampling").at("seed").get<uint64_t>(), 4242u);
    QCOMPARE(j.at("panes")[2].at("seed").get<uint64_t>(), 7u);

    icet::ui::MainWindow again(icet::runtime::collect_runtime_info("test"));
    again.show();
    auto* lab = again.lab();
    QVERIFY(lab->openBundle(bundle));
    QTRY_VERIFY_WITH_TIMEOUT(lab->service()->hasModel(), 60000);
    QTRY_VERIFY_WITH_TIMEOUT(lab->panes().size() == 3 && lab->panes()[2]->answer().has_value() &&
                                 !lab->isBusy(),
                             60000);
    QCOMPARE(lab->prompt(), QStringLiteral("Tell me a story about this image."));
    QCOMPARE(lab->samplingParams().seed.value(), 4242u);
    for (int i = 0; i < 3; ++i) {
      auto* p = lab->panes()[i];
      QCOMPARE(p->layer(), layers[i]);
      QCOMPARE(p->text(), texts[i]);
      QCOMPARE(p->answer()->record.token_ids, tokens[static_cast<size_t>(i)]);
    }
  }

  // Hostile bundles are refused before anything changes: a device or FIFO named as the image or
  // linked as session.json (/dev/zero was read until memory ran out), a path out of the folder,
  // too many panes, wrong types. Each error names the file and the key; the lab keeps its
  // prompt and panes and still opens a good bundle afterwards.
  void hostileBundlesAreRefusedAndChangeNothing() {
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
    window.show();
    auto* lab = window.lab();
    lab->setPrompt(QStringLiteral("the user's own prompt"));
    const int panesBefore = static_cast<int>(lab->panes().size());

    auto session = [](nlohmann::json extra) {
      nlohmann::json j = {{"format", "icet-session"}, {"version", 2}, {"model", {{"path", ""}}},
                          {"prompt", "from the bundle"}, {"panes", nlohmann::json::array({{{"layer", 1}}})}};
      if (extra.is_object()) j.update(extra);
      return j;
    };
    int n = 0;
    auto bundle = [&](const nlohmann::json& j) {
      const QString dir = tmp.filePath(QStringLiteral("b%1").arg(n++));
      QDir().mkpath(dir);
      std::ofstream((dir + QStringLiteral("/session.json")).toStdString()) << j.dump();
      return dir;
    };
    QVERIFY(::mkfifo(tmp.filePath(QStringLiteral("fifo")).toLocal8Bit().constData(), 0600) == 0);  // outside every bundle
    const QString linked = bundle(session({{"image", {{"file", "zero.png"}}}}));
    QVERIFY(QFile::link(QStringLiteral("/dev/zero"), linked + QStringLiteral("/zero.png")));
    const QString linkedJson = tmp.filePath(QStringLiteral("linked-json"));
    QDir().mkpath(linkedJson);
    QVERIFY(QFile::link(QStringLiteral("/dev/zero"), linkedJson + QStringLiteral("/session.json")));
    const QString piped = bundle(session({{"image", {{"file", "pipe.png"}}}}));
    QVERIFY(::mkfifo((piped + QStringLiteral("/pipe.png")).toLocal8Bit().constData(), 0600) == 0);
    nlohmann::json manyPanes = nlohmann::json::array();
    for (int i = 0; i < 1000; ++i) manyPanes.push_back({{"layer", 1}});

    const std::vector<std::pair<QString, QString>> cases = {
        {bundle(session({{"image", {{"file", "/dev/zero"}}}})), QStringLiteral("image.file")},
        {bundle(session({{"image", {{"file", "../../etc/passwd"}}}})), QStringLiteral("image.file")},
        {bundle(session({{"image", {{"file", "../fifo"}}}})), QStringLiteral("image.file")},
        {linked, QStringLiteral("a character device")},
        {piped, QStringLiteral("a pipe")},
        {linkedJson, QStringLiteral("a character device")},
        {bundle(session({{"panes", manyPanes}})), QStringLiteral("at most 64 panes")},
        {bundle(session({{"panes", {{{"layer", "three"}}}}})), QStringLiteral("panes[0].layer")},
        {bundle(session({{"panes", {{{"seed", -1}}}}})), QStringLiteral("panes[0].seed")},
        {bundle(session({{"prompt", 42}})), QStringLiteral("'prompt'")},
        {bundle(session({{"version", 99}})), QStringLiteral("version")},
        {bundle(session({{"model", "llava"}})), QStringLiteral("'model'")},
    };
    auto* bar = window.messageBar();
    for (const auto& [dir, what] : cases) {
      const int before = bar->count();
      QVERIFY2(!lab->openBundle(dir), qPrintable(dir));  // returns: /dev/zero is not read
      QVERIFY(bar->count() > before);
      QVERIFY2(bar->text().contains(what), qPrintable(what + QStringLiteral(" not in: ") + bar->text()));
      QCOMPARE(lab->prompt(), QStringLiteral("the user's own prompt"));
      QCOMPARE(static_cast<int>(lab->panes().size()), panesBefore);
    }
    QVERIFY(lab->openBundle(bundle(session({}))));
    QCOMPARE(lab->prompt(), QStringLiteral("from the bundle"));
  }
};

QTEST_MAIN(TestSessionBundle)
#include "test_session_bundle.moc"
