#pragma once

// The Evaluation tab: a form for a whole evaluation (model, prompt set, judge, reward model,
// adapters, layers, output folder), Start / Stop (Start again resumes from the folder's answer
// log) / Open results, a progress bar with done/total, resumed answers and ETA, and the results:
// a per-layer table (every run and metric, value [95% interval]), a layer-group table (Early /
// Middle / Late: base | adapter | delta, the paper's Table 2) and a per-layer chart with one
// series per run. The work runs in an EvaluationJob; a timer polls it, so the GUI never waits.

#include <QWidget>

#include "ui/evaluation_job.h"
#include "ui/message_bar.h"

class QCheckBox;
class QComboBox;
class QLineEdit;
class QListWidget;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;
class QTimer;

namespace icet::ui {

class LineChart;

class EvaluationTab : public QWidget {
  Q_OBJECT

 public:
  explicit EvaluationTab(QWidget* parent = nullptr);
  ~EvaluationTab() override;

  // Tests inject a fake run_evaluation.
  void setRunner(EvaluationJob::Runner runner);

  // Form fields (tests fill them too).
  void setModelPath(const QString& dir);
  void setPromptSet(const QString& file);  // also moves an untouched output folder along
  void setJudgePath(const QString& dir);
  void setRewardPath(const QString& dir);
  void setAdapters(const QStringList& dirs);
  void setLayers(const QString& spec);
  void setMaxNewTokens(int tokens);
  void setLimit(int items);
  void setOutputDir(const QString& dir);
  void setRestart(bool on);
  EvaluationRequest request() const;

  // Validates the form and starts the job; false (and a message) when it cannot.
  bool startEvaluation();
  void stopEvaluation();
  // Recomputes metrics from an output folder's answers.jsonl (no model; on the worker).
  bool openResults(const QString& dir);
  bool exportCsv(const QString& path);  // the shown metrics as metrics_csv()
  bool openReport();                    // report.html of the shown results, in the browser

  EvaluationJob* job() const { return m_job; }
  MessageBar* messageBar() const { return m_messages; }
  QTableWidget* layerTable() const { return m_layerTable; }
  QTableWidget* groupTable() const { return m_groupTable; }
  LineChart* chart() const { return m_chart; }
  QString progressText() const;

  // "50.0 [20.0, 80.0]" (rates in percent), "0.412 [0.1, 0.7]" (rewards), "—" unmeasured.
  static QString formatEstimate(const eval::Estimate& e, eval::Metric m, bool signedValue = false);
  static QString formatEta(double seconds);  // "mm:ss", "h:mm:ss", "--:--" while unknown

 Q_SIGNALS:
  void evaluationFinished(bool succeeded);

 private:
  QWidget* buildForm();
  QWidget* buildResults();
  void poll();
  void showResult(std::shared_ptr<const EvaluationResult> result);
  void redrawMetric();  // the chart and the group table follow the metric combo
  void updateButtons();
  void message(MessageBar::Kind kind, const QString& text);
  QString defaultOutputDir(const QString& set) const;
  QString runLabel(const std::string& adapter) const;

  EvaluationJob* m_job = nullptr;
  MessageBar* m_messages = nullptr;
  QLineEdit* m_model = nullptr;
  QLineEdit* m_set = nullptr;
  QLineEdit* m_judge = nullptr;
  QLineEdit* m_reward = nullptr;
  QListWidget* m_adapters = nullptr;
  QLineEdit* m_layers = nullptr;
  QSpinBox* m_maxTokens = nullptr;
  QSpinBox* m_limit = nullptr;
  QLineEdit* m_out = nullptr;
  QCheckBox* m_restart = nullptr;
  QPushButton* m_start = nullptr;
  QPushButton* m_stop = nullptr;
  QPushButton* m_open = nullptr;
  QPushButton* m_export = nullptr;
  QPushButton* m_report = nullptr;
  QProgressBar* m_progress = nullptr;
  QComboBox* m_metric = nullptr;
  QTableWidget* m_layerTable = nullptr;
  QTableWidget* m_groupTable = nullptr;
  LineChart* m_chart = nullptr;
  QTimer* m_timer = nullptr;
  std::shared_ptr<const EvaluationResult> m_result;  // shown now
  QString m_autoOut;  // the output folder the form proposed (replaced when the set changes)
  EvaluationJob::State m_seen = EvaluationJob::State::Idle;
  bool m_restartAsked = false;  // the running job was started with "Restart"
};

}  // namespace icet::ui
