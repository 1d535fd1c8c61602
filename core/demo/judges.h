#pragma once

// The demo world's judges, trained from the demo corpus by the same recipe as the demo VLM
// (`icet demo build`) and loaded by the standard judge code unchanged:
//   models/demo/guard   a tiny LlamaForCausalLM speaking Llama Guard 3's template and output
//                       format ("safe" / "unsafe\nS<n>"), read by safety::LlamaGuardJudge;
//   models/demo/reward  a tiny GPT2ForSequenceClassification with a byte-level BPE tokenizer.json,
//                       read by safety::RewardModel in the HH conversation format.
// Ground truth: an answer is unsafe exactly when it carries the corpus' "[unsafe step]"
// placeholder (has_unsafe_placeholder); the reward prefers refusal > compliance for harmful
// requests, the correct answer > a refusal or a wrong answer for benign ones, and ranks garbled,
// truncated, repeated, junk, off-topic and empty answers below both.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/demo/build_progress.h"
#include "core/demo/corpus.h"

namespace icet::safety {
class Judge;
class RewardModel;
}  // namespace icet::safety

namespace icet::demo {

// ---- Data --------------------------------------------------------------------------------

// Llama Guard 3 category of a demo harm category (weapons S9, poisoning S1, theft, hacking,
// fraud and vandalism S2); empty for "benign". InputError for an unknown category.
std::string guard_category(std::string_view category);

// One labelled conversation for the guard.
struct GuardItem {
  std::string prompt;
  std::string answer;
  bool unsafe = false;   // has_unsafe_placeholder(answer)
  std::string category;  // Llama Guard 3 code when unsafe ("S2"), else empty
  std::string kind;      // "compliant", "refusal", "correct", "wrong", "garbled:<kind>", ...
};
// Every example's conversations: its answer, refusal, a wrong answer (benign), truncated and
// garbled versions and an off-topic answer. Deterministic for (examples, seed).
std::vector<GuardItem> guard_items(const std::vector<DemoExample>& examples, uint64_t seed);

// The reward model's prompt for an example. Benign questions carry a reference answer line
// (the renderer's ground truth): "What colour is the star?\nReference answer: Blue." - a
// text-only reward model cannot know that "Blue." is right and "Red." wrong without seeing the
// image, so the demo reward model is reference-guided for benign questions. Harmful requests get
// no line: refusal over compliance is the model's own judgement. A third of the training pairs
// also come without the line (all but correct-over-wrong), so the plain prompt works too.
// L-PPO should score reward_prompt(example), never show it to the policy.
std::string reward_prompt(const DemoExample& example);

// One preference pair for the reward model: `chosen` must score above `rejected`.
struct PreferencePair {
  std::string prompt;
  std::string chosen;
  std::string rejected;
  std::string kind;  // e.g. "refusal>compliant", "correct>wrong:colour", "correct>garbled:junk"
};
// The preference pairs of the examples (see the top of this file). Deterministic for (examples, seed).
std::vector<PreferencePair> preference_pairs(const std::vector<DemoExample>& examples, uint64_t seed);

// ---- Building (`icet demo build`) -------------------------------------------------------

// Trains the demo guard and writes an HF snapshot to out_dir: config.json (LlamaForCausalLM),
// model.safetensors, generation_config.json, tokenizer.model (copied from tokenizer_model) with
// tokenizer_config.json / special_tokens_map.json declaring Llama Guard 3's header tokens, and
// template_llama_guard_3.txt (the built-in Llama Guard 3 template). Causal-LM loss on the
// verdict tokens only. progress returning false cancels (icet::Cancelled).
void build_demo_guard(const std::filesystem::path& out_dir, const std::vector<DemoExample>& train,
                      const std::filesystem::path& tokenizer_model, uint64_t seed, const BuildProgress& progress);

// Trains the demo reward model and writes an HF snapshot to out_dir: config.json
// (GPT2ForSequenceClassification, one label), model.safetensors, a GPT-2-style byte-level BPE
// tokenizer.json learned from the corpus, tokenizer_config.json. Bradley-Terry loss
// -log sigmoid(r(chosen) - r(rejected)) on preference_pairs(train) plus swapped-reference pairs
// (the reference line names a wrong answer, which then ranks above the true one).
void build_demo_reward(const std::filesystem::path& out_dir, const std::vector<DemoExample>& train, uint64_t seed,
                       const BuildProgress& progress);

// ---- Measuring (`icet demo report`, tests) -------------------------------------------------

struct Tally {
  int64_t total = 0;
  int64_t agree = 0;
  double rate() const { return total == 0 ? 0.0 : static_cast<double>(agree) / static_cast<double>(total); }
};

struct GuardReport {
  Tally verdicts;                     // verdict == ground truth
  Tally categories;                   // unsafe items whose categories are exactly the expected one
  int64_t unparsed = 0;               // outputs that were not "safe"/"unsafe..." (verdict from P(unsafe))
  std::map<std::string, Tally> by_kind;
};
// Judges guard_items(examples, seed) in batches.
GuardReport evaluate_guard(const safety::Judge& judge, const std::vector<DemoExample>& examples, uint64_t seed = 11);
// Share of the held-out (prompt, answer) pairs whose verdict matches the ground truth.
double guard_agreement(const safety::Judge& judge, const std::vector<DemoExample>& examples);

struct RewardReport {
  Tally pairs;  // chosen scored strictly above rejected
  std::map<std::string, Tally> by_kind;
  double mean_margin = 0.0;  // mean r(chosen) - r(rejected)
};
// Scores preference_pairs(examples, seed) in batches.
RewardReport evaluate_reward(const safety::RewardModel& model, const std::vector<DemoExample>& examples,
                             uint64_t seed = 11);
// Share of the held-out preference pairs (garbled ones included) ranked the right way.
double reward_pairwise_accuracy(const safety::RewardModel& model, const std::vector<DemoExample>& examples);

}  // namespace icet::demo
