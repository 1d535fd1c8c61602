// The comparison lab on the HF reference fixtures (tiny LLaVA with 6 encoder layers, tiny
// Llama Guard judge, tiny GPT-2 reward model): panes stream and finish, the slider re-runs the
// exit pane at the new layer with the same tokens as the core engine, panes can be added and
// removed, presentation mode blurs unsafe answers until clicked, the logits policy setting
// reaches the panes.
#include <QAbstractScrollArea>
#include <QComboBox>
#include <QLabel>
#include <QPlainTextEdit>
#include <QSettings>
#include <QSignalSpy>
#include <QTextBrowser>
#include <QSlider>
#include <QTest>

#include "core/engine/session.h"
#include "core/runtime/diagnostics.h"
#include "core/vision/image.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"

using icet::ui::ComparisonLab;
using icet::ui::ComparisonPane;

class TestComparisonLab : public QObject {
  Q_OBJECT

 private:
  std::unique_ptr<icet::ui::MainWindow> m_window;
  ComparisonLab* m_lab = nullptr;

  static QString prompt() { return QStringLiteral("What is in this picture?"); }

 private Q_SLOTS:
  void initTestCase() {
    icet::test::init_ui_test("icet-studio-test-lab");
    m_window = std::make_unique<icet::ui::MainWindow>(icet::runtime::collect_runtime_info("test"));
    m_window->resize(1400, 860);
    m_window->show();
    QVERIFY(QTest::qWaitForWindowExposed(m_window.get()));
    m_lab = m_window->lab();
    QSignalSpy opened(m_lab->service(), &icet::ui::ModelService::modelOpened);
    m_lab->openModel(icet::test::hf_fixture("llava"));
    m_lab->openJudge(icet::test::hf_fixture("llama_guard"));
    m_lab->openReward(icet::test::hf_fixture("gpt2_rm"));
    QVERIFY(opened.wait(60000));
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->pending() == 0, 60000);
    QVERIFY(!m_lab->service()->judgeId().isEmpty());
    QVERIFY(!m_lab->service()->rewardId().isEmpty());
    // Short answers: the fixture reward model's context is 128 tokens.
    auto params = m_lab->samplingParams();
    params.max_new_tokens = 12;
    m_lab->setSamplingParams(params);
  }

  void cleanupTestCase() { m_window.reset(); }

  void sliderShowsLayersWithDefaultMarked() {
    QSlider* slider = m_lab->layerSlider();
    QCOMPARE(slider->minimum(), 1);
    QCOMPARE(slider->maximum(), 6);
    const auto info = *m_lab->service()->model();
    QCOMPARE(info.layers, 6);
    QCOMPARE(info.defaultLayer, 5);  // vision_feature_layer -2 of 6 layers
    QCOMPARE(m_lab->panes().size(), 2);
    QCOMPARE(m_lab->panes()[0]->layer(), 5);
    QVERIFY(m_lab->panes()[0]->isBaseline());
    QVERIFY(!slider->accessibleName().isEmpty());
  }

  void runsBothPanesThenFollowsTheSlider() {
    QVERIFY(m_lab->openImageFile(icet::test::hf_fixture("llava") + QStringLiteral("/image.png")));
    m_lab->setPrompt(prompt());
    m_lab->runAll();
    QVERIFY(m_lab->isBusy());
    QTRY_VERIFY_WITH_TIMEOUT(!m_lab->isBusy(), 60000);
    const auto panes = m_lab->panes();
    for (ComparisonPane* p : panes) {
      QVERIFY2(p->answer().has_value(),
               qPrintable(p->findChild<QTextBrowser*>()->toPlainText() + QStringLiteral(" | ") +
                          m_window->messageBar()->text()));
      QVERIFY(!p->text().isEmpty());
      QVERIFY(p->answer()->safety.judged);
      QVERIFY(p->answer()->safety.scored);
      QVERIFY(p->verdictText() == QStringLiteral("Safe") || p->verdictText() == QStringLiteral("Unsafe"));
    }

    // Keyboard control: End moves to layer 6; after the debounce the exit pane re-runs there.
    QSlider* slider = m_lab->layerSlider();
    QCOMPARE(panes[1]->answer()->record.layer, slider->value());
    QVERIFY(slider->value() != 6);
    slider->setFocus();
    QTest::keyClick(slider, Qt::Key_End);
    QCOMPARE(slider->value(), 6);
    QVERIFY(!panes[1]->isRunning());  // debounced: nothing yet
    QTRY_VERIFY_WITH_TIMEOUT(panes[1]->answer() && panes[1]->answer()->record.layer == 6, 60000);
    QTRY_VERIFY_WITH_TIMEOUT(!m_lab->isBusy(), 60000);
    QCOMPARE(panes[1]->layer(), 6);
    QCOMPARE(panes[1]->answer()->record.layer, 6);
    QCOMPARE(panes[0]->answer()->record.layer, 5);

    // Same tokens as the core engine at those layers (the UI adds nothing of its own).
    auto session = icet::engine::Session::open(icet::test::hf_fixture("llava").toStdString());
    session->set_image(icet::vision::load_image(
        (icet::test::hf_fixture("llava") + QStringLiteral("/image.png")).toStdString()));
    for (ComparisonPane* p : panes) {
      const auto ref = session->generate(prompt().toStdString(), p->layer(), m_lab->samplingParams());
      QCOMPARE(p->answer()->record.token_ids, ref.token_ids);
      QCOMPARE(p->text(), QString::fromStdString(ref.text));
    }
    QVERIFY(icet::test::screenshot(m_window.get(), QStringLiteral("comparison_after_slider")));
  }

  void quickSliderMovesRunOnceAtTheLastLayer() {
    QSignalSpy finished(m_lab->service(), &icet::ui::ModelService::generationFinished);
    QSlider* slider = m_lab->layerSlider();
    for (int l : {2, 3, 4, 2}) {
      slider->setValue(l);  // within the debounce interval: only the last one runs
    }
    QTRY_VERIFY_WITH_TIMEOUT(finished.count() >= 1, 60000);
    QTest::qWait(400);  // longer than the debounce: no second run comes
    QCOMPARE(finished.count(), 1);
    QCOMPARE(m_lab->panes()[1]->answer()->record.layer, 2);
  }

  void stopCancelsAndRegenerateRuns() {
    ComparisonPane* pane = m_lab->panes()[1];
    QSignalSpy finished(m_lab->service(), &icet::ui::ModelService::generationFinished);
    auto params = m_lab->samplingParams();
    params.max_new_tokens = 2000;
    params.stop_at_eos = false;
    pane->run(prompt(), params);
    QVERIFY(pane->isRunning());
    pane->stop();
    QVERIFY(!pane->isRunning());
    QVERIFY(finished.wait(30000));
    // The worker saw the flag: the request ended as cancelled long before 2000 tokens.
    QVERIFY(finished.at(0).at(1).value<icet::ui::Answer>().cancelled);
    QTRY_VERIFY_WITH_TIMEOUT(!m_lab->isBusy(), 30000);

    QSignalSpy done(pane, &ComparisonPane::finished);
    QMetaObject::invokeMethod(pane->findChild<QObject*>(QStringLiteral("PaneRegenerate")), "click");
    QVERIFY(done.wait(60000));
    QVERIFY(pane->answer().has_value());
  }

  void ctrlEnterRunsAndEscapeStops() {
    // The slider's arrow keys and End are covered above and in test_demo_comparison.
    auto* promptEdit = m_window->findChild<QPlainTextEdit*>(QStringLiteral("PromptEdit"));
    promptEdit->setFocus();
    QTRY_VERIFY(promptEdit->hasFocus());
    const QString typed = promptEdit->toPlainText();
    QSignalSpy finished(m_lab->service(), &icet::ui::ModelService::generationFinished);
    QVERIFY(!m_lab->isBusy());
    QTest::keyClick(promptEdit, Qt::Key_Return, Qt::ControlModifier);
    QVERIFY(m_lab->isBusy());  // every pane started
    for (ComparisonPane* p : m_lab->panes()) {
      QVERIFY(p->isRunning());
    }
    QCOMPARE(promptEdit->toPlainText(), typed);  // no newline typed into the prompt
    QTest::keyClick(promptEdit, Qt::Key_Escape);
    QVERIFY(!m_lab->isBusy());
    // The worker saw the flags: every request ends cancelled, no pane shows an answer.
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), static_cast<int>(m_lab->panes().size()), 30000);
    for (const auto& args : finished) {
      QVERIFY(args.at(1).value<icet::ui::Answer>().cancelled);
    }
    for (ComparisonPane* p : m_lab->panes()) {
      QVERIFY(!p->answer().has_value());
    }

    // The keypad's Enter and a focused slider work the same.
    m_lab->layerSlider()->setFocus();
    QTest::keyClick(m_lab->layerSlider(), Qt::Key_Enter, Qt::ControlModifier | Qt::KeypadModifier);
    QVERIFY(m_lab->isBusy());
    QTRY_VERIFY_WITH_TIMEOUT(!m_lab->isBusy(), 60000);
    for (ComparisonPane* p : m_lab->panes()) {
      QVERIFY(p->answer().has_value());
    }
  }

  void addsAndRemovesPanes() {
    ComparisonPane* extra = m_lab->addPane(3);
    QCOMPARE(m_lab->panes().size(), 3);
    QCOMPARE(extra->layer(), 3);
    m_lab->removePane(extra);
    QCOMPARE(m_lab->panes().size(), 2);
    m_lab->removePane(m_lab->panes()[0]);  // the default pane stays
    QCOMPARE(m_lab->panes().size(), 2);
  }

  void presentationModeBlursUnsafeAnswersUntilClicked() {
    ComparisonPane* pane = m_lab->addPane(2);
    icet::ui::Answer a;
    a.record.layer = 2;
    a.record.text = "[unsafe step] placeholder";
    a.safety.judged = true;
    a.safety.unsafe = true;
    a.safety.pUnsafe = 0.93;
    a.safety.categories = {QStringLiteral("S1")};
    pane->showAnswer(a);
    QCOMPARE(pane->verdictText(), QStringLiteral("Unsafe"));
    QVERIFY(!pane->isBlurred());
    m_lab->setPresentationMode(true);
    QVERIFY(pane->isBlurred());
    auto* badge = pane->findChild<QLabel*>(QStringLiteral("VerdictBadge"));
    QVERIFY(badge->text().contains(QStringLiteral("Unsafe")));  // a word, not colour alone
    QVERIFY(badge->toolTip().contains(QStringLiteral("0.930")));
    QVERIFY(badge->toolTip().contains(QStringLiteral("S1")));
    auto* view = pane->findChild<QWidget*>(QStringLiteral("PaneText"));
    QTest::mouseClick(static_cast<QAbstractScrollArea*>(view)->viewport(), Qt::LeftButton);
    QVERIFY(!pane->isBlurred());
    m_lab->setPresentationMode(false);
    m_lab->removePane(pane);
  }

  // The logits policy is an app setting (QSettings "sampling/logitsPolicy"): kept across
  // starts, used by every pane, and set from a session bundle's sampling parameters.
  void logitsPolicySettingReachesPanes() {
    using icet::generate::LogitsPolicy;
    auto* combo = m_lab->findChild<QComboBox*>(QStringLiteral("LogitsPolicyCombo"));
    QVERIFY(combo != nullptr);
    QCOMPARE(combo->currentData().toString(), QStringLiteral("clean"));  // the default
    QVERIFY(m_lab->samplingParams().logits_policy == LogitsPolicy::clean);
    combo->setCurrentIndex(combo->findData(QStringLiteral("hf")));
    QCOMPARE(QSettings().value(QStringLiteral("sampling/logitsPolicy")).toString(), QStringLiteral("hf"));
    QVERIFY(m_lab->samplingParams().logits_policy == LogitsPolicy::hf);
    {
      ComparisonLab next;  // a later start reads the setting
      QVERIFY(next.samplingParams().logits_policy == LogitsPolicy::hf);
    }
    m_lab->runAll();
    QTRY_VERIFY_WITH_TIMEOUT(!m_lab->isBusy(), 60000);
    for (ComparisonPane* p : m_lab->panes()) {
      QVERIFY(p->answer().has_value());
      QVERIFY(p->answer()->record.params.logits_policy == LogitsPolicy::hf);
    }
    auto params = m_lab->samplingParams();
    params.logits_policy = LogitsPolicy::clean;
    m_lab->setSamplingParams(params);  // as opening a bundle does
    QCOMPARE(combo->currentData().toString(), QStringLiteral("clean"));
    QCOMPARE(QSettings().value(QStringLiteral("sampling/logitsPolicy")).toString(), QStringLiteral("clean"));
  }
};

QTEST_MAIN(TestComparisonLab)
#include "test_comparison_lab.moc"
