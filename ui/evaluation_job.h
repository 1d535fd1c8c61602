#pragma once

// One evaluation for the Evaluation tab: eval::run_evaluation (or load_evaluation for "Open
// results") on its own worker thread (icet::jobs::Job). The GUI polls state and progress on a
// timer and takes the result under a mutex when the job has ended; no signal per answer.
// Torch-free header (core/eval/run.h holds value structs only). Stop sets the atomic cancel
// flag: the core flushes the answer log and throws Cancelled, so a rerun on the same output
// folder resumes. The destructor cancels and joins (the core checks cancel per answer).

#include <QObject>
#include <QString>
#include <QStringList>

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <memory>

#include "core/eval/run.h"

namespace icet::ui {

// The tab's form as Qt types; toPlan() maps it onto eval::EvalPlan.
struct EvaluationRequest {
  QString model;        // VLM snapshot folder
  QString set;          // prompt set (.jsonl / .csv)
  QString judge;        // Llama Guard folder or "placeholder"; empty: guard/ beside the model
  QString reward;       // reward-model folder; empty: none
  QStringList adapters; // PEFT folders, each answered beside the base model
  QString layers = QStringLiteral("all");
  int maxNewTokens = 48;
  int limit = 0;        // 0: every item
  QString out;          // output folder (answers.jsonl, metrics, report.html)
  bool restart = false; // discard an existing log instead of resuming it

  eval::EvalPlan toPlan() const;
};

// What the GUI shows once a job succeeded (a copy: the records and answer texts stay behind).
struct EvaluationResult {
  eval::MetricsReport metrics;
  nlohmann::json summary;  // eval_summary_json(): what metrics.json holds
  std::vector<int64_t> layers;
  int64_t defaultLayer = 0;  // the checkpoint's own exit layer (the reference row)
  int64_t numLayers = 0;
  size_t resumed = 0;
  double seconds = 0;
  QString out;
};

class EvaluationJob : public QObject {
  Q_OBJECT

 public:
  // run_evaluation's signature; tests inject fakes.
  using Runner = std::function<eval::EvalOutcome(const eval::EvalPlan&, const eval::EvalProgressCallback&,
                                                 const std::atomic<bool>*)>;
  enum class State { Idle, Running, Succeeded, Failed, Cancelled };

  // `runner`: eval::run_evaluation unless given.
  explicit EvaluationJob(QObject* parent = nullptr, Runner runner = {});
  ~EvaluationJob() override;

  void setRunner(Runner runner);

  // Both return at once (false and `error` while a job runs); the work runs on the worker.
  bool start(const EvaluationRequest& request, QString* error);
  bool open(const QString& out, QString* error);  // load_evaluation: recompute from a folder
  void stop();

  State state() const;
  bool stopRequested() const { return m_stopRequested.load(); }
  bool loading() const { return m_loading; }  // the current/last job is an "Open results"
  QString error() const;
  QString out() const { return m_out; }
  eval::EvalProgress progress() const;
  // The last successful job's result; null before any.
  std::shared_ptr<const EvaluationResult> result() const;

 private:
  struct Impl;
  bool launch(std::function<eval::EvalOutcome(const eval::EvalProgressCallback&, const std::atomic<bool>*)> work,
              QString* error);
  std::unique_ptr<Impl> d;
  std::atomic<bool> m_stopRequested{false};
  bool m_loading = false;
  QString m_out;
};

}  // namespace icet::ui
