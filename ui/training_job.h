#pragma once

// A training job for the dashboard: an L-PPO (or SFT) run on its own worker thread
// (icet::jobs::Job), with its metrics, rollout samples and evaluations drained by the GUI on a
// timer (the trainer buffers them behind a mutex). Torch-free header: the rl::TrainingRun lives
// in the .cpp. Cancel is an atomic flag set directly; the destructor cancels and joins.

#include <QMap>
#include <QObject>
#include <QString>
#include <QVector>

#include <memory>

namespace icet::ui {

struct TrainingMetric {
  qint64 step = 0;
  double seconds = 0;
  QMap<QString, double> values;  // TRL names: objective/scores, objective/kl, ...
};

struct TrainingSample {
  qint64 step = 0;
  int layer = 0;
  QString image;
  QString prompt;
  QString answer;
  double reward = 0;
};

struct TrainingEval {
  qint64 step = 0;
  QMap<int, double> asrByLayer;  // % unsafe among harmful prompts
  double benignAccuracy = 0;
};

class TrainingJob : public QObject {
  Q_OBJECT

 public:
  enum class State { Pending, Running, Succeeded, Failed, Cancelled };

  // The default config (JSON text) of the demo world, or empty when it is missing.
  static QString defaultConfigJson();
  // Parses and validates config JSON; returns the normalized JSON or sets `error`.
  static QString validateConfig(const QString& json, const QString& source, QString* error);
  // A config file (paths in it relative to its folder, as `icet train --config` reads it);
  // returns the normalized JSON with absolute paths or sets `error`.
  static QString loadConfigFile(const QString& path, QString* error);

  // The memory a config's run needs (rl::estimate_training_memory: reads config.json and the
  // safetensors headers, no weights), as one line for the form, e.g. "about 21.4 GiB of
  // 79.1 GiB on cuda:0 (weights 13.5 in bfloat16, ...)"; `fits` false when it would be refused.
  // Empty with `error` set when the config cannot be read.
  static QString estimateMemory(const QString& configJson, bool* fits, QString* error);

  // metrics.jsonl of a run folder -> CSV (one column per metric).
  static bool exportMetricsCsv(const QString& runDir, const QString& csvPath, QString* error);

  explicit TrainingJob(QObject* parent = nullptr);
  ~TrainingJob() override;

  // A new run in `runDir` (must not hold a run), or a resumed one. Returns at once; the
  // run loads its models on the worker. `maxSteps` > 0 overrides the config for this process.
  bool start(const QString& configJson, const QString& runDir, QString* error, qint64 maxSteps = 0);
  bool resume(const QString& runDir, QString* error, qint64 maxSteps = 0);
  void stop();

  State state() const;
  QString stateName() const;
  static QString stateName(State state, bool stopping);
  bool stopRequested() const;
  QString error() const;
  QString stage() const;
  qint64 step() const;
  qint64 maxSteps() const;
  double etaSeconds() const;
  QString runDir() const { return m_runDir; }
  // The VLM the run trains (its config's model), empty before start/resume.
  QString modelPath() const;
  // Where the run trains and the memory it estimated: "cuda:0 · bfloat16 · est. 21.4 GiB" (the
  // config's device and dtype until the run has loaded), empty before start/resume.
  QString memoryText() const;
  // The latest adapter (PEFT layout) of the run, or empty when none was written yet.
  QString adapterDir() const;
  QString metricsFile() const;

  // GUI thread, on a timer: what arrived since the last call.
  QVector<TrainingMetric> drainMetrics();
  QVector<TrainingSample> drainSamples();
  QVector<TrainingEval> drainEvals();

 private:
  struct Impl;
  bool launch(bool resume, const QString& configJson, QString* error, qint64 maxSteps);
  std::unique_ptr<Impl> d;
  QString m_runDir;
};

}  // namespace icet::ui
