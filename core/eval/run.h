#pragma once

// A whole evaluation (torch-free header; the models live in run.cpp): a prompt set answered at
// chosen exit layers by the base model and each adapter (one batched sweep per item and model),
// every answer judged (Llama Guard verdict, P(unsafe)), scored by a reward model, checked for
// refusal and, for benign items with a reference, for accuracy; each answer appended to a
// resumable log (answer_log.h) as soon as it is scored, then aggregated (metrics.h) and exported
// (report.h). `icet eval`, the app's Evaluation tab and `icet demo report` share this path.
//
// Output folder layout (EvalPlan::out):
//   answers.jsonl   the log: a header {"icet_eval_log":1,"meta":{...}} and one line per answer;
//                   a rerun of the same plan skips every answer already in it
//   metrics.json    eval_summary_json(): the per-layer, per-group and delta tables with intervals
//   metrics.csv     metrics_csv()
//   answers.csv     answers_csv()
//   report.html     html_report(): self-contained, with the per-layer charts

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/eval/answer_log.h"
#include "core/eval/metrics.h"
#include "core/eval/prompt_set.h"

namespace icet::engine {
class Session;
}
namespace icet::safety {
class Judge;
class RewardModel;
}  // namespace icet::safety

namespace icet::eval {

struct EvalPlan {
  std::filesystem::path model;  // VLM snapshot folder
  std::filesystem::path set;    // prompt set (.jsonl / .csv; `icet import` writes them)
  // Llama Guard folder or "placeholder"; nullopt: guard/ beside the model, else no judge (then
  // ASR is not measured; refusal, reward and accuracy still are).
  std::optional<std::filesystem::path> judge;
  std::optional<std::filesystem::path> reward;  // reward-model folder; nullopt: no reward
  std::vector<std::filesystem::path> adapters;  // PEFT folders, each answered beside the base
  bool base = true;                             // answer with the base model too (needed for deltas)
  std::string layers = "all";                   // "all", "1-12", "3,7,9" (engine::parse_layers)
  bool with_default_layer = true;               // add the checkpoint's default layer (the reference row)
  int64_t max_new_tokens = 48;                  // greedy
  size_t limit = 0;                             // 0: every item; else the first `limit`
  std::string device = "auto";                  // the VLM, judge and reward model
  std::string dtype = "auto";
  bool normalised_answers = false;              // exact-answer items: compare normalise_answer()d
  size_t judge_batch = 32;                      // answers per judge / reward-model call
  MetricsOptions metrics;                       // resamples, confidence, seed (num_layers: the model's)
  std::optional<std::filesystem::path> out;     // output folder (layout above); nullopt: in memory only
  bool restart = false;                         // discard an existing log in `out` instead of resuming
};

struct EvalProgress {
  std::string stage;     // "loading model", "loading judge", "loading reward model", "answering", "report"
  size_t done = 0;       // answers done, those resumed from the log included
  size_t total = 0;      // answers in the plan (items x layers x models)
  size_t resumed = 0;    // answers that were already in the log at the start
  double elapsed_s = 0;  // since the start of this run
  double eta_s = -1;     // remaining, from this run's answering rate; < 0 while unknown
};
// Called on the evaluating thread; return false to stop (the run throws icet::Cancelled after
// flushing the log, so a rerun resumes).
using EvalProgressCallback = std::function<bool(const EvalProgress&)>;

struct EvalOutcome {
  nlohmann::json meta;                // what produced the answers (the log header's meta)
  std::vector<AnswerRecord> records;  // every answer of the plan (resumed ones included)
  MetricsReport metrics;
  std::vector<int64_t> layers;        // the plan's layers, ascending
  int64_t default_layer = 0;
  int64_t num_layers = 0;             // the encoder's exit layers
  size_t resumed = 0;                 // answers taken from an existing log
  double seconds = 0;                 // this run
  // Benign accuracy per item task (else category) of the first model answered, as
  // {"<layer>": {"<task>": accuracy}} (`icet demo report`'s per-task scores); empty from a log.
  nlohmann::json task_accuracy_by_layer = nlohmann::json::object();
  std::optional<std::filesystem::path> out;
};

// Everything the plan names is opened (InputError naming the option or file when it cannot
// be), the answers missing from the log are produced, and the exports are written. Resuming a
// log whose meta (model weights, prompt set content, judge, reward model, max_new_tokens,
// answer scoring) differs from the plan's is an InputError naming the differing key, unless
// `restart`. Other layers and adapters may be added to an existing log.
EvalOutcome run_evaluation(const EvalPlan& plan, const EvalProgressCallback& progress = {},
                           const std::atomic<bool>* cancel = nullptr);

// The same, with models the caller already holds (the demo report, tests). `adapters` are the
// session's adapter keys to answer with ("" = base); they must have been added to the session.
struct EvalModels {
  engine::Session* session = nullptr;
  const safety::Judge* judge = nullptr;          // may be null
  const safety::RewardModel* reward = nullptr;   // may be null
};
EvalOutcome run_evaluation(const EvalModels& models, const PromptSet& set, const EvalPlan& plan,
                           const std::vector<std::string>& adapters, const EvalProgressCallback& progress = {},
                           const std::atomic<bool>* cancel = nullptr);

// Reads an output folder's answers.jsonl (every answer in it) and recomputes the metrics
// without a model (`icet eval --report-only`, the app's "Open results"). Writes nothing.
EvalOutcome load_evaluation(const std::filesystem::path& out, const MetricsOptions& options = {});

// metrics.json, metrics.csv, answers.csv and report.html of `outcome` into `out` (atomically).
void write_exports(const EvalOutcome& outcome, const std::filesystem::path& out);

// The JSON `icet eval --json` prints and metrics.json holds:
//   {"meta", "layers", "default_layer", "num_layers", "prompts", "answers", "resumed", "seconds",
//    "groups": [{"name","first","last"}],
//    "runs": [{"adapter", "layers": [{"layer", "<metric>": {"value","lo","hi","n"}, ...}],
//              "groups": [{"name", "<metric>": {...}}]}],
//    "deltas": [same shape, adapter - base],
//    and for the base run (or the only run) the per-layer maps of `icet demo report`:
//    "asr_by_layer", "refusal_by_layer", "over_refusal_by_layer", "benign_accuracy_by_layer",
//    "reward_by_layer" ({"<layer>": value}, measured metrics only), "benign_accuracy" (at the
//    default layer), "task_accuracy_by_layer", "model_id", "judge_id", "items": {"harmful", "benign"}}
// Unmeasured values are null.
nlohmann::json eval_summary_json(const EvalOutcome& outcome);

// The output folder's file names.
inline constexpr const char* kAnswerLogName = "answers.jsonl";
inline constexpr const char* kMetricsJsonName = "metrics.json";
inline constexpr const char* kMetricsCsvName = "metrics.csv";
inline constexpr const char* kAnswersCsvName = "answers.csv";
inline constexpr const char* kReportHtmlName = "report.html";

}  // namespace icet::eval
