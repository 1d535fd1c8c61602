// Before and after side by side, on the tiny HF LLaVA fixture with a strong adapter written by
// the test: "compare with adapter" puts a NEW pane with the adapter next to the base pane at the
// same layer (its answer is the core engine's with that adapter, the base pane's the core's
// without it), tags it, and a pane's picker switches it; the sweep overlays base and adapter
// curves under their names and a click opens both answers; a session bundle restores every
// pane's adapter and replays the same tokens; "Run the demo story" (pointed at a tiny config)
// trains, then shows a harmful example at an early layer with base and adapter panes and the
// overlaid sweep, and its Stop cancels it.
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <QComboBox>
#include <QLabel>
#include <QPushButton>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTest>

#include <fstream>

#include "core/engine/session.h"
#include "core/generate/sampling.h"
#include "core/models/llava.h"
#include "core/models/lora.h"
#include "core/runtime/diagnostics.h"
#include "core/vision/image.h"
#include "support/adapter.h"
#include "support/rl_world.h"
#include "support/ui.h"
#include "ui/charts/line_chart.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"
#include "ui/message_bar.h"
#include "ui/training_dashboard.h"
#include "ui/training_job.h"

namespace fs = std::filesystem;
using icet::ui::ComparisonLab;
using icet::ui::ComparisonPane;

class TestBeforeAfter : public QObject {
  Q_OBJECT

 private:
  std::unique_ptr<icet::ui::MainWindow> m_window;
  ComparisonLab* m_lab = nullptr;
  QTemporaryDir m_tmp;
  QString m_adapter;

  static QString model() { return icet::test::hf_fixture("llava"); }
  static QString image() { return model() + QStringLiteral("/image.png"); }
  static QString prompt() { return QStringLiteral("What is in the picture?"); }

  static void writeAdapter(const fs::path& dir) { icet::test::write_random_adapter(model().toStdString(), dir); }

  // The core engine's tokens at `layer`, with `adapter` (empty: the base model).
  std::vector<int64_t> coreTokens(int layer, const QString& adapter) const {
    auto session = icet::engine::Session::open(model().toStdString());
    session->set_image(icet::vision::load_image(image().toStdString()));
    if (!adapter.isEmpty()) {
      session->load_adapter(adapter.toStdString());
    }
    return session->generate(m_lab->prompt().toStdString(), layer, m_lab->samplingParams()).token_ids;
  }

  bool settled(int timeoutMs = 60000) const {
    const bool ok = QTest::qWaitFor(
        [&] {
          if (m_lab->isBusy() || m_lab->service()->pending() != 0) {
            return false;
          }
          for (ComparisonPane* p : m_lab->panes()) {
            if (!p->answer() || p->answer()->adapter != p->adapter()) {
              return false;
            }
          }
          return true;
        },
        timeoutMs);
    if (!ok) {  // say what is missing
      qWarning("busy %d, pending %d", m_lab->isBusy(), m_lab->service()->pending());
      for (ComparisonPane* p : m_lab->panes()) {
        qWarning("pane ICET-%d adapter '%s': %s", p->layer(), qPrintable(p->adapter()),
                 p->answer() ? qPrintable(QStringLiteral("answer by '%1'").arg(p->answer()->adapter))
                             : qPrintable(QStringLiteral("no answer: ") + p->text()));
      }
    }
    return ok;
  }

  static QLabel* tag(ComparisonPane* p) { return p->findChild<QLabel*>(QStringLiteral("PaneAdapter")); }

  // Every pane's title and adapter tag are shown whole.
  bool nothingTruncated() const {
    for (ComparisonPane* p : m_lab->panes()) {
      for (const char* name : {"PaneTitle", "PaneAdapter"}) {
        auto* label = p->findChild<QLabel*>(QString::fromLatin1(name));
        // A wrapping label needs the height of its wrapped text, another one its full width.
        const bool cut = label->wordWrap() ? label->height() < label->heightForWidth(label->width())
                                           : label->width() < label->minimumSizeHint().width();
        if (label->isVisible() && cut) {
          qWarning("%s '%s' of a pane is cut: %dx%d px", name, qPrintable(label->text()), label->width(),
                   label->height());
          return false;
        }
      }
    }
    return true;
  }

  QStringList paneAdapters() const {
    QStringList out;
    for (ComparisonPane* p : m_lab->panes()) {
      out << p->adapter();
    }
    return out;
  }

 private Q_SLOTS:
  void initTestCase() {
    icet::test::init_ui_test("icet-studio-test-before-after");
    QVERIFY(m_tmp.isValid());
    m_adapter = m_tmp.filePath(QStringLiteral("lora-run/adapter"));
    writeAdapter(m_adapter.toStdString());
    m_window = std::make_unique<icet::ui::MainWindow>(icet::runtime::collect_runtime_info("test"));
    m_window->resize(1400, 900);
    m_window->show();
    QVERIFY(QTest::qWaitForWindowExposed(m_window.get()));
    m_lab = m_window->lab();
    m_lab->openModel(model());
    m_lab->openJudge(icet::test::hf_fixture("llama_guard"));
    m_lab->openReward(icet::test::hf_fixture("gpt2_rm"));
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->hasModel() && m_lab->service()->pending() == 0, 60000);
    QVERIFY(m_lab->openImageFile(image()));
    m_lab->setPrompt(prompt());
    auto params = m_lab->samplingParams();
    params.max_new_tokens = 8;  // the fixture reward model's context is 128 tokens
    m_lab->setSamplingParams(params);
    m_lab->runAll();
    QVERIFY(settled());
  }

  void cleanupTestCase() { m_window.reset(); }

  void adapterPaneSitsNextToTheBasePane() {
    QCOMPARE(m_lab->panes().size(), 2);
    const int layer = m_lab->panes()[1]->layer();
    QSignalSpy changed(m_lab, &ComparisonLab::adapterChanged);
    m_lab->compareWithAdapter(m_adapter);
    QVERIFY(changed.wait(30000));
    QCOMPARE(m_lab->adapterPath(), m_adapter);
    QVERIFY(settled());
    const auto panes = m_lab->panes();
    QCOMPARE(panes.size(), 3);
    QCOMPARE(paneAdapters(), (QStringList{QString(), QString(), m_adapter}));
    QCOMPARE(panes[2]->layer(), layer);
    // Each answer is the core engine's with its own model; the adapter changes it.
    const auto base = coreTokens(layer, QString());
    const auto aligned = coreTokens(layer, m_adapter);
    QVERIFY2(base != aligned, "a non-zero adapter must change the greedy answer");
    QCOMPARE(panes[1]->answer()->record.token_ids, base);
    QCOMPARE(panes[2]->answer()->record.token_ids, aligned);
    QCOMPARE(panes[2]->answer()->record.adapter, m_adapter.toStdString());  // replay info
    QVERIFY(panes[1]->answer()->record.adapter.empty());
    // The adapter pane says so; the base panes do not.
    QVERIFY(tag(panes[2])->isVisible());
    QCOMPARE(tag(panes[2])->text(), QStringLiteral("LoRA lora-run"));
    QVERIFY(!tag(panes[0])->isVisible() && !tag(panes[1])->isVisible());
    QVERIFY(nothingTruncated());

    // The pane's picker: base, then the adapter again.
    auto* picker = panes[2]->findChild<QComboBox*>(QStringLiteral("PaneAdapterPicker"));
    QCOMPARE(picker->currentText(), QStringLiteral("LoRA lora-run"));
    QVERIFY(picker->findData(m_adapter) > 0);
    picker->setCurrentIndex(0);
    Q_EMIT picker->activated(0);
    QCOMPARE(panes[2]->adapter(), QString());
    QVERIFY(settled());
    QCOMPARE(panes[2]->answer()->record.token_ids, base);
    QVERIFY(!tag(panes[2])->isVisible());
    const int index = picker->findData(m_adapter);
    picker->setCurrentIndex(index);
    Q_EMIT picker->activated(index);
    QVERIFY(settled());
    QCOMPARE(panes[2]->answer()->record.token_ids, aligned);
    QVERIFY(tag(panes[2])->isVisible());
  }

  void sweepOverlaysBaseAndAdapterCurves() {
    QSignalSpy swept(m_lab, &ComparisonLab::sweepFinished);
    m_lab->runSweep();
    QVERIFY(swept.wait(120000));
    QCOMPARE(m_lab->sweepAnswers().size(), 12);  // 6 layers, base and adapter
    const QStringList names = {QStringLiteral("P(unsafe) · base"), QStringLiteral("P(unsafe) · adapter: lora-run"),
                               QStringLiteral("reward · base"), QStringLiteral("reward · adapter: lora-run")};
    auto* chart = m_lab->sweepChart();
    for (const QString& name : names) {
      QVERIFY2(chart->seriesNames().contains(name), qPrintable(chart->seriesNames().join(QStringLiteral(", "))));
      QCOMPARE(chart->points(name).size(), 6);
    }
    // Each curve is its own model's: the core sweeps with and without the adapter.
    auto session = icet::engine::Session::open(model().toStdString());
    session->set_image(icet::vision::load_image(image().toStdString()));
    session->add_adapter(m_adapter.toStdString());
    const std::vector<int64_t> layers = {1, 2, 3, 4, 5, 6};
    const auto base = session->sweep(prompt().toStdString(), layers, m_lab->samplingParams(), {}, nullptr, fs::path());
    const auto aligned =
        session->sweep(prompt().toStdString(), layers, m_lab->samplingParams(), {}, nullptr, m_adapter.toStdString());
    bool differs = false;
    for (size_t i = 0; i < layers.size(); ++i) {
      const auto& a = m_lab->sweepAnswers()[static_cast<qsizetype>(i)];
      const auto& b = m_lab->sweepAnswers()[static_cast<qsizetype>(i + layers.size())];
      QVERIFY(a.adapter.isEmpty());
      QCOMPARE(b.adapter, m_adapter);
      QCOMPARE(a.record.token_ids, base[i].token_ids);
      QCOMPARE(b.record.token_ids, aligned[i].token_ids);
      differs = differs || a.safety.pUnsafe != b.safety.pUnsafe;
    }
    QVERIFY2(differs, "the adapter's P(unsafe) curve must not be the base curve");

    // A click at layer 2 opens both answers there, each in a pane with its own model.
    const int before = static_cast<int>(m_lab->panes().size());
    QTest::mouseClick(chart->plotViewport(), Qt::LeftButton, {},
                      chart->positionOf(chart->points(names[0])[1]));
    const auto panes = m_lab->panes();
    QCOMPARE(static_cast<int>(panes.size()), before + 2);
    QCOMPARE(panes[before]->layer(), 2);
    QCOMPARE(panes[before]->adapter(), QString());
    QCOMPARE(panes[before + 1]->layer(), 2);
    QCOMPARE(panes[before + 1]->adapter(), m_adapter);
    QCOMPARE(panes[before + 1]->text(), QString::fromStdString(aligned[1].text));
    m_lab->removePane(panes[before + 1]);
    m_lab->removePane(panes[before]);
    QTRY_COMPARE(static_cast<int>(m_lab->panes().size()), before);
  }

  void bundleRestoresEachPanesAdapter() {
    QVERIFY(settled());
    const QStringList adapters = paneAdapters();
    QCOMPARE(adapters, (QStringList{QString(), QString(), m_adapter}));
    QVector<std::vector<int64_t>> tokens;
    for (ComparisonPane* p : m_lab->panes()) {
      tokens.push_back(p->answer()->record.token_ids);
    }
    const QString bundle = m_tmp.filePath(QStringLiteral("bundle"));
    QVERIFY(m_lab->exportBundle(bundle));
    const auto json = icet::test::read_json(bundle.toStdString() + "/session.json");
    QCOMPARE(json["panes"][2]["adapter"].get<std::string>(), m_adapter.toStdString());
    QCOMPARE(json["panes"][2]["record"]["adapter"].get<std::string>(), m_adapter.toStdString());

    // Everything back to base (the adapter unloaded), then the bundle.
    QSignalSpy changed(m_lab, &ComparisonLab::adapterChanged);
    m_lab->loadAdapter(QString());
    QVERIFY(changed.wait(30000));
    QVERIFY(m_lab->adapters().isEmpty());
    QVERIFY(settled());
    QCOMPARE(paneAdapters(), (QStringList{QString(), QString(), QString()}));

    QVERIFY(m_lab->openBundle(bundle));
    QVERIFY(changed.wait(30000));
    QCOMPARE(m_lab->adapterPath(), m_adapter);
    QVERIFY(settled());
    QCOMPARE(paneAdapters(), adapters);
    for (qsizetype i = 0; i < tokens.size(); ++i) {
      QCOMPARE(m_lab->panes()[i]->answer()->record.token_ids, tokens[i]);
    }
    QVERIFY(tag(m_lab->panes()[2])->isVisible());
  }

  void storyTrainsThenShowsBeforeAndAfter() {
    // A tiny story config (the demo's is minutes of training): 2 steps on the fixture world.
    const fs::path world = m_tmp.filePath(QStringLiteral("world")).toStdString();
    auto cfg = icet::test::tiny_config(world);
    cfg.max_steps = 2;
    cfg.eval_every = 100;
    const QString config = m_tmp.filePath(QStringLiteral("story.json"));
    std::ofstream(config.toStdString()) << icet::rl::to_json(cfg).dump(2);
    QVERIFY(m_lab->loadGallery(QString::fromStdString(cfg.train_set.string())));
    auto* dash = m_window->dashboard();
    dash->setStoryConfig(config);
    dash->setRunDir(m_tmp.filePath(QStringLiteral("story-cancelled")));
    m_window->tabs()->setCurrentWidget(dash);
    auto* story = dash->findChild<QPushButton*>(QStringLiteral("RunStory"));
    QVERIFY(story != nullptr);

    // Stop cancels it: no lab change.
    QSignalSpy ready(dash, &icet::ui::TrainingDashboard::storyReady);
    story->click();
    QVERIFY2(dash->storyRunning(), qPrintable(m_window->messageBar()->text()));
    QCOMPARE(story->text(), QStringLiteral("Stop the story"));
    story->click();
    QTRY_VERIFY_WITH_TIMEOUT(!dash->storyRunning(), 60000);
    QCOMPARE(dash->currentJob()->state(), icet::ui::TrainingJob::State::Cancelled);
    QCOMPARE(ready.count(), 0);
    QCOMPARE(m_window->tabs()->currentWidget(), dash);

    // The whole story: training (shown in the job list), then the lab.
    QSignalSpy swept(m_lab, &ComparisonLab::sweepFinished);
    dash->setRunDir(m_tmp.filePath(QStringLiteral("story-run")));
    QVERIFY(dash->runStory());
    QCOMPARE(dash->jobTable()->rowCount(), 2);
    QVERIFY(ready.wait(180000));
    const QString adapter = dash->currentJob()->adapterDir();
    QVERIFY(!adapter.isEmpty());
    QCOMPARE(m_window->tabs()->currentWidget(), m_lab);
    QVERIFY(swept.wait(180000));
    QVERIFY(settled());
    // A harmful example; default pane, then base and adapter side by side at an early layer.
    QVERIFY(m_lab->prompt().startsWith(QStringLiteral("How do I do the bad thing")));
    const auto panes = m_lab->panes();
    QCOMPARE(panes.size(), 3);
    QCOMPARE(panes[0]->layer(), m_lab->service()->model()->defaultLayer);
    QCOMPARE(panes[1]->layer(), 2);  // 6 encoder layers: an early third
    QCOMPARE(panes[2]->layer(), 2);
    QCOMPARE(paneAdapters(), (QStringList{QString(), QString(), adapter}));
    QCOMPARE(panes[2]->answer()->adapter, adapter);
    QVERIFY(tag(panes[2])->isVisible());
    QVERIFY(nothingTruncated());
    const QString run = icet::ui::adapterName(adapter);
    QCOMPARE(run, QStringLiteral("story-run"));
    QVERIFY(m_lab->sweepChart()->seriesNames().contains(QStringLiteral("P(unsafe) · adapter: story-run")));
    QVERIFY(m_lab->sweepChart()->seriesNames().contains(QStringLiteral("P(unsafe) · base")));
    QVERIFY(icet::test::screenshot(m_window.get(), QStringLiteral("before_after_story")));
  }
};

QTEST_MAIN(TestBeforeAfter)
#include "test_before_after.moc"
