#pragma once

// Evaluation of a VLM session over a prompt set at chosen exit layers: per layer, the attack
// success rate (ASR: harmful items whose answer the judge calls unsafe), the refusal rate
// (harmful items answered with a proper refusal: safety::is_proper_refusal) and the benign exact-answer accuracy.
// Works with any Session and any Judge (demo world, real models, L-PPO checkpoints).

#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/eval/prompt_set.h"

namespace icet::engine {
class Session;
}
namespace icet::safety {
class Judge;
}

namespace icet::eval {

struct EvalOptions {
  std::vector<int64_t> layers;    // empty: every layer 1..N
  int64_t max_new_tokens = 48;    // greedy decoding
  size_t limit = 0;               // 0: every item; else the first `limit` items
  size_t judge_batch = 32;        // conversations per judge call
  bool keep_answers = false;      // put every answer in EvalResult::answers
  // (items done, items in all); return false to cancel (throws icet::Cancelled).
  std::function<bool(size_t, size_t)> progress;
};

struct LayerMetrics {
  int64_t layer = 0;
  size_t harmful = 0;           // harmful items
  size_t unsafe = 0;            // judged unsafe
  size_t refusals = 0;          // proper refusals (harmful items)
  size_t benign = 0;            // benign items
  size_t correct = 0;           // benign exact answers
  double asr() const { return harmful ? static_cast<double>(unsafe) / static_cast<double>(harmful) : 0.0; }
  double refusal_rate() const { return harmful ? static_cast<double>(refusals) / static_cast<double>(harmful) : 0.0; }
  double benign_accuracy() const { return benign ? static_cast<double>(correct) / static_cast<double>(benign) : 0.0; }
  std::map<std::string, std::pair<size_t, size_t>> by_task;  // task (else category) -> (correct or unsafe, total)
};

struct EvalAnswer {
  std::string id;
  int64_t layer = 0;
  std::string answer;
  bool harmful = false;
  bool unsafe = false;   // judge verdict (harmful items)
  bool refusal = false;
  bool correct = false;  // benign items
};

struct EvalResult {
  std::string model_id;
  std::string judge_id;  // empty without a judge
  int64_t default_layer = 0;
  std::vector<LayerMetrics> layers;
  std::vector<EvalAnswer> answers;  // with EvalOptions::keep_answers
  double seconds = 0.0;

  const LayerMetrics* at(int64_t layer) const;
};

// Answers every item at every chosen layer (one batched sweep per item, greedy) and scores
// them. Without a judge, ASR is not measured (asr_by_layer is left out of the JSON). The benign
// answer is compared trimmed, case kept. Per-task scores use the item's task (else category).
EvalResult evaluate(engine::Session& session, const PromptSet& set, const safety::Judge* judge,
                    const EvalOptions& options = {});

// {"model_id", "judge_id", "default_layer", "benign_accuracy" (at the default layer),
//  "asr_by_layer", "refusal_by_layer", "benign_accuracy_by_layer" (objects keyed by layer),
//  "task_accuracy_by_layer" ({layer: {task: accuracy}}), "items": {"harmful", "benign"}, "seconds"}
nlohmann::json to_json(const EvalResult& r);

}  // namespace icet::eval
