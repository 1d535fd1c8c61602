#pragma once

// Entry points of `icet demo build` and `icet demo report`. Each returns a JSON object the CLI
// prints; errors are icet::InputError naming the folder or file.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/demo/build_progress.h"
#include "core/demo/corpus.h"
#include "core/eval/prompt_set.h"

namespace icet::demo {

struct DemoBuildOptions {
  std::filesystem::path out;  // e.g. models/demo
  uint64_t seed = 1;
  double scale = 1.0;         // step-count factor (tests use a small one)
  size_t train_items = 240;   // sets/train.jsonl
  size_t heldout_items = 240; // sets/heldout.jsonl
  // Parts to (re)build, any of "sets", "vlm", "guard", "reward"; empty: all. Parts left out
  // keep their files and their entries in build.json (the guard needs vlm/tokenizer.model).
  std::vector<std::string> only;
  // A demo VLM snapshot whose vision tower the vlm part reuses (skips its first stage); empty: train one.
  std::filesystem::path vision_from;
};

// Builds vlm/, guard/, reward/, sets/ and build.json under options.out.
// -> the build record written to build.json.
nlohmann::json run_demo_build(const DemoBuildOptions& options, const BuildProgress& progress = {});

// Writes `examples` as a prompt set `file` with its images under <folder>/images/<id>.png.
std::vector<eval::PromptItem> write_demo_set(const std::filesystem::path& file, const std::vector<DemoExample>& examples);

struct DemoReportOptions {
  std::filesystem::path demo_dir;  // empty: demo_root()
  std::string layers = "all";
  size_t limit = 0;                // 0: every held-out item
  std::optional<std::filesystem::path> out;  // also write the evaluation folder (core/eval/run.h)
};

// The held-out report: eval::run_evaluation over sets/heldout.jsonl with the demo guard (else
// the placeholder rule; judge_id says which) and the demo reward model, as eval_summary_json
// ({"default_layer", "benign_accuracy", "asr_by_layer", "refusal_by_layer", "reward_by_layer",
// "benign_accuracy_by_layer", "task_accuracy_by_layer", "runs" with 95% intervals, ...}), plus
// "guard_agreement", "reward_pairwise_accuracy" (null without the judges) and "demo_dir".
nlohmann::json run_demo_report(const DemoReportOptions& options,
                               const std::function<bool(size_t, size_t)>& progress = {});

}  // namespace icet::demo
