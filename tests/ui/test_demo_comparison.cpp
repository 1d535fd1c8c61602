// Issue 7, point 1, on the committed demo world: a demo image with a harmful demo prompt is
// answered safely at the default layer and unsafely at an early exit layer (slider moved with
// the keyboard), with different answers. Skips when this checkout has no demo world yet.
#include <QSlider>
#include <QTest>

#include <nlohmann/json.hpp>

#include <fstream>

#include "core/runtime/diagnostics.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"

class TestDemoComparison : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void initTestCase() { icet::test::init_ui_test("icet-studio-test-demo"); }

  void harmfulPromptIsSafeAtDefaultAndUnsafeEarly() {
    const QString demo = icet::test::demo_dir();
    if (demo.isEmpty() || !QFileInfo(demo + QStringLiteral("/guard/config.json")).isFile()) {
      QSKIP("no demo world (models/demo/vlm + guard) in this checkout");
    }
    qputenv("ICET_DEMO_DIR", demo.toLocal8Bit());
    // The first harmful example of the held-out set.
    const QString setFile = demo + QStringLiteral("/sets/heldout.jsonl");
    std::ifstream in(setFile.toStdString());
    QVERIFY(in.good());
    QString image;
    QString prompt;
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) {
        continue;
      }
      const auto j = nlohmann::json::parse(line);
      if (j.value("harmful", false)) {
        image = QFileInfo(setFile).absolutePath() + QLatin1Char('/') +
                QString::fromStdString(j.at("image").get<std::string>());
        prompt = QString::fromStdString(j.at("prompt").get<std::string>());
        break;
      }
    }
    QVERIFY(!prompt.isEmpty());

    icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
    window.resize(1400, 860);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    window.openDefaults();  // demo VLM, demo guard, demo reward, demo gallery
    auto* lab = window.lab();
    QTRY_VERIFY_WITH_TIMEOUT(lab->service()->hasModel() && lab->service()->pending() == 0, 120000);
    QVERIFY(!lab->service()->judgeId().isEmpty());
    QVERIFY(lab->galleryCount() > 0);
    QVERIFY(icet::test::screenshot(&window, QStringLiteral("main_window_demo")));

    QVERIFY(lab->openImageFile(image));
    lab->setPrompt(prompt);
    lab->runAll();
    QTRY_VERIFY_WITH_TIMEOUT(!lab->isBusy(), 120000);
    auto* base = lab->panes()[0];
    auto* exit = lab->panes()[1];
    QCOMPARE(base->layer(), lab->service()->model()->defaultLayer);
    QCOMPARE(base->verdictText(), QStringLiteral("Safe"));

    QSlider* slider = lab->layerSlider();
    slider->setFocus();
    QTest::keyClick(slider, Qt::Key_Home);  // layer 1
    for (int i = 0; i < 2; ++i) {
      QTest::keyClick(slider, Qt::Key_Right);  // layer 3: Early band
    }
    QCOMPARE(slider->value(), 3);
    QTRY_VERIFY_WITH_TIMEOUT(exit->answer() && exit->answer()->record.layer == 3, 120000);
    QTRY_VERIFY_WITH_TIMEOUT(!lab->isBusy(), 120000);
    QCOMPARE(exit->answer()->record.layer, 3);
    QCOMPARE(exit->verdictText(), QStringLiteral("Unsafe"));
    QVERIFY(exit->text() != base->text());
    QVERIFY(icet::test::screenshot(&window, QStringLiteral("demo_two_pane_comparison")));
  }
};

QTEST_MAIN(TestDemoComparison)
#include "test_demo_comparison.moc"
