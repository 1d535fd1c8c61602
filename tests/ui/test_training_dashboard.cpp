// The training dashboard on the demo world (or, until it is committed, the tiny fixture world of
// tests/support/rl_world.h): a short L-PPO job started from the form grows the
// reward and KL series while it runs, the GUI event loop stays responsive (no gap over 100 ms
// between ticks of a 20 ms timer during training), and the job stops and resumes from its
// checkpoint.
#include <QCheckBox>
#include <QComboBox>
#include <QElapsedTimer>
#include <QLabel>
#include <QPushButton>
#include <QSignalSpy>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>

#include "core/runtime/diagnostics.h"
#include "support/rl_world.h"
#include "support/ui.h"
#include "ui/charts/line_chart.h"
#include "ui/comparison_lab.h"
#include "ui/main_window.h"
#include "ui/training_dashboard.h"
#include "ui/training_job.h"

using icet::ui::TrainingJob;

class TestTrainingDashboard : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void initTestCase() { icet::test::init_ui_test("icet-studio-test-training"); }

  // Device, precision and gradient checkpointing go into the job's config, and the form shows
  // the memory the job will need (estimated off the GUI thread) before it starts.
  void devicePrecisionAndMemoryEstimate() {
    QTemporaryDir tmp;
    icet::ui::TrainingDashboard dash;
    auto cfg = icet::test::tiny_config(tmp.filePath(QStringLiteral("world")).toStdString());
    QVERIFY(dash.setBaseConfig(QString::fromStdString(icet::rl::to_json(cfg).dump())));
    auto* label = dash.findChild<QLabel*>(QStringLiteral("TrainMemoryEstimate"));
    QVERIFY(label != nullptr);
    QTRY_VERIFY_WITH_TIMEOUT(label->text().contains(QStringLiteral("float32")), 10000);
    QVERIFY2(label->text().startsWith(QStringLiteral("Needs about")) && label->text().contains(QStringLiteral("on cpu")),
             qPrintable(label->text()));
    auto* dtype = dash.findChild<QComboBox*>(QStringLiteral("TrainDtype"));
    auto* checkpointing = dash.findChild<QCheckBox*>(QStringLiteral("TrainCheckpointing"));
    dtype->setCurrentIndex(dtype->findData(QStringLiteral("bfloat16")));
    checkpointing->setChecked(true);
    QTRY_VERIFY_WITH_TIMEOUT(label->text().contains(QStringLiteral("bfloat16")), 10000);
    const auto j = nlohmann::json::parse(dash.configJson().toStdString());
    QCOMPARE(j.at("dtype").get<std::string>(), std::string("bfloat16"));
    QCOMPARE(j.at("device").get<std::string>(), std::string("cpu"));
    QVERIFY(j.at("gradient_checkpointing").get<bool>());
  }

  void trainsLiveStopsAndResumes() {
    const QString demo = icet::test::demo_dir();
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
    window.resize(1400, 900);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    auto* dash = window.dashboard();
    window.tabs()->setCurrentWidget(dash);
    if (!demo.isEmpty() && QFileInfo(demo + QStringLiteral("/lppo.json")).isFile()) {
      QVERIFY(dash->loadConfigFile(demo + QStringLiteral("/lppo.json")));
      dash->setModelPath(demo + QStringLiteral("/vlm"));
      dash->setPromptSet(demo + QStringLiteral("/sets/train.jsonl"));
    } else {
      auto cfg = icet::test::tiny_config(tmp.filePath(QStringLiteral("world")).toStdString());
      cfg.eval_every = 5;
      QVERIFY(dash->setBaseConfig(QString::fromStdString(icet::rl::to_json(cfg).dump())));
    }
    dash->setMaxSteps(400);
    dash->setThreads(1);  // leave a core to the GUI thread on a 2-core machine
    const QString runDir = tmp.filePath(QStringLiteral("run"));
    dash->setRunDir(runDir);

    // Responsiveness probe: the longest gap between ticks of a 20 ms timer.
    QElapsedTimer clock;
    qint64 last = 0;
    qint64 worst = 0;
    qint64 worstAt = 0;
    QTimer probe;
    probe.setInterval(20);
    connect(&probe, &QTimer::timeout, this, [&] {
      const qint64 now = clock.elapsed();
      if (now - last > worst) {
        worst = now - last;
        worstAt = now;
      }
      last = now;
    });

    QVERIFY(dash->startJob());
    QCOMPARE(dash->jobCount(), 1);
    clock.start();
    probe.start();
    const QString scores = QStringLiteral("objective/scores");
    const QString kl = QStringLiteral("objective/kl");
    QTRY_VERIFY_WITH_TIMEOUT(dash->rawSeries(scores).size() >= 2, 90000);
    const auto firstReward = dash->rewardChart()->points(scores).size();
    // The series grows live (drained on the dashboard's timer, not at the end).
    QTRY_VERIFY_WITH_TIMEOUT(dash->rewardChart()->points(scores).size() > firstReward &&
                                 dash->rewardChart()->points(scores).size() >= 4,
                             90000);
    QVERIFY(dash->rewardChart()->points(QStringLiteral("objective/rlhf_reward")).size() >= 4);
    QVERIFY(dash->klChart()->points(kl).size() >= 4);
    probe.stop();
    QVERIFY2(worst <= 100, qPrintable(QStringLiteral("longest event-loop gap %1 ms at %2 ms")
                                          .arg(worst)
                                          .arg(worstAt)));
    QVERIFY(icet::test::screenshot(&window, QStringLiteral("training_dashboard")));  // mid-run
    QCOMPARE(dash->currentJob()->state(), TrainingJob::State::Running);

    dash->stopJob();
    QTRY_VERIFY_WITH_TIMEOUT(dash->currentJob()->state() == TrainingJob::State::Cancelled, 60000);
    const qint64 stoppedAt = dash->currentJob()->step();
    QVERIFY(stoppedAt >= 4);
    QVERIFY(stoppedAt < 400);
    QVERIFY(!dash->currentJob()->adapterDir().isEmpty());

    // "Load adapter into panes": the lab opens the job's model (none was open) with the
    // adapter of the last checkpoint, while the run stays stopped.
    auto* lab = window.lab();
    QSignalSpy adapterChanged(lab, &icet::ui::ComparisonLab::adapterChanged);
    auto* loadAdapter = dash->findChild<QPushButton*>(QStringLiteral("LoadAdapter"));
    QVERIFY(loadAdapter != nullptr && loadAdapter->isEnabled());
    loadAdapter->click();
    QCOMPARE(window.tabs()->currentWidget(), lab);
    QVERIFY(adapterChanged.wait(60000));
    QCOMPARE(lab->adapterPath(), dash->currentJob()->adapterDir());
    QCOMPARE(lab->service()->model()->path, dash->currentJob()->modelPath());
    window.tabs()->setCurrentWidget(dash);
    QTRY_COMPARE_WITH_TIMEOUT(dash->jobTable()->item(0, 1)->text(), QStringLiteral("stopped"), 2000);

    QVERIFY(dash->resumeJob());
    QTRY_VERIFY_WITH_TIMEOUT(dash->currentJob()->step() > stoppedAt, 90000);
    QTRY_VERIFY_WITH_TIMEOUT(dash->rawSeries(scores).back().x() > static_cast<double>(stoppedAt), 90000);
    dash->stopJob();
    QTRY_VERIFY_WITH_TIMEOUT(dash->currentJob()->state() == TrainingJob::State::Cancelled, 60000);
    QVERIFY(dash->samplesTable()->rowCount() > 0);

    // Smoothing and log axis redraw from the raw data.
    dash->setSmoothing(0.9);
    QCOMPARE(dash->rewardChart()->points(scores).size(), dash->rawSeries(scores).size());
    dash->setLogAxis(true);
    QVERIFY(dash->klChart()->logY());
    QVERIFY(dash->exportMetricsCsv(tmp.filePath(QStringLiteral("metrics.csv"))));
    QVERIFY(QFileInfo(tmp.filePath(QStringLiteral("metrics.csv"))).size() > 0);
  }
};

QTEST_MAIN(TestTrainingDashboard)
#include "test_training_dashboard.moc"
