#pragma once

// The training dashboard: a form for an L-PPO (or SFT baseline) job, start/stop/resume, live
// charts (reward, KL, selectable extra metrics with EMA smoothing and a log axis), a per-layer
// ASR chart from the periodic evaluations (before vs now), a table of sample rollouts whose
// rows open in the comparison lab, and a job list with status, progress and ETA. Jobs run on
// their own worker threads; a 40 ms timer drains their buffers and updates each series in one
// bulk replace. "Run the demo story" trains the default demo config and then has the lab show
// base and aligned answers side by side (storyReady).

#include <QFutureWatcher>
#include <QMap>
#include <QPointF>
#include <QStringList>
#include <QVector>
#include <QWidget>

#include "ui/message_bar.h"
#include "ui/training_job.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QListWidget;
class QPushButton;
class QSlider;
class QSpinBox;
class QTableWidget;
class QTimer;

namespace icet::ui {

class LineChart;

class TrainingDashboard : public QWidget {
  Q_OBJECT

 public:
  explicit TrainingDashboard(QWidget* parent = nullptr);
  ~TrainingDashboard() override;

  // Form fields (tests and the lab fill them too).
  void setModelPath(const QString& dir);
  void setPromptSet(const QString& file);
  void setMaxSteps(int steps);
  void setRunDir(const QString& dir);
  void setThreads(int threads);  // intra-op threads of the job (0: as the app)
  // Replaces the config the form starts from (every key the form does not show comes from
  // it) and fills the form from it. False (and a message) when it is not a valid config.
  bool setBaseConfig(const QString& json);
  bool loadConfigFile(const QString& path);
  // The config JSON the form describes (the demo config with the form's values).
  QString configJson() const;

  // Starts a new job from the form; false (and a message) when the form is not valid.
  bool startJob();
  void stopJob();
  // Resumes the current (stopped) job, or the run folder `dir` when given.
  bool resumeJob(const QString& dir = QString());
  TrainingJob* currentJob() const { return m_current; }
  // The whole story in one go: starts the story config's job (default: the demo world's
  // lppo.json, as the form would) and, when it succeeds, emits storyReady. Stop cancels it.
  bool runStory();
  void setStoryConfig(const QString& path);  // e.g. a tiny config in tests
  bool storyRunning() const { return m_storyJob != nullptr; }
  int jobCount() const { return static_cast<int>(m_jobs.size()); }

  LineChart* rewardChart() const { return m_rewardChart; }
  LineChart* klChart() const { return m_klChart; }
  LineChart* extraChart() const { return m_extraChart; }
  LineChart* asrChart() const { return m_asrChart; }
  QTableWidget* samplesTable() const { return m_samples; }
  QTableWidget* jobTable() const { return m_jobTable; }
  QVector<QPointF> rawSeries(const QString& metric) const { return m_raw.value(metric); }
  void setSmoothing(double alpha);  // EMA weight of the past, 0 (off) .. 0.99
  void setLogAxis(bool on);
  bool exportMetricsCsv(const QString& path);

 Q_SIGNALS:
  void message(icet::ui::MessageBar::Kind kind, const QString& text);
  // A rollout row was opened: show it in the comparison lab.
  void openSample(const QString& prompt, const QString& answer, int layer, double reward,
                  const QString& image);
  // "Compare with adapter in the lab": the current job's adapter folder and the model it was trained on.
  void loadAdapterRequested(const QString& dir, const QString& model);
  void progressChanged(int percent, const QString& text);  // -1: no job running
  // The story's job finished: its adapter, model, judge and reward model, for the lab.
  void storyReady(const QString& adapterDir, const QString& model, const QString& judge, const QString& reward);

 private:
  QWidget* buildForm();
  void fillForm();
  // The form's memory estimate, recomputed on a pool thread after edits settle.
  void scheduleMemoryEstimate();
  void updateMemoryEstimate();
  void poll();
  void redrawMetrics();
  void redrawAsr();
  void updateJobRow(int row, TrainingJob* job, TrainingJob::State state);
  void resetCharts();
  void error(const QString& text);
  void endStory(TrainingJob::State state);

  QLineEdit* m_model = nullptr;
  QLineEdit* m_promptSet = nullptr;
  QLineEdit* m_runDir = nullptr;
  QComboBox* m_method = nullptr;
  QComboBox* m_schedule = nullptr;
  QLineEdit* m_layers = nullptr;
  QDoubleSpinBox* m_lr = nullptr;
  QDoubleSpinBox* m_klCoef = nullptr;
  QSpinBox* m_batch = nullptr;
  QSpinBox* m_steps = nullptr;
  QSpinBox* m_epochs = nullptr;
  QSpinBox* m_loraR = nullptr;
  QSpinBox* m_seed = nullptr;
  QSpinBox* m_threads = nullptr;
  QComboBox* m_device = nullptr;
  QComboBox* m_dtype = nullptr;
  QCheckBox* m_checkpointing = nullptr;
  QLabel* m_memoryEstimate = nullptr;  // "Needs about 0.1 GiB ... of 22.8 GiB on cpu"
  QTimer* m_estimateTimer = nullptr;   // debounces form edits
  QFutureWatcher<QStringList>* m_estimateWatcher = nullptr;  // {text, "fits" | "too big" | "error"}
  QPushButton* m_start = nullptr;
  QPushButton* m_stop = nullptr;
  QPushButton* m_resume = nullptr;
  QPushButton* m_loadAdapter = nullptr;
  QPushButton* m_story = nullptr;
  TrainingJob* m_storyJob = nullptr;
  QString m_storyConfig;
  QSlider* m_smoothing = nullptr;
  QCheckBox* m_log = nullptr;
  QListWidget* m_metricList = nullptr;
  LineChart* m_rewardChart = nullptr;
  LineChart* m_klChart = nullptr;
  LineChart* m_extraChart = nullptr;
  LineChart* m_asrChart = nullptr;
  QTableWidget* m_samples = nullptr;
  QTableWidget* m_jobTable = nullptr;
  QTimer* m_timer = nullptr;
  std::vector<TrainingJob*> m_jobs;
  TrainingJob* m_current = nullptr;
  QMap<QString, QVector<QPointF>> m_raw;  // metric -> (step, value), unsmoothed
  QVector<TrainingEval> m_evals;
  QString m_baseConfig;
  double m_alpha = 0.0;
  bool m_dirty = false;
};

}  // namespace icet::ui
