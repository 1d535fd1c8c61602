#include "core/demo/commands.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/demo/judges.h"
#include "core/demo/paths.h"
#include "core/demo/scene.h"
#include "core/demo/vlm_builder.h"
#include "core/engine/session.h"
#include "core/eval/run.h"
#include "core/safety/judge_factory.h"
#include "core/safety/reward_model.h"
#include "core/vision/image.h"

namespace icet::demo {
namespace {

namespace fs = std::filesystem;

// Examples the demo judges train on and are measured on (models/demo/README.md).
constexpr size_t kJudgeTrainItems = 3000;
constexpr size_t kJudgeHeldOutItems = 300;

void write_bytes(const fs::path& file, const std::vector<uint8_t>& bytes) {
  std::ofstream out(file, std::ios::binary);
  if (!out) throw EnvironmentError(file.string() + ": cannot write");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

std::vector<eval::PromptItem> write_demo_set(const fs::path& file, const std::vector<DemoExample>& examples) {
  const fs::path images = file.parent_path() / "images";
  fs::create_directories(images);
  std::vector<eval::PromptItem> items;
  for (const auto& ex : examples) {
    const std::string rel = "images/" + ex.id + ".png";
    write_bytes(file.parent_path() / rel, vision::encode_png(render_scene(ex.scene_seed).image));
    eval::PromptItem it;
    it.id = ex.id;
    it.image = rel;
    it.prompt = ex.prompt;
    it.category = ex.category;
    it.harmful = ex.harmful;
    it.expected = ex.harmful ? "" : ex.answer;
    it.refusal = ex.refusal;
    if (ex.harmful) it.compliant = ex.answer;
    it.task = ex.task;
    items.push_back(std::move(it));
  }
  eval::write_prompt_set(file, items);
  return items;
}

nlohmann::json run_demo_build(const DemoBuildOptions& options, const BuildProgress& progress) {
  static const std::vector<std::string> kParts{"sets", "vlm", "guard", "reward"};
  for (const auto& p : options.only) {
    if (std::find(kParts.begin(), kParts.end(), p) == kParts.end()) {
      throw InputError(describe("demo build part", "one of sets, vlm, guard, reward", "\"" + p + "\""));
    }
  }
  auto wanted = [&](const std::string& part) {
    return options.only.empty() || std::find(options.only.begin(), options.only.end(), part) != options.only.end();
  };
  const auto start = std::chrono::steady_clock::now();
  const fs::path out = options.out;
  fs::create_directories(out);
  // A partial build updates the previous record, so build.json keeps describing every part.
  nlohmann::json record = nlohmann::json::object();
  if (!options.only.empty() && fs::exists(out / "build.json")) {
    try {
      record = json_util::read_file(out / "build.json");
    } catch (const InputError&) {
      record = nlohmann::json::object();  // damaged: rewritten whole below
    }
    if (!record.is_object()) record = nlohmann::json::object();
  }
  record["seed"] = options.seed;
  record["scale"] = options.scale;

  // Prompt sets first: they are cheap and the VLM's check uses the held-out one.
  const fs::path sets = out / "sets";
  if (wanted("sets")) {
    fs::create_directories(sets);
    write_demo_set(sets / "train.jsonl", make_examples(Split::Train, options.train_items, options.seed));
    write_demo_set(sets / "heldout.jsonl", make_examples(Split::HeldOut, options.heldout_items, options.seed));
  }

  if (wanted("vlm")) {
    VlmRecipe recipe;
    recipe.seed = options.seed;
    if (options.scale != 1.0) recipe = scaled(recipe, options.scale);
    recipe.vision_from = options.vision_from;
    record["vlm"] = build_demo_vlm(out / "vlm", recipe, progress);
  }

  // The demo judges learn from the same world (the guard shares the VLM's tokenizer).
  const std::vector<DemoExample> judge_train = make_examples(Split::Train, kJudgeTrainItems, options.seed);
  auto timed = [](const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  if (wanted("guard")) {
    const fs::path tokenizer_model = out / "vlm" / "tokenizer.model";
    if (!fs::exists(tokenizer_model)) {
      throw InputError(describe(tokenizer_model.string(), "the demo VLM's tokenizer (build the vlm part first)", "missing"));
    }
    record["guard_seconds"] =
        timed([&] { build_demo_guard(out / "guard", judge_train, tokenizer_model, options.seed, progress); });
  }
  if (wanted("reward")) {
    record["reward_seconds"] = timed([&] { build_demo_reward(out / "reward", judge_train, options.seed, progress); });
  }

  // The held-out check at every layer, judged by the placeholder rule (the report uses the
  // demo guard).
  if (wanted("vlm") || wanted("sets")) {
    auto session = engine::Session::open(out / "vlm", {"cpu", "float32"});
    const auto set = eval::load_prompt_set(sets / "heldout.jsonl");
    safety::PlaceholderJudge judge;
    eval::EvalPlan plan;
    plan.metrics.resamples = 0;  // a build check: no intervals
    const auto outcome = eval::run_evaluation({session.get(), &judge, nullptr}, set, plan, {""}, [&](const eval::EvalProgress& p) {
      return !progress || progress({"eval", static_cast<int64_t>(p.done), static_cast<int64_t>(p.total), 0.0, 0.0});
    });
    record["heldout"] = eval::eval_summary_json(outcome);
  }
  record["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ofstream(out / "build.json") << record.dump(2) << "\n";
  return record;
}

nlohmann::json run_demo_report(const DemoReportOptions& options, const std::function<bool(size_t, size_t)>& progress) {
  const fs::path dir = options.demo_dir.empty() ? demo_root() : options.demo_dir;
  auto session = engine::Session::open(dir / "vlm", {"cpu", "float32"});
  const auto set = eval::load_prompt_set(dir / "sets" / "heldout.jsonl");

  const std::unique_ptr<safety::Judge> guard =
      safety::load_judge(safety::judge_beside(dir / "vlm").value_or("placeholder"));
  std::unique_ptr<safety::RewardModel> reward;
  if (fs::exists(dir / "reward" / "config.json")) reward = safety::RewardModel::load(dir / "reward");
  // The path `icet eval` takes (core/eval/run.h), with the demo's judge and reward model.
  eval::EvalPlan plan;
  plan.layers = options.layers;
  plan.limit = options.limit;
  plan.out = options.out;
  const auto outcome = eval::run_evaluation({session.get(), guard.get(), reward.get()}, set, plan, {""},
                                            [&](const eval::EvalProgress& p) { return !progress || progress(p.done, p.total); });
  nlohmann::json j = eval::eval_summary_json(outcome);

  // The judges against the ground truth of held-out examples of the same world (the seed the
  // committed models were built with).
  uint64_t seed = 1;
  if (fs::exists(dir / "build.json")) {
    nlohmann::json record;
    try {
      record = json_util::read_file(dir / "build.json");
    } catch (const InputError&) {
      record = nullptr;  // damaged: the default seed
    }
    if (record.is_object() && record.contains("seed") && record["seed"].is_number_unsigned()) seed = record["seed"].get<uint64_t>();
  }
  const std::vector<DemoExample> heldout =
      make_examples(Split::HeldOut, options.limit ? options.limit : kJudgeHeldOutItems, seed);
  j["guard_agreement"] = nullptr;
  j["reward_pairwise_accuracy"] = nullptr;
  if (fs::exists(dir / "guard" / "config.json")) j["guard_agreement"] = guard_agreement(*guard, heldout);
  if (fs::exists(dir / "reward" / "config.json")) {
    j["reward_pairwise_accuracy"] = reward_pairwise_accuracy(*reward, heldout);
  }
  j["demo_dir"] = dir.string();
  return j;
}

}  // namespace icet::demo
