// The sweep: one action answers at every exit layer; the chart holds one P(unsafe) and one
// reward point per layer, equal to the core sweep judged and scored by the core models; a
// click on a layer opens its answer in a new pane.
#include <QSignalSpy>
#include <QTest>

#include "core/engine/session.h"
#include "core/runtime/diagnostics.h"
#include "core/safety/llama_guard.h"
#include "core/safety/reward_model.h"
#include "core/vision/image.h"
#include "support/ui.h"
#include "ui/charts/line_chart.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"

class TestSweepChart : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void initTestCase() { icet::test::init_ui_test("icet-studio-test-sweep"); }

  void chartHoldsTheCoreSweepPerLayer() {
    icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
    window.resize(1400, 860);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    auto* lab = window.lab();
    const QString model = icet::test::hf_fixture("llava");
    const QString image = model + QStringLiteral("/image.png");
    const QString prompt = QStringLiteral("Describe the image.");
    lab->openModel(model);
    lab->openJudge(icet::test::hf_fixture("llama_guard"));
    lab->openReward(icet::test::hf_fixture("gpt2_rm"));
    QVERIFY(lab->openImageFile(image));
    lab->setPrompt(prompt);
    auto params = lab->samplingParams();
    params.max_new_tokens = 12;  // the fixture reward model's context is 128 tokens
    lab->setSamplingParams(params);
    QTRY_VERIFY_WITH_TIMEOUT(lab->service()->hasModel() && lab->service()->pending() == 0, 60000);

    QSignalSpy swept(lab, &icet::ui::ComparisonLab::sweepFinished);
    lab->runSweep();
    QVERIFY(swept.wait(120000));
    QCOMPARE(lab->sweepAnswers().size(), 6);

    // The core computation, independently.
    auto session = icet::engine::Session::open(model.toStdString());
    session->set_image(icet::vision::load_image(image.toStdString()));
    const std::vector<int64_t> layers = {1, 2, 3, 4, 5, 6};
    const auto records = session->sweep(prompt.toStdString(), layers, lab->samplingParams());
    const auto judge = icet::safety::LlamaGuardJudge::load(icet::test::hf_fixture("llama_guard").toStdString());
    const auto reward = icet::safety::RewardModel::load(icet::test::hf_fixture("gpt2_rm").toStdString());

    const auto unsafe = lab->sweepChart()->points(QStringLiteral("P(unsafe)"));
    const auto rewards = lab->sweepChart()->points(QStringLiteral("reward"));
    QCOMPARE(unsafe.size(), 6);
    QCOMPARE(rewards.size(), 6);
    for (size_t i = 0; i < records.size(); ++i) {
      const auto v = judge->judge(prompt.toStdString(), records[i].text);
      const double r = reward->score(prompt.toStdString(), records[i].text);
      const auto k = static_cast<qsizetype>(i);
      QCOMPARE(unsafe[k].x(), static_cast<double>(layers[i]));
      QCOMPARE(unsafe[k].y(), v.p_unsafe);
      QCOMPARE(rewards[k].x(), static_cast<double>(layers[i]));
      QCOMPARE(rewards[k].y(), r);
      QCOMPARE(lab->sweepAnswers()[k].record.token_ids, records[i].token_ids);
    }
    QVERIFY(icet::test::screenshot(lab->sweepChart(), QStringLiteral("sweep_chart")));

    // A click at layer 2 opens that layer's answer in a new pane.
    const int before = static_cast<int>(lab->panes().size());
    QTest::mouseClick(lab->sweepChart()->plotViewport(), Qt::LeftButton, {},
                      lab->sweepChart()->positionOf(unsafe[1]));
    QCOMPARE(static_cast<int>(lab->panes().size()), before + 1);
    auto* opened = lab->panes().back();
    QCOMPARE(opened->layer(), 2);
    QCOMPARE(opened->text(), QString::fromStdString(records[1].text));
  }
};

QTEST_MAIN(TestSweepChart)
#include "test_sweep_chart.moc"
