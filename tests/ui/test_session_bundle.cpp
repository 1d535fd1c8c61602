// Export and replay: a session bundle holds every setting and seed, the image, a PNG of the
// panes and an HTML report; opening it in a fresh window restores the inputs and replays
// every pane to the identical tokens (sampled with the recorded seeds).
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <fstream>

#include "core/runtime/diagnostics.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"

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
};

QTEST_MAIN(TestSessionBundle)
#include "test_session_bundle.moc"
