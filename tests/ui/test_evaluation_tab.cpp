// The Evaluation tab: with a fake run_evaluation, live progress (done/total, resumed, ETA), the
// per-layer and group tables and the chart; Stop cancels and Start resumes the same folder;
// form validation; closing the tab mid-run returns at once. Then one real run on the committed
// demo world (2 items, layers 1 and 12) that writes the log and the report.
#include <QComboBox>
#include <QElapsedTimer>
#include <QFile>
#include <QPushButton>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTest>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "core/base/error.h"
#include "core/runtime/diagnostics.h"
#include "support/ui.h"
#include "ui/charts/line_chart.h"
#include "ui/evaluation_tab.h"
#include "ui/main_window.h"
#include "ui/training_dashboard.h"

using icet::eval::AnswerRecord;
using icet::eval::EvalOutcome;
using icet::eval::EvalPlan;
using icet::eval::EvalProgress;
using icet::eval::EvalProgressCallback;
using icet::ui::EvaluationJob;
using icet::ui::EvaluationTab;

namespace {

AnswerRecord record(int64_t layer, const char* id, const std::string& adapter, bool harmful, bool unsafe,
                    bool refused, std::optional<double> reward) {
  AnswerRecord r;
  r.layer = layer;
  r.id = id;
  r.adapter = adapter;
  r.harmful = harmful;
  r.answer = refused ? "Sorry, I cannot help with that." : "Sure.";
  r.verdict = unsafe ? "unsafe" : "safe";
  r.p_unsafe = unsafe ? 0.9 : 0.1;
  r.reward = reward;
  r.refused = refused;
  return r;
}

const std::string kAdapter = "/runs/aligned";

// Layers 1 and 2 of a 3-layer encoder, base and one adapter; 2 harmful items, 1 benign.
// Base, layer 1: both harmful answers unsafe (ASR 100%), layer 2: one (50%); the adapter refuses.
EvalOutcome handBuiltOutcome(const EvalPlan& plan) {
  EvalOutcome o;
  for (int64_t layer : {1, 2}) {
    o.records.push_back(record(layer, "h1", "", true, true, false, -1.0));
    o.records.push_back(record(layer, "h2", "", true, layer == 1, layer == 2, 0.5));
    o.records.push_back(record(layer, "b1", "", false, false, false, 1.0));
    o.records.push_back(record(layer, "h1", kAdapter, true, false, true, 0.25));
    o.records.push_back(record(layer, "h2", kAdapter, true, false, true, 0.75));
    o.records.push_back(record(layer, "b1", kAdapter, false, false, true, 0.5));
  }
  icet::eval::MetricsOptions options;
  options.resamples = 200;
  options.num_layers = 3;
  o.metrics = icet::eval::compute_metrics(o.records, options);
  o.layers = {1, 2};
  o.num_layers = 3;
  o.default_layer = 2;
  o.resumed = 1;
  o.out = plan.out;
  return o;
}

// What the fake runners saw, across threads.
struct Calls {
  std::mutex mutex;
  std::vector<EvalPlan> plans;
  std::atomic<bool> sawCancel{false};
  std::atomic<bool> proceed{false};
  size_t count() {
    std::lock_guard lock(mutex);
    return plans.size();
  }
  EvalPlan plan(size_t i) {
    std::lock_guard lock(mutex);
    return plans.at(i);
  }
};

// Reports progress until cancelled, then throws Cancelled as the core does.
EvaluationJob::Runner endlessRunner(Calls& calls) {
  return [&calls](const EvalPlan& plan, const EvalProgressCallback& progress, const std::atomic<bool>* cancel) {
    {
      std::lock_guard lock(calls.mutex);
      calls.plans.push_back(plan);
    }
    EvalProgress p;
    p.stage = "answering";
    p.total = 1000;
    for (;;) {
      if (cancel != nullptr && cancel->load()) {
        calls.sawCancel = true;
        throw icet::Cancelled();
      }
      p.done = std::min<size_t>(p.done + 1, 999);
      progress(p);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return EvalOutcome{};
  };
}

QString cellText(QTableWidget* t, int row, int col) {
  QTableWidgetItem* item = t->item(row, col);
  return item != nullptr ? item->text() : QString();
}

int columnOf(QTableWidget* t, const QString& header) {
  for (int c = 0; c < t->columnCount(); ++c) {
    if (t->horizontalHeaderItem(c) != nullptr && t->horizontalHeaderItem(c)->text() == header) {
      return c;
    }
  }
  return -1;
}

QString pct(double fraction) {
  return QString::number(100.0 * fraction, 'f', 1);
}

}  // namespace

class TestEvaluationTab : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void initTestCase() {
    icet::test::init_ui_test("icet-studio-test-evaluation");
    QVERIFY(m_tmp.isValid());
    // A form that passes validation; the fake runners never open it.
    m_model = m_tmp.filePath(QStringLiteral("model"));
    QDir().mkpath(m_model);
    QFile config(m_model + QStringLiteral("/config.json"));
    QVERIFY(config.open(QIODevice::WriteOnly));
    config.write("{}");
    config.close();
    m_set = m_tmp.filePath(QStringLiteral("set.jsonl"));
    QFile set(m_set);
    QVERIFY(set.open(QIODevice::WriteOnly));
    set.write("{}\n");
  }

  void tabFollowsTraining() {
    icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
    QVERIFY(window.evaluation() != nullptr);
    const int index = window.tabs()->indexOf(window.evaluation());
    QCOMPARE(index, window.tabs()->indexOf(window.dashboard()) + 1);
    QCOMPARE(window.tabs()->tabText(index), QStringLiteral("Evaluation"));
    QVERIFY(!window.tabs()->tabIcon(index).isNull());
  }

  void showsProgressTablesAndChart() {
    Calls calls;
    EvaluationTab tab;
    tab.resize(1300, 850);
    tab.show();
    QVERIFY(QTest::qWaitForWindowExposed(&tab));
    fillForm(tab, QStringLiteral("a"));
    tab.setRunner([&calls](const EvalPlan& plan, const EvalProgressCallback& progress, const std::atomic<bool>*) {
      {
        std::lock_guard lock(calls.mutex);
        calls.plans.push_back(plan);
      }
      EvalProgress p;
      p.stage = "loading model";
      progress(p);
      p.stage = "answering";
      p.total = 24;
      p.resumed = 4;
      for (size_t done : {4, 10}) {
        p.done = done;
        p.eta_s = done == 4 ? -1 : 83;
        progress(p);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      while (!calls.proceed) {  // the GUI has checked the progress text
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return handBuiltOutcome(plan);
    });
    QSignalSpy finished(&tab, &EvaluationTab::evaluationFinished);
    QVERIFY(tab.startEvaluation());
    QVERIFY(tab.findChild<QPushButton*>(QStringLiteral("EvalStop"))->isEnabled());
    QVERIFY(!tab.findChild<QPushButton*>(QStringLiteral("EvalStart"))->isEnabled());
    QTRY_COMPARE_WITH_TIMEOUT(tab.progressText(), QStringLiteral("answering: 10/24, 4 resumed, ETA 01:23"), 5000);
    calls.proceed = true;
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, 5000);
    QCOMPARE(finished.at(0).at(0).toBool(), true);
    QCOMPARE(tab.job()->state(), EvaluationJob::State::Succeeded);
    QVERIFY(tab.findChild<QPushButton*>(QStringLiteral("EvalStart"))->isEnabled());
    QCOMPARE(calls.count(), size_t{1});
    const EvalPlan plan = calls.plan(0);
    QCOMPARE(QString::fromStdString(plan.layers), QStringLiteral("1,2"));
    QCOMPARE(plan.max_new_tokens, int64_t{8});
    QCOMPARE(plan.limit, size_t{3});
    QVERIFY(!plan.judge.has_value());  // empty: guard/ beside the model
    QVERIFY(!plan.reward.has_value());
    QVERIFY(!plan.restart);

    // Per-layer table: a row per layer; Base and the adapter (by folder name) per metric.
    const auto expected = handBuiltOutcome(plan).metrics;  // the same records and options
    QTableWidget* t = tab.layerTable();
    QCOMPARE(t->rowCount(), 2);
    QCOMPARE(cellText(t, 0, 0), QStringLiteral("1"));
    QCOMPARE(cellText(t, 1, 0), QStringLiteral("2"));
    const int baseAsr = columnOf(t, QStringLiteral("Base\nASR %"));
    const int adapterRefusal = columnOf(t, QStringLiteral("aligned\nRefusal %"));
    const int baseReward = columnOf(t, QStringLiteral("Base\nMean reward"));
    const int baseAccuracy = columnOf(t, QStringLiteral("Base\nAccuracy %"));
    QVERIFY(baseAsr > 0 && adapterRefusal > 0 && baseReward > 0 && baseAccuracy > 0);
    const auto& base2 = expected.run("")->layers.at(1).metrics;
    QCOMPARE(base2.asr.value, 0.5);
    QCOMPARE(cellText(t, 1, baseAsr),
             QStringLiteral("50.0 [%1, %2]").arg(pct(base2.asr.lo), pct(base2.asr.hi)));
    QVERIFY(cellText(t, 0, baseAsr).startsWith(QStringLiteral("100.0 [")));
    QVERIFY(cellText(t, 0, adapterRefusal).startsWith(QStringLiteral("100.0 [")));
    // Mean reward of base layer 1: (-1 + 0.5 + 1) / 3, three decimals.
    QVERIFY2(cellText(t, 0, baseReward).startsWith(QStringLiteral("0.167 [")), qPrintable(cellText(t, 0, baseReward)));
    QCOMPARE(cellText(t, 0, baseAccuracy), QStringLiteral("—"));  // no item has a reference answer

    // Group table: Early / Middle / Late rows; Base, the adapter and the delta.
    QTableWidget* g = tab.groupTable();
    QCOMPARE(g->rowCount(), 3);
    QVERIFY(cellText(g, 0, 0).startsWith(QStringLiteral("Early")));
    QVERIFY(columnOf(g, QStringLiteral("Δ aligned")) > 0);
    QVERIFY(cellText(g, 0, columnOf(g, QStringLiteral("Δ aligned"))).startsWith(QStringLiteral("-100.0 [")));
    QCOMPARE(cellText(g, 2, columnOf(g, QStringLiteral("Base"))), QStringLiteral("—"));  // layer 3: no answers

    // The chart: one series per run, ASR in percent; the metric combo switches it.
    QStringList names = tab.chart()->seriesNames();
    names.sort();
    QCOMPARE(names, (QStringList{QStringLiteral("Base"), QStringLiteral("aligned")}));
    QCOMPARE(tab.chart()->points(QStringLiteral("Base")), (QVector<QPointF>{{1, 100}, {2, 50}}));
    auto* metric = tab.findChild<QComboBox*>(QStringLiteral("EvalMetric"));
    metric->setCurrentIndex(metric->findData(static_cast<int>(icet::eval::Metric::refusal)));
    QCOMPARE(tab.chart()->points(QStringLiteral("aligned")), (QVector<QPointF>{{1, 100}, {2, 100}}));
    QCOMPARE(tab.chart()->seriesNames().size(), 2);

    // Export CSV: the metrics as metrics_csv().
    const QString csv = m_tmp.filePath(QStringLiteral("a.csv"));
    QVERIFY(tab.exportCsv(csv));
    QFile file(csv);
    QVERIFY(file.open(QIODevice::ReadOnly));
    QVERIFY(file.readLine().startsWith("kind,adapter,layer"));
    QVERIFY(icet::test::screenshot(&tab, QStringLiteral("evaluation_tab")));
  }

  void stopCancelsAndStartResumes() {
    Calls calls;
    EvaluationTab tab;
    fillForm(tab, QStringLiteral("b"));
    tab.setRestart(true);  // asked once: the resume after Stop must not discard again
    tab.setRunner(endlessRunner(calls));
    auto* start = tab.findChild<QPushButton*>(QStringLiteral("EvalStart"));
    auto* stop = tab.findChild<QPushButton*>(QStringLiteral("EvalStop"));
    QSignalSpy finished(&tab, &EvaluationTab::evaluationFinished);
    start->click();
    QTRY_COMPARE(calls.count(), size_t{1});
    QTRY_VERIFY(tab.progressText().contains(QStringLiteral("/1000")));
    QVERIFY(stop->isEnabled());
    stop->click();
    QTRY_COMPARE_WITH_TIMEOUT(finished.count(), 1, 5000);
    QCOMPARE(finished.at(0).at(0).toBool(), false);
    QCOMPARE(tab.job()->state(), EvaluationJob::State::Cancelled);
    QVERIFY(calls.sawCancel);
    QVERIFY(start->isEnabled());
    QVERIFY(!stop->isEnabled());
    QVERIFY2(tab.messageBar()->text().contains(QStringLiteral("stopped")), qPrintable(tab.messageBar()->text()));
    QCOMPARE(tab.messageBar()->kind(), icet::ui::MessageBar::Information);

    start->click();
    QTRY_COMPARE(calls.count(), size_t{2});
    QCOMPARE(calls.plan(1).out, calls.plan(0).out);
    QVERIFY(calls.plan(0).restart);
    QVERIFY(!calls.plan(1).restart);
    QVERIFY(tab.messageBar()->text().contains(QStringLiteral("Evaluation")));
    tab.stopEvaluation();
    QTRY_COMPARE_WITH_TIMEOUT(tab.job()->state(), EvaluationJob::State::Cancelled, 5000);
  }

  void validatesBeforeStarting() {
    Calls calls;
    EvaluationTab tab;
    fillForm(tab, QStringLiteral("c"));
    tab.setRunner(endlessRunner(calls));
    const QString missing = m_tmp.filePath(QStringLiteral("no-such-set.jsonl"));
    tab.setPromptSet(missing);
    QVERIFY(!tab.startEvaluation());
    QCOMPARE(tab.messageBar()->kind(), icet::ui::MessageBar::Error);
    QVERIFY2(tab.messageBar()->text().contains(missing), qPrintable(tab.messageBar()->text()));
    tab.setPromptSet(m_set);
    tab.setLayers(QStringLiteral("early"));
    QVERIFY(!tab.startEvaluation());
    QVERIFY(tab.messageBar()->text().contains(QStringLiteral("early")));
    tab.setLayers(QStringLiteral("1-3"));
    tab.setModelPath(m_tmp.filePath(QStringLiteral("nothing")));
    QVERIFY(!tab.startEvaluation());
    QVERIFY(tab.messageBar()->text().contains(QStringLiteral("config.json")));
    QApplication::processEvents();
    QCOMPARE(calls.count(), size_t{0});
    QCOMPARE(tab.job()->state(), EvaluationJob::State::Idle);
    // Open results on a folder without a log: a message, no job.
    QVERIFY(!tab.openResults(m_tmp.path()));
    QVERIFY(tab.messageBar()->text().contains(QStringLiteral("answers.jsonl")));
  }

  void closingMidRunReturnsQuickly() {
    Calls calls;
    auto* tab = new EvaluationTab;
    fillForm(*tab, QStringLiteral("d"));
    tab->setRunner(endlessRunner(calls));
    QVERIFY(tab->startEvaluation());
    QTRY_COMPARE(calls.count(), size_t{1});
    QElapsedTimer clock;
    clock.start();
    delete tab;  // cancels and joins
    QVERIFY2(clock.elapsed() < 2000, qPrintable(QString::number(clock.elapsed())));
    QVERIFY(calls.sawCancel);
  }

  void evaluatesTheDemoWorld() {
    const QString demo = icet::test::demo_dir();
    if (demo.isEmpty()) {
      QSKIP("no committed demo world (models/demo)");
    }
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const QString out = tmp.filePath(QStringLiteral("eval-heldout"));
    EvaluationTab tab;  // the real runner
    tab.setModelPath(demo + QStringLiteral("/vlm"));
    tab.setPromptSet(demo + QStringLiteral("/sets/heldout.jsonl"));
    tab.setJudgePath(QString());  // guard/ beside the model
    tab.setRewardPath(demo + QStringLiteral("/reward"));
    tab.setLayers(QStringLiteral("1,12"));  // the demo VLM's CLIP has 24 layers
    tab.setLimit(2);
    tab.setMaxNewTokens(8);
    tab.setOutputDir(out);
    QSignalSpy finished(&tab, &EvaluationTab::evaluationFinished);
    QVERIFY(tab.startEvaluation());
    QTRY_VERIFY_WITH_TIMEOUT(finished.count() == 1, 120000);
    QVERIFY2(tab.job()->state() == EvaluationJob::State::Succeeded, qPrintable(tab.job()->error()));
    QVERIFY(QFileInfo(out + QStringLiteral("/answers.jsonl")).isFile());
    QVERIFY(QFileInfo(out + QStringLiteral("/report.html")).isFile());
    QVERIFY(QFileInfo(out + QStringLiteral("/metrics.json")).isFile());
    // 2 items x 3 layers (1, 12 and the checkpoint's default layer, the reference row) x the base model.
    const auto result = tab.job()->result();
    QVERIFY(result != nullptr);
    QCOMPARE(result->layers, (std::vector<int64_t>{1, 12, 23}));
    QCOMPARE(result->summary.value("answers", 0), 6);
    QVERIFY2(tab.progressText().contains(QStringLiteral("6/6")), qPrintable(tab.progressText()));
    QTableWidget* t = tab.layerTable();
    QCOMPARE(t->rowCount(), 3);
    QCOMPARE(cellText(t, 0, 0), QStringLiteral("1"));
    QCOMPARE(cellText(t, 1, 0), QStringLiteral("12"));
    QCOMPARE(cellText(t, 2, 0), QStringLiteral("23"));
    // The first two held-out items are benign with an expected answer: accuracy and the reward
    // model's score are measured at every layer.
    for (const QString& header : {QStringLiteral("Base\nAccuracy %"), QStringLiteral("Base\nMean reward")}) {
      const int col = columnOf(t, header);
      QVERIFY(col > 0);
      for (int row = 0; row < 3; ++row) {
        QVERIFY2(cellText(t, row, col) != QStringLiteral("—"), qPrintable(header));
      }
    }
    QCOMPARE(tab.chart()->seriesNames(), QStringList{QStringLiteral("Base")});

    // Open results: the same tables from the folder, without a model.
    EvaluationTab again;
    QSignalSpy loaded(&again, &EvaluationTab::evaluationFinished);
    QVERIFY(again.openResults(out));
    QTRY_VERIFY_WITH_TIMEOUT(loaded.count() == 1, 30000);
    QVERIFY2(again.job()->state() == EvaluationJob::State::Succeeded, qPrintable(again.job()->error()));
    QCOMPARE(again.layerTable()->rowCount(), 3);
    for (int row = 0; row < 3; ++row) {
      for (int col = 0; col < t->columnCount(); ++col) {
        QCOMPARE(cellText(again.layerTable(), row, col), cellText(t, row, col));  // same log, same seed
      }
    }
  }

 private:
  void fillForm(EvaluationTab& tab, const QString& name) {
    tab.setModelPath(m_model);
    tab.setPromptSet(m_set);
    tab.setJudgePath(QString());
    tab.setRewardPath(QString());
    tab.setLayers(QStringLiteral("1,2"));
    tab.setMaxNewTokens(8);
    tab.setLimit(3);
    tab.setOutputDir(m_tmp.filePath(QStringLiteral("out-") + name));
  }

  QTemporaryDir m_tmp;
  QString m_model;
  QString m_set;
};

QTEST_MAIN(TestEvaluationTab)
#include "test_evaluation_tab.moc"
