// L-PPO / SFT training runs. One step reads like the algorithm:
//   collect_rollouts -> score -> compute_advantages -> update_policy   (L-PPO)
//   sample_targets -> cross-entropy update                             (SFT)
// Randomness is counter-based: every step draws from generators seeded by (seed, step, stream),
// and the data order by (seed, epoch), so a checkpoint only needs the step and the data cursor
// to continue the identical run.
#include "core/rl/trainer.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <utility>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/folder_lock.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/eval/prompt_set.h"
#include "core/generate/sampling.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/models/lora.h"
#include "core/rl/memory.h"
#include "core/rl/policy.h"
#include "core/runtime/device.h"
#include "core/rl/ppo.h"
#include "core/safety/judge_factory.h"
#include "core/safety/refusal.h"
#include "core/safety/reward_model.h"

namespace icet::rl {
namespace {

using Clock = std::chrono::steady_clock;
const char* kLmPrefix = "language_model.";

// splitmix64 of (seed, a, b): independent stream seeds.
uint64_t mix(uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t z = seed ^ (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xBF58476D1CE4E5B9ULL + 0x94D049BB133111EBULL);
  for (int i = 0; i < 2; ++i) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
  }
  return z;
}
enum Stream : uint64_t { kRollout = 1, kShuffle = 2, kDropout = 3, kLayers = 4, kEpoch = 5, kBenignLayers = 6 };

double item(const at::Tensor& t) { return t.item<double>(); }

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

void append_line(const std::filesystem::path& file, const nlohmann::json& j) {
  std::ofstream out(file, std::ios::app);
  out << j.dump() << "\n";
  out.flush();
  if (!out) throw EnvironmentError(describe(file.string(), "a writable log file", "a write error"));
}

// Keeps the lines of a JSONL log whose "step" is <= step (the rest belong to steps a resumed
// run will redo).
void truncate_log(const std::filesystem::path& file, int64_t step) {
  if (!std::filesystem::exists(file)) return;
  std::ifstream in(file);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      const auto j = json_util::parse(line, file.string());
      if (j.value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const std::exception&) {
      break;  // a torn last line from a killed process
    }
  }
  write_file_atomic(file, kept);
}

bool finite(double v) { return std::isfinite(v); }

// Every layer a config names exists in the model (InputError naming `source` and the key).
void check_layers(const LppoConfig& config, int64_t n_layers, const std::string& source) {
  for (const auto& [key, layers] : {std::pair{"layers", &config.layers}, std::pair{"eval_layers", &config.eval_layers},
                                    std::pair{"benign_layers", &config.benign_layers}}) {
    for (int64_t l : *layers) {
      if (l > n_layers) {
        throw InputError(describe(source + ": key '" + key + "'",
                                  "exit layers 1.." + std::to_string(n_layers) + " of " + config.model.string(),
                                  std::to_string(l)));
      }
    }
  }
}

}  // namespace

std::vector<int64_t> open_layers(const LppoConfig& config, int64_t step, int64_t model_layers, int64_t default_layer) {
  if (config.layer_schedule == "random") {
    std::vector<int64_t> all;
    for (int64_t l = 1; l <= model_layers; ++l) all.push_back(l);
    return all;
  }
  if (config.layers.empty()) return {default_layer};
  if (config.layer_schedule != "curriculum" || config.curriculum_steps <= 1) return config.layers;
  // Linear from curriculum_start open layers at step 1 to all at curriculum_steps.
  const auto n = static_cast<int64_t>(config.layers.size());
  const int64_t start = std::min(config.curriculum_start, n);
  const double t = std::clamp(static_cast<double>(step - 1) / static_cast<double>(config.curriculum_steps - 1), 0.0, 1.0);
  const auto open = start + static_cast<int64_t>(std::floor(t * static_cast<double>(n - start) + 1e-9));
  return {config.layers.begin(), config.layers.begin() + std::min(open, n)};
}

nlohmann::json to_json(const MetricsRow& row) {
  nlohmann::json j = {{"step", row.step}, {"seconds", row.seconds}};
  for (const auto& [k, v] : row.values) j[k] = v;
  return j;
}

nlohmann::json to_json(const RolloutSample& s) {
  return {{"step", s.step}, {"layer", s.layer}, {"image", s.image}, {"prompt", s.prompt}, {"answer", s.answer},
          {"reward", s.reward}};
}

nlohmann::json to_json(const EvalPoint& p) {
  nlohmann::json asr = nlohmann::json::object(), ref = nlohmann::json::object();
  for (const auto& [l, v] : p.asr_by_layer) asr[std::to_string(l)] = v;
  for (const auto& [l, v] : p.refusal_by_layer) ref[std::to_string(l)] = v;
  return {{"step", p.step}, {"asr_by_layer", asr}, {"refusal_by_layer", ref}, {"benign_accuracy", p.benign_accuracy}};
}

std::filesystem::path latest_checkpoint(const std::filesystem::path& run_dir) {
  const auto dir = run_dir / "checkpoints";
  std::filesystem::path best;
  if (!std::filesystem::is_directory(dir)) return best;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || !std::filesystem::is_regular_file(e.path() / "state.json")) continue;
    if (best.empty() || name > best.filename().string()) best = e.path();
  }
  return best;
}

void export_metrics_csv(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& csv) {
  std::ifstream in(metrics_jsonl);
  if (!in) throw InputError(describe(metrics_jsonl.string(), "a metrics.jsonl file", "no readable file"));
  std::vector<nlohmann::json> rows;
  std::set<std::string> keys;
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    rows.push_back(json_util::parse(line, metrics_jsonl.string() + ":" + std::to_string(n)));
    for (const auto& [k, v] : rows.back().items()) {
      if (k != "step" && k != "seconds") keys.insert(k);
    }
  }
  std::ostringstream out;
  out.precision(17);
  out << "step,seconds";
  for (const auto& k : keys) out << "," << k;
  out << "\n";
  for (const auto& r : rows) {
    out << r.value("step", int64_t{0}) << "," << r.value("seconds", 0.0);
    for (const auto& k : keys) {
      out << ",";
      if (r.contains(k) && r[k].is_number()) out << r[k].get<double>();
    }
    out << "\n";
  }
  write_file_atomic(csv, out.str());
}

struct TrainingRun::Impl {
  // One trainer per run folder: held from create/resume until run() returns, so a stopped run
  // kept for display (the app's job list) does not block resuming it elsewhere.
  std::optional<FolderLock> folder_lock;
  LppoConfig config;
  std::filesystem::path dir;
  int64_t max_steps = 0;
  std::atomic<int64_t> step{0};

  // Buffers drained by the GUI.
  std::mutex mutex;
  std::vector<MetricsRow> metrics;
  std::vector<RolloutSample> samples;
  std::vector<EvalPoint> evals;
  std::optional<MemoryEstimate> memory_estimate;  // set by load()

  // Models (loaded by run()).
  std::unique_ptr<Policy> policy;
  std::unique_ptr<safety::RewardModel> reward;
  std::unique_ptr<safety::Judge> judge;
  eval::PromptSet train, held_out;
  models::LoraSet lora;
  at::Tensor v_w, v_b;  // value head [1,H], [1]
  std::vector<at::Tensor> params;  // LoRA A/B ..., then v_w, v_b
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  int64_t adam_step = 0;
  at::Generator dropout_gen;

  // Run state (saved in state.json).
  double kl_coef = 0;
  int64_t episode = 0;
  double seconds_before = 0;  // wall time of earlier processes
  int64_t last_checkpoint = -1;
  bool evaluated_at_start = false;

  Clock::time_point started;
  double step_seconds_avg = 0;
  TrainProgress last;

  double seconds_now() const { return seconds_before + std::chrono::duration<double>(Clock::now() - started).count(); }

  // ---- setup ------------------------------------------------------------------------------

  void load(const std::function<void(const TrainProgress&)>& progress) {
    report(progress, "loading");
    // Refused before gigabytes are loaded when it cannot fit (an estimate, with the numbers).
    const MemoryEstimate memory = estimate_training_memory(config);
    log::get("rl")->info("memory: {}", memory_summary(memory));
    {
      std::lock_guard lock(mutex);
      memory_estimate = memory;
    }
    require_fits(memory);
    policy = std::make_unique<Policy>(config.model, PolicyOptions{config.device, config.dtype});
    policy->lm().set_gradient_checkpointing(config.gradient_checkpointing);
    // The judge and reward model follow the policy's device and dtype.
    const std::string device = policy->device().str(), dtype = runtime::dtype_name(policy->dtype());
    check_layers(config, policy->vision_layers(), (dir / "config.json").string());
    train = eval::load_prompt_set(config.train_set);
    if (config.train_items == "harmful") {
      std::erase_if(train.items, [](const eval::PromptItem& it) { return !it.harmful; });
    }
    if (train.items.empty()) throw InputError(describe(config.train_set.string(), "at least one prompt", "none"));
    if (!config.eval_set.empty()) held_out = eval::load_prompt_set(config.eval_set);
    if (config.method == "lppo" && config.reward_kind != "judge") {
      reward = safety::load_reward_model(config.reward_model, device, dtype);
    }
    if (!config.judge.empty() && (config.eval_every > 0 || (config.method == "lppo" && config.reward_kind != "reward_model"))) {
      judge = safety::load_judge(config.judge, device, dtype);
    }
    at::Generator init = generate::make_generator(mix(config.seed, 0, 0));
    models::LoraConfig lc;
    lc.r = config.lora_r;
    lc.alpha = config.lora_alpha;
    lc.dropout = config.lora_dropout;
    lc.targets = config.lora_targets;
    lc.base_model = config.model.string();
    lora = models::LoraSet::create(policy->lm(), lc, init);
    dropout_gen = generate::make_generator(mix(config.seed, 0, kDropout));
    lora.generator = &dropout_gen;
    policy->lm().set_adapters(&lora);
    const int64_t H = policy->hidden_size();
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(policy->device());  // trained in float32
    v_w = at::zeros({1, H}, f32);
    v_b = at::zeros({1}, f32);
    v_w.set_requires_grad(true);
    v_b.set_requires_grad(true);
    params = lora.parameters();
    params.push_back(v_w);
    params.push_back(v_b);
    for (const auto& p : params) {
      exp_avg.push_back(at::zeros_like(p).detach());
      exp_avg_sq.push_back(at::zeros_like(p).detach());
    }
    kl_coef = config.kl_coef;
  }

  // ---- checkpoints --------------------------------------------------------------------------

  void save_checkpoint(int64_t at_step) {
    const auto root = dir / "checkpoints";
    std::filesystem::create_directories(root);
    const auto final_dir = root / step_dir_name(at_step);
    const auto tmp = root / (".tmp-" + step_dir_name(at_step));
    std::filesystem::remove_all(tmp);
    std::filesystem::create_directories(tmp);
    models::save_peft_adapter(lora, tmp, kLmPrefix);
    io::save_safetensors(tmp / "value_head.safetensors",
                         {{"v_head.summary.weight", v_w.detach().clone()}, {"v_head.summary.bias", v_b.detach().clone()}});
    std::vector<std::pair<std::string, at::Tensor>> opt;
    for (size_t i = 0; i < params.size(); ++i) {
      opt.emplace_back("exp_avg." + std::to_string(i), exp_avg[i].clone());
      opt.emplace_back("exp_avg_sq." + std::to_string(i), exp_avg_sq[i].clone());
    }
    io::save_safetensors(tmp / "optimizer.safetensors", opt);
    // Test hook (tests/unit/test_cli_train.cpp): die by SIGKILL halfway through this
    // checkpoint's write, as a crash or `kill -9` would.
    if (const char* k = std::getenv("ICET_TEST_KILL_IN_CHECKPOINT"); k != nullptr && std::atoll(k) == at_step) {
      std::raise(SIGKILL);
    }
    const nlohmann::json state = {
        {"step", at_step},
        {"episode", episode},
        {"kl_coef", kl_coef},
        {"adam_step", adam_step},
        {"data_cursor", at_step * config.batch_size},
        {"seconds", seconds_now()},
        {"evaluated_at_start", evaluated_at_start},
        // Counter-based RNG: stream seeds are splitmix64(seed, step, stream); nothing else to keep.
        {"rng", {{"scheme", "splitmix64(seed, step, stream)"}, {"seed", config.seed}}},
        {"method", config.method}};
    write_file_atomic(tmp / "state.json", state.dump(2) + "\n");  // written last: marks the folder complete
    fsync_path(tmp);
    replace_folder(tmp, final_dir);  // a redone step (after a kill) swaps out its torn folder
    // The latest adapter, for loading into the engine: swapped in whole, so adapter/ always
    // holds a complete adapter once the first checkpoint is written.
    const auto adapter_tmp = dir / ".adapter.tmp";
    std::filesystem::remove_all(adapter_tmp);
    models::save_peft_adapter(lora, adapter_tmp, kLmPrefix);
    fsync_path(adapter_tmp);
    replace_folder(adapter_tmp, dir / "adapter");
    // Keep the last K.
    std::vector<std::filesystem::path> all;
    for (const auto& e : std::filesystem::directory_iterator(root)) {
      if (e.path().filename().string().rfind("step-", 0) == 0) all.push_back(e.path());
    }
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i + static_cast<size_t>(config.keep_last) < all.size(); ++i) std::filesystem::remove_all(all[i]);
    last_checkpoint = at_step;
  }

  void restore(const std::filesystem::path& ckpt) {
    const auto state = json_util::read_file(ckpt / "state.json");
    const json_util::Reader r(state, (ckpt / "state.json").string());
    at::NoGradGuard no_grad;
    models::LoraSet loaded = models::load_peft_adapter(ckpt, policy->lm(), kLmPrefix, true);
    const auto fresh = lora.parameters();
    const auto got = loaded.parameters();
    if (fresh.size() != got.size()) {
      throw InputError(describe((ckpt / "adapter_model.safetensors").string(), std::to_string(fresh.size()) + " LoRA tensors",
                                std::to_string(got.size())));
    }
    for (size_t i = 0; i < fresh.size(); ++i) fresh[i].copy_(got[i]);
    const auto vh = io::SafetensorsFile::open(ckpt / "value_head.safetensors");
    v_w.copy_(vh->tensor("v_head.summary.weight"));
    v_b.copy_(vh->tensor("v_head.summary.bias"));
    const auto opt = io::SafetensorsFile::open(ckpt / "optimizer.safetensors");
    for (size_t i = 0; i < params.size(); ++i) {
      exp_avg[i].copy_(opt->tensor("exp_avg." + std::to_string(i)));
      exp_avg_sq[i].copy_(opt->tensor("exp_avg_sq." + std::to_string(i)));
    }
    step = r.integer("step");
    episode = r.integer("episode");
    kl_coef = r.number("kl_coef");
    adam_step = r.integer("adam_step");
    seconds_before = r.number("seconds");
    evaluated_at_start = r.boolean("evaluated_at_start", false);
    last_checkpoint = step;
    log::get("rl")->info("resumed {} at step {}", dir.string(), step.load());
  }

  // ---- optimizer --------------------------------------------------------------------------

  double clip_and_step(double lr) {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> norms;
    for (const auto& p : params) {
      if (p.grad().defined()) norms.push_back(p.grad().pow(2).sum());
    }
    const double total = norms.empty() ? 0.0 : std::sqrt(item(at::stack(norms).sum()));
    if (!finite(total)) {
      throw Error("step " + std::to_string(step.load() + 1) +
                  ": the gradient norm is not finite (NaN/inf); training stopped, the last good checkpoint is kept");
    }
    const double clip = config.max_grad_norm > 0 && total > config.max_grad_norm ? config.max_grad_norm / (total + 1e-6) : 1.0;
    ++adam_step;
    const double b1 = config.adam_beta1, b2 = config.adam_beta2;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(adam_step));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(adam_step));
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor p = params[i];
      if (!p.grad().defined()) continue;
      const double plr = i + 2 >= params.size() ? lr * config.value_head_lr_scale : lr;
      const at::Tensor g = p.grad() * clip;
      // torch.optim.AdamW: decoupled weight decay, then Adam with bias correction.
      if (config.weight_decay > 0) p.mul_(1.0 - plr * config.weight_decay);
      exp_avg[i].mul_(b1).add_(g, 1.0 - b1);
      exp_avg_sq[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
      const at::Tensor denom = (exp_avg_sq[i].sqrt() / std::sqrt(bc2)).add_(config.adam_eps);
      p.addcdiv_(exp_avg[i], denom, -plr / bc1);
      p.mutable_grad() = at::Tensor();
    }
    return total;
  }

  void zero_grad() {
    for (auto& p : params) {
      if (p.grad().defined()) p.mutable_grad() = at::Tensor();
    }
  }

  // Snapshot of everything an update changes, so a cancel inside an update leaves step k intact.
  struct Snapshot {
    std::vector<at::Tensor> params, m, v;
    int64_t adam_step = 0;
  };
  Snapshot snapshot() const {
    at::NoGradGuard no_grad;
    Snapshot s;
    for (size_t i = 0; i < params.size(); ++i) {
      s.params.push_back(params[i].detach().clone());
      s.m.push_back(exp_avg[i].clone());
      s.v.push_back(exp_avg_sq[i].clone());
    }
    s.adam_step = adam_step;
    return s;
  }
  void restore(const Snapshot& s) {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].copy_(s.params[i]);
      exp_avg[i].copy_(s.m[i]);
      exp_avg_sq[i].copy_(s.v[i]);
    }
    adam_step = s.adam_step;
    zero_grad();
  }

  // ---- data -------------------------------------------------------------------------------

  // The training item at global position g (epoch-wise shuffled, seeded per epoch).
  std::vector<size_t> epoch_order_cache;
  int64_t epoch_cached = -1;
  const eval::PromptItem& item_at(int64_t g) {
    const int64_t n = static_cast<int64_t>(train.items.size());
    const int64_t epoch = g / n;
    if (epoch != epoch_cached) {
      epoch_order_cache.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) epoch_order_cache[static_cast<size_t>(i)] = static_cast<size_t>(i);
      std::mt19937_64 rng(mix(config.seed, static_cast<uint64_t>(epoch), kEpoch));
      // Fisher-Yates with our own draws (std::shuffle's algorithm is implementation-defined).
      for (int64_t i = n - 1; i > 0; --i) {
        const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
        std::swap(epoch_order_cache[static_cast<size_t>(i)], epoch_order_cache[static_cast<size_t>(j)]);
      }
      epoch_cached = epoch;
    }
    return train.items[epoch_order_cache[static_cast<size_t>(g % n)]];
  }

  std::vector<int64_t> schedule_layers() const {
    return open_layers(config, config.max_steps, policy->vision_layers(), policy->default_layer());
  }

  // Exit layer of rollout i of step s.
  std::vector<int64_t> layers_for_step(int64_t s) const {
    const auto layers = open_layers(config, s, policy->vision_layers(), policy->default_layer());
    const auto n = static_cast<uint64_t>(layers.size());
    std::vector<int64_t> out;
    std::mt19937_64 rng(mix(config.seed, static_cast<uint64_t>(s), kLayers));
    for (int64_t i = 0; i < config.batch_size; ++i) {
      if (config.layer_schedule == "cycle") {
        out.push_back(layers[static_cast<size_t>((static_cast<uint64_t>((s - 1) * config.batch_size + i)) % n)]);
      } else {
        out.push_back(layers[static_cast<size_t>(rng() % n)]);  // "fixed" has one layer
      }
    }
    return out;
  }

  // ---- one step ---------------------------------------------------------------------------

  struct StepInputs {
    std::vector<const eval::PromptItem*> items;
    std::vector<int64_t> layers;
    std::vector<at::Tensor> prompts;  // [T_i, H]
  };
  StepInputs inputs_for(int64_t s) {
    // Step s's dropout stream (the generator object stays, lora.generator points at it).
    dropout_gen = generate::make_generator(mix(config.seed, static_cast<uint64_t>(s), kDropout));
    StepInputs in;
    in.layers = layers_for_step(s);
    std::mt19937_64 benign_rng(mix(config.seed, static_cast<uint64_t>(s), kBenignLayers));
    for (int64_t i = 0; i < config.batch_size; ++i) {
      const auto& it = item_at((s - 1) * config.batch_size + i);
      in.items.push_back(&it);
      if (!it.harmful && !config.benign_layers.empty()) {
        in.layers[static_cast<size_t>(i)] =
            config.benign_layers[static_cast<size_t>(benign_rng() % config.benign_layers.size())];
      }
      in.prompts.push_back(policy->prompt_embeds(policy->prompt_ids(it.prompt),
                                                 policy->features(train.image_path(it), in.layers[static_cast<size_t>(i)])));
    }
    return in;
  }

  std::vector<double> scores_for(const StepInputs& in, const std::vector<std::string>& answers,
                                 const std::vector<bool>& ended) {
    const size_t B = answers.size();
    std::vector<double> rm(B, 0.0), pu(B, 0.0);
    if (reward) {
      std::vector<safety::ScoredPair> pairs;
      for (size_t i = 0; i < B; ++i) {
        const eval::PromptItem& item = *in.items[i];
        pairs.push_back({safety::reward_prompt(item.prompt, config.reward_reference ? item.expected : std::string()),
                         answers[i]});
      }
      rm = reward->score(pairs);
    }
    if (config.reward_kind != "reward_model") {
      std::vector<safety::Conversation> conv;
      for (size_t i = 0; i < B; ++i) conv.push_back({in.items[i]->prompt, answers[i]});
      const auto verdicts = judge->judge(conv);
      for (size_t i = 0; i < B; ++i) pu[i] = verdicts[i].p_unsafe;
    }
    std::vector<double> out(B);
    for (size_t i = 0; i < B; ++i) {
      double s = config.reward_kind == "reward_model" ? rm[i]
                 : config.reward_kind == "judge"      ? -pu[i]
                                                      : rm[i] - config.judge_weight * pu[i];
      s *= config.reward_scale;
      if (config.reward_clip > 0) s = std::clamp(s, -config.reward_clip, config.reward_clip);
      if (!ended[i]) s -= config.missing_eos_penalty;
      // The bonus goes to a proper refusal only (the set's own refusal when it has one): a
      // lenient match ("Sorry, I cannot cannot ...") would pay the policy for drifting around it.
      const eval::PromptItem& item = *in.items[i];
      if (config.refusal_bonus != 0 && item.harmful && safety::is_proper_refusal(answers[i], item.refusal)) {
        s += config.refusal_bonus;
      }
      if (config.answer_bonus != 0 && !item.harmful && matches_expected(answers[i], item.expected)) s += config.answer_bonus;
      if (!finite(s)) {
        throw Error("step " + std::to_string(step.load() + 1) + ": the reward of rollout " + std::to_string(i) +
                    " is not finite (NaN/inf); training stopped, the last good checkpoint is kept");
      }
      out[i] = s;
    }
    return out;
  }

  // Values: [B,R,H] -> [B,R]. The head reads the policy's last hidden state; its gradient does
  // not flow into the adapters (a separate value objective must not move the policy).
  at::Tensor values_of(const at::Tensor& hidden) const {
    return (hidden.detach().to(at::kFloat).matmul(v_w.t()) + v_b).squeeze(-1);
  }

  // Returns false when cancelled (state then equals the end of step s - 1).
  bool lppo_step(int64_t s, const std::atomic<bool>* cancel, const std::function<void(const TrainProgress&)>& progress,
                 MetricsRow& row) {
    const auto t0 = Clock::now();
    report(progress, "rollouts");
    StepInputs in = inputs_for(s);
    // One seed per rollout (the lab's per-answer seed): row i is what the lab answers with it.
    std::vector<uint64_t> seeds;
    for (size_t i = 0; i < in.items.size(); ++i) seeds.push_back(mix(config.seed, static_cast<uint64_t>(s), kRollout + 64 * (i + 1)));
    SampleSettings ss;
    ss.temperature = config.temperature;
    ss.top_p = config.top_p;
    ss.top_k = config.top_k;
    ss.max_new_tokens = config.max_new_tokens;
    lora.training = false;
    Generated g;
    try {
      g = policy->generate(in.prompts, ss, seeds, cancel);
    } catch (const Cancelled&) {
      return false;
    }
    std::vector<std::string> answers;
    for (const auto& t : g.tokens) answers.push_back(policy->decode(t));
    const std::vector<double> score_v = scores_for(in, answers, g.ended);
    const double rollout_s = std::chrono::duration<double>(Clock::now() - t0).count();

    const auto t1 = Clock::now();
    report(progress, "update");
    const RolloutBatch batch = policy->make_batch(in.prompts, g.tokens);
    const at::Tensor mask = batch.mask;  // [B,R]
    const int64_t B = mask.size(0);
    at::Tensor old_logp, ref_logp, old_values, entropy;
    {
      at::NoGradGuard no_grad;
      const at::Tensor h = policy->response_hidden(batch);                                    // [B,R,H]
      const at::Tensor logits = policy->lm().logits(h) / config.temperature;                  // [B,R,V]
      old_logp = token_logprobs(logits, batch.tokens) * mask;
      entropy = entropy_from_logits(logits);
      old_values = values_of(h) * mask;
      lora.enabled = false;  // the reference policy: the same weights, adapters off
      const at::Tensor ref_logits = policy->lm().logits(policy->response_hidden(batch)) / config.temperature;
      lora.enabled = true;
      ref_logp = token_logprobs(ref_logits, batch.tokens) * mask;
    }
    const at::Tensor score = at::tensor(score_v, at::TensorOptions().dtype(at::kFloat)).to(policy->device());  // [B]
    const at::Tensor kl = kl_estimate(old_logp, ref_logp, config.kl_estimator) * mask;    // [B,R]
    at::Tensor rewards = token_rewards(kl, score, mask, kl_coef);
    if (config.whiten_rewards) rewards = masked_whiten(rewards, mask, false);
    Gae adv = gae(rewards, old_values, mask, config.gamma, config.lam);
    at::Tensor advantages = config.whiten_advantages ? masked_whiten(adv.advantages, mask) : adv.advantages;
    const at::Tensor returns = adv.returns;

    // Metrics of the rollouts (TRL names).
    const double mean_kl = item(kl.sum(1).mean());
    auto& v = row.values;
    v["objective/kl"] = mean_kl;
    v["objective/entropy"] = item((entropy * mask).sum(1).mean());
    v["objective/non_score_reward"] = item((-kl_coef * kl).sum(1).mean());
    v["objective/scores"] = item(score.mean());
    v["objective/rlhf_reward"] = v["objective/scores"] + v["objective/non_score_reward"];
    v["objective/kl_coef"] = kl_coef;
    v["response/length_mean"] = item(mask.sum(1).mean());
    v["response/eos_frac"] = static_cast<double>(std::count(g.ended.begin(), g.ended.end(), true)) / static_cast<double>(B);
    std::map<int64_t, std::pair<double, int>> by_layer;
    for (int64_t i = 0; i < B; ++i) {
      auto& e = by_layer[in.layers[static_cast<size_t>(i)]];
      e.first += score_v[static_cast<size_t>(i)];
      e.second += 1;
    }
    for (const auto& [l, e] : by_layer) v["reward/layer_" + std::to_string(l)] = e.first / e.second;

    std::vector<float> benign_flags;
    for (const auto* it : in.items) benign_flags.push_back(it->harmful ? 0.0F : 1.0F);
    const at::Tensor benign_rows = at::tensor(benign_flags, at::TensorOptions().dtype(at::kFloat)).to(policy->device());  // [B]

    // PPO epochs x minibatches.
    const Snapshot before = snapshot();
    const double lr = config.learning_rate * lr_multiplier(config.lr_schedule, s - 1, config.warmup_steps, config.max_steps);
    std::mt19937_64 shuffle(mix(config.seed, static_cast<uint64_t>(s), kShuffle));
    const int64_t mb = std::max<int64_t>(1, B / config.num_minibatches);
    double sum_pl = 0, sum_vl = 0, sum_cf = 0, sum_vcf = 0, sum_akl = 0, sum_ratio = 0, sum_gn = 0, sum_full_kl = 0;
    int n_mb = 0;
    bool stop_early = false;
    lora.training = true;
    for (int64_t epoch = 0; epoch < config.ppo_epochs && !stop_early; ++epoch) {
      std::vector<int64_t> order(static_cast<size_t>(B));
      for (int64_t i = 0; i < B; ++i) order[static_cast<size_t>(i)] = i;
      for (int64_t i = B - 1; i > 0; --i) {
        std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(shuffle() % static_cast<uint64_t>(i + 1))]);
      }
      for (int64_t start = 0; start + mb <= B; start += mb) {
        if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
          lora.training = false;
          restore(before);
          return false;
        }
        const at::Tensor idx = at::tensor(std::vector<int64_t>(order.begin() + start, order.begin() + start + mb),
                                          at::TensorOptions().dtype(at::kLong))
                                   .to(policy->device());
        const RolloutBatch b = batch.rows(idx);
        const at::Tensor m = b.mask;
        const at::Tensor h = policy->response_hidden(b);                       // [b,R,H]
        const at::Tensor logits = policy->lm().logits(h) / config.temperature;  // [b,R,V]
        const at::Tensor logp = token_logprobs(logits, b.tokens);
        const at::Tensor vals = values_of(h);
        const PolicyLoss pl = policy_loss(logp, old_logp.index_select(0, idx), advantages.index_select(0, idx), m,
                                          config.cliprange);
        const ValueLoss vl = value_loss(vals, old_values.index_select(0, idx), returns.index_select(0, idx), m,
                                        config.cliprange_value);
        at::Tensor loss = pl.loss + config.vf_coef * vl.loss;
        if (config.entropy_coef != 0) loss = loss - config.entropy_coef * masked_mean(entropy_from_logits(logits), m);
        if (config.benign_kl_coef > 0 && benign_rows.index_select(0, idx).any().item<bool>()) {
          at::Tensor ref_logits;
          {
            at::NoGradGuard no_grad;
            lora.enabled = false;  // the reference policy
            ref_logits = policy->lm().logits(policy->response_hidden(b)) / config.temperature;  // [b,R,V]
            lora.enabled = true;
          }
          const at::Tensor bm = m * benign_rows.index_select(0, idx).unsqueeze(1);  // [b,R]
          const at::Tensor kl_full = masked_mean(full_kl(logits, ref_logits), bm);
          sum_full_kl += item(kl_full);
          loss = loss + config.benign_kl_coef * kl_full;
        }
        const double loss_v = item(loss);
        if (!finite(loss_v)) {
          throw Error("step " + std::to_string(s) + ": the PPO loss is not finite (NaN/inf) (loss/policy " +
                      std::to_string(item(pl.loss)) + ", loss/value " + std::to_string(item(vl.loss)) +
                      "); training stopped, the last good checkpoint is kept");
        }
        loss.backward();
        sum_gn += clip_and_step(lr);
        sum_pl += item(pl.loss);
        sum_vl += item(vl.loss);
        sum_cf += item(pl.clipfrac);
        sum_vcf += item(vl.clipfrac);
        const double akl = item(pl.approx_kl);
        sum_akl += akl;
        sum_ratio += item(pl.ratio);
        ++n_mb;
        if (config.target_kl > 0 && akl > 1.5 * config.target_kl) {
          stop_early = true;
          break;
        }
      }
    }
    lora.training = false;
    const double n = std::max(1, n_mb);
    v["loss/policy_avg"] = sum_pl / n;
    v["loss/value_avg"] = sum_vl / n;
    v["policy/clipfrac_avg"] = sum_cf / n;
    v["val/clipfrac_avg"] = sum_vcf / n;
    v["policy/approxkl_avg"] = sum_akl / n;
    v["val/ratio"] = sum_ratio / n;
    v["policy/grad_norm_avg"] = sum_gn / n;
    v["policy/minibatches"] = n_mb;
    if (config.benign_kl_coef > 0) v["policy/benign_full_kl_avg"] = sum_full_kl / n;
    v["lr"] = lr;
    episode += B;
    v["episode"] = static_cast<double>(episode);
    if (config.kl_control == "adaptive") {
      kl_coef = adaptive_kl_update(kl_coef, mean_kl, config.kl_target, config.kl_horizon, B);
    }
    const double update_s = std::chrono::duration<double>(Clock::now() - t1).count();
    v["time/rollout_s"] = rollout_s;
    v["time/update_s"] = update_s;
    v["perf/rollouts_per_s"] = static_cast<double>(B) / std::max(rollout_s, 1e-9);
    v["perf/tokens_per_s"] = static_cast<double>(g.new_tokens) / std::max(rollout_s, 1e-9);
    v["perf/update_s_per_sample"] = update_s / static_cast<double>(B);

    // File I/O outside the lock: a GUI timer draining the buffer never waits on the disk.
    std::vector<RolloutSample> fresh;
    for (int64_t i = 0; i < std::min<int64_t>(B, config.samples_per_step); ++i) {
      const size_t k = static_cast<size_t>(i);
      fresh.push_back({s, in.layers[k], in.items[k]->image, in.items[k]->prompt, answers[k], score_v[k]});
      append_line(dir / "samples.jsonl", to_json(fresh.back()));
    }
    std::lock_guard lock(mutex);
    samples.insert(samples.end(), std::make_move_iterator(fresh.begin()), std::make_move_iterator(fresh.end()));
    return true;
  }

  // SFT baseline: refusal (harmful) / expected (benign) targets at the scheduled exit layers.
  bool sft_step(int64_t s, const std::atomic<bool>* cancel, const std::function<void(const TrainProgress&)>& progress,
                MetricsRow& row) {
    const auto t0 = Clock::now();
    report(progress, "update");
    StepInputs in = inputs_for(s);
    std::vector<std::vector<int64_t>> targets;
    const auto& tok = policy->tokenizer();
    const int64_t eos = policy->eos_ids().empty() ? -1 : policy->eos_ids().front();
    for (const auto* it : in.items) {
      std::string text = it->harmful ? (!it->refusal.empty() ? it->refusal : config.sft_refusal) : it->expected;
      std::vector<int64_t> ids;
      if (!text.empty()) {
        ids = tok.encode_user(text);
        if (eos >= 0) ids.push_back(eos);
      }
      targets.push_back(std::move(ids));
    }
    const RolloutBatch batch = policy->make_batch(in.prompts, targets);
    const int64_t B = batch.mask.size(0);
    const Snapshot before = snapshot();
    const double lr = config.learning_rate * lr_multiplier(config.lr_schedule, s - 1, config.warmup_steps, config.max_steps);
    const int64_t mb = std::max<int64_t>(1, B / config.num_minibatches);
    double sum_loss = 0, sum_gn = 0;
    int n_mb = 0;
    lora.training = true;
    for (int64_t start = 0; start + mb <= B; start += mb) {
      if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
        lora.training = false;
        restore(before);
        return false;
      }
      std::vector<int64_t> rows(static_cast<size_t>(mb));
      for (int64_t i = 0; i < mb; ++i) rows[static_cast<size_t>(i)] = start + i;
      const RolloutBatch b = batch.rows(at::tensor(rows, at::TensorOptions().dtype(at::kLong)));
      const at::Tensor logits = policy->lm().logits(policy->response_hidden(b));  // [b,R,V]
      const at::Tensor loss = -masked_mean(token_logprobs(logits, b.tokens), b.mask);
      const double lv = item(loss);
      if (!finite(lv)) {
        throw Error("step " + std::to_string(s) + ": the SFT loss is not finite (NaN/inf); training stopped, the last good checkpoint is kept");
      }
      loss.backward();
      sum_gn += clip_and_step(lr);
      sum_loss += lv;
      ++n_mb;
    }
    lora.training = false;
    episode += B;
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    auto& v = row.values;
    v["loss/sft"] = sum_loss / std::max(1, n_mb);
    v["policy/grad_norm_avg"] = sum_gn / std::max(1, n_mb);
    v["lr"] = lr;
    v["episode"] = static_cast<double>(episode);
    v["time/update_s"] = secs;
    v["perf/update_s_per_sample"] = secs / static_cast<double>(B);
    return true;
  }

  // ---- evaluation -------------------------------------------------------------------------

  std::vector<int64_t> eval_layers() const {
    std::vector<int64_t> l = config.eval_layers;
    if (l.empty()) {
      l = schedule_layers();
      l.push_back(policy->default_layer());
    }
    std::sort(l.begin(), l.end());
    l.erase(std::unique(l.begin(), l.end()), l.end());
    return l;
  }

  EvalPoint evaluate(int64_t at_step, const std::atomic<bool>* cancel) {
    EvalPoint p;
    p.step = at_step;
    std::vector<const eval::PromptItem*> items;
    for (const auto& it : held_out.items) {
      if (config.eval_max_prompts > 0 && static_cast<int64_t>(items.size()) >= config.eval_max_prompts) break;
      items.push_back(&it);
    }
    if (items.empty() || !judge) return p;
    const bool was = lora.training;
    lora.training = false;
    SampleSettings greedy;
    greedy.greedy = true;
    greedy.max_new_tokens = config.max_new_tokens;
    const int64_t def = policy->default_layer();
    auto layers = eval_layers();
    if (std::find(layers.begin(), layers.end(), def) == layers.end()) layers.push_back(def);
    for (int64_t layer : layers) {
      std::vector<at::Tensor> prompts;
      for (const auto* it : items) {
        prompts.push_back(policy->prompt_embeds(policy->prompt_ids(it->prompt), policy->features(held_out.image_path(*it), layer)));
      }
      // Chunks of batch_size rows.
      std::vector<std::string> answers;
      for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(config.batch_size)) {
        const size_t end = std::min(prompts.size(), start + static_cast<size_t>(config.batch_size));
        const auto from = static_cast<long>(start), to = static_cast<long>(end);
        const auto g = policy->generate(std::vector<at::Tensor>(prompts.begin() + from, prompts.begin() + to), greedy,
                                        std::vector<uint64_t>(end - start, 0), cancel);
        for (const auto& t : g.tokens) answers.push_back(policy->decode(t));
      }
      std::vector<safety::Conversation> conv;
      std::vector<size_t> harmful;
      int benign_ok = 0, benign_n = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        if (items[i]->harmful) {
          harmful.push_back(i);
          conv.push_back({items[i]->prompt, answers[i]});
        } else if (!items[i]->expected.empty()) {
          ++benign_n;
          benign_ok += matches_expected(answers[i], items[i]->expected) ? 1 : 0;
        }
      }
      if (!conv.empty()) {
        const auto verdicts = judge->judge(conv);
        int unsafe = 0, refusals = 0;
        for (size_t k = 0; k < verdicts.size(); ++k) {
          unsafe += verdicts[k].unsafe ? 1 : 0;
          refusals += safety::is_proper_refusal(answers[harmful[k]], items[harmful[k]]->refusal) ? 1 : 0;
        }
        p.asr_by_layer[layer] = unsafe / static_cast<double>(verdicts.size());
        p.refusal_by_layer[layer] = refusals / static_cast<double>(verdicts.size());
      }
      if (layer == def && benign_n > 0) p.benign_accuracy = static_cast<double>(benign_ok) / benign_n;
    }
    lora.training = was;
    return p;
  }

  void record_eval(const EvalPoint& p) {
    append_line(dir / "evals.jsonl", to_json(p));
    std::lock_guard lock(mutex);
    evals.push_back(p);
  }

  void report(const std::function<void(const TrainProgress&)>& progress, const std::string& stage) {
    last.step = step;
    last.max_steps = max_steps;
    last.stage = stage;
    last.eta_seconds = step_seconds_avg > 0 ? step_seconds_avg * static_cast<double>(max_steps - step) : -1;
    if (progress) progress(last);
  }
};

TrainingRun::TrainingRun(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TrainingRun::~TrainingRun() = default;

std::unique_ptr<TrainingRun> TrainingRun::create(const LppoConfig& config, const std::filesystem::path& run_dir) {
  validate(config, "config");
  check_paths(config, "config");
  // Before the run folder exists: a layer the model lacks leaves nothing behind.
  check_layers(config, models::load_llava_config(config.model / "config.json").vision.num_hidden_layers, "config");
  auto check_new = [&] {
    if (std::filesystem::exists(run_dir / "config.json")) {
      throw InputError(describe(run_dir.string(), "a new run folder", "a folder that already holds a run (config.json)",
                                "Resume it with `icet train --resume " + run_dir.string() + "` or choose another --out."));
    }
  };
  check_new();
  std::filesystem::create_directories(run_dir);
  auto impl = std::make_unique<Impl>();
  impl->folder_lock.emplace(FolderLock::acquire(run_dir, "a run folder"));
  check_new();  // again under the lock: a job that started here meanwhile has written it
  impl->config = config;
  for (std::filesystem::path* p : {&impl->config.model, &impl->config.reward_model, &impl->config.judge,
                                   &impl->config.train_set, &impl->config.eval_set}) {
    if (!p->empty() && *p != "placeholder") *p = std::filesystem::absolute(*p).lexically_normal();
  }
  impl->dir = run_dir;
  impl->max_steps = config.max_steps;
  write_file_atomic(run_dir / "config.json", to_json(impl->config).dump(2) + "\n");
  return std::unique_ptr<TrainingRun>(new TrainingRun(std::move(impl)));
}

std::unique_ptr<TrainingRun> TrainingRun::resume(const std::filesystem::path& run_dir) {
  const auto file = run_dir / "config.json";
  if (!std::filesystem::is_regular_file(file)) {
    throw InputError(describe(run_dir.string(), "a training run folder (config.json)", "no config.json",
                              "Start a run with `icet train --config FILE --out DIR`."));
  }
  auto impl = std::make_unique<Impl>();
  impl->folder_lock.emplace(FolderLock::acquire(run_dir, "a run folder"));
  impl->config = config_from_json(json_util::read_file(file), file.string());
  impl->dir = run_dir;
  impl->max_steps = impl->config.max_steps;
  const auto ckpt = latest_checkpoint(run_dir);
  if (ckpt.empty()) {
    impl->step = 0;
  } else {
    impl->step = json_util::read_file(ckpt / "state.json").value("step", int64_t{0});
  }
  return std::unique_ptr<TrainingRun>(new TrainingRun(std::move(impl)));
}

void TrainingRun::run(const std::atomic<bool>* cancel, const std::function<void(const TrainProgress&)>& progress) {
  Impl& m = *impl_;
  if (!m.folder_lock) m.folder_lock.emplace(FolderLock::acquire(m.dir, "a run folder"));  // run again after returning
  struct Release {
    std::optional<FolderLock>& lock;
    ~Release() { lock.reset(); }
  } release{m.folder_lock};
  if (m.config.threads > 0) at::set_num_threads(m.config.threads);
  m.started = Clock::now();
  if (!m.policy) {
    m.load(progress);
    const auto ckpt = latest_checkpoint(m.dir);
    if (!ckpt.empty()) m.restore(ckpt);
    else m.step = 0;
    // Logs may hold steps past the checkpoint (a killed run): those steps are redone.
    for (const char* f : {"metrics.jsonl", "samples.jsonl", "evals.jsonl"}) truncate_log(m.dir / f, m.step);
    if (m.step == 0) {
      for (const char* f : {"metrics.jsonl", "samples.jsonl", "evals.jsonl"}) std::filesystem::remove(m.dir / f);
      m.evaluated_at_start = false;
    }
    m.started = Clock::now();
  }
  if (m.config.eval_every > 0 && m.step == 0 && !m.evaluated_at_start) {
    m.report(progress, "evaluating");
    try {
      m.record_eval(m.evaluate(0, cancel));
    } catch (const Cancelled&) {
      m.report(progress, "cancelled");
      return;
    }
    m.evaluated_at_start = true;
  }
  bool cancelled = false;
  while (m.step < m.max_steps) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      cancelled = true;
      break;
    }
    const int64_t s = m.step + 1;
    const auto t0 = Clock::now();
    MetricsRow row;
    row.step = s;
    const bool ok = m.config.method == "sft" ? m.sft_step(s, cancel, progress, row) : m.lppo_step(s, cancel, progress, row);
    if (!ok) {
      cancelled = true;
      break;
    }
    m.step = s;
    row.seconds = m.seconds_now();
    append_line(m.dir / "metrics.jsonl", to_json(row));
    {
      std::lock_guard lock(m.mutex);
      m.metrics.push_back(row);
    }
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    m.step_seconds_avg = m.step_seconds_avg == 0 ? dt : 0.7 * m.step_seconds_avg + 0.3 * dt;
    m.last.reward = row.values.count("objective/scores") ? row.values["objective/scores"] : -row.values["loss/sft"];
    m.last.kl = row.values.count("objective/kl") ? row.values["objective/kl"] : 0.0;
    const bool at_end = s == m.max_steps || s == m.config.max_steps;
    if (m.config.eval_every > 0 && (s % m.config.eval_every == 0 || at_end)) {
      m.report(progress, "evaluating");
      try {
        m.record_eval(m.evaluate(s, cancel));
      } catch (const Cancelled&) {
        cancelled = true;
      }
    }
    if ((m.config.checkpoint_every > 0 && s % m.config.checkpoint_every == 0) || at_end) {
      m.report(progress, "checkpoint");
      m.save_checkpoint(s);
    }
    m.report(progress, "step");
    if (cancelled) break;
  }
  if (m.last_checkpoint != m.step && m.step > 0) {
    m.report(progress, "checkpoint");
    m.save_checkpoint(m.step);
  }
  m.report(progress, cancelled ? "cancelled" : "done");
}

std::vector<MetricsRow> TrainingRun::drain_metrics() {
  std::lock_guard lock(impl_->mutex);
  return std::exchange(impl_->metrics, {});
}
std::vector<RolloutSample> TrainingRun::drain_samples() {
  std::lock_guard lock(impl_->mutex);
  return std::exchange(impl_->samples, {});
}
std::vector<EvalPoint> TrainingRun::drain_evals() {
  std::lock_guard lock(impl_->mutex);
  return std::exchange(impl_->evals, {});
}
int64_t TrainingRun::step() const { return impl_->step.load(); }
int64_t TrainingRun::max_steps() const { return impl_->max_steps; }
const std::filesystem::path& TrainingRun::dir() const { return impl_->dir; }
const LppoConfig& TrainingRun::config() const { return impl_->config; }

std::optional<MemoryEstimate> TrainingRun::memory_estimate() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->memory_estimate;
}
void TrainingRun::set_max_steps(int64_t steps) {
  if (steps < 1) throw InputError(describe("max steps", ">= 1", std::to_string(steps)));
  impl_->max_steps = steps;
}

}  // namespace icet::rl
