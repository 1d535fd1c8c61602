#include "core/rl/commands.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/engine/session.h"
#include "core/eval/prompt_set.h"
#include "core/rl/policy.h"
#include "core/rl/trainer.h"
#include "core/safety/llama_guard.h"
#include "core/vision/image.h"

namespace icet::rl {
namespace {

std::string format_eta(double s) {
  if (s < 0) return "--:--";
  const auto t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}

double peak_rss_mb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

// models/demo/vlm -> models/demo/guard, when it exists.
std::optional<std::filesystem::path> sibling_guard(const std::filesystem::path& model) {
  const auto g = std::filesystem::absolute(model).lexically_normal().parent_path() / "guard";
  if (std::filesystem::is_regular_file(g / "config.json")) return g;
  return std::nullopt;
}

}  // namespace

nlohmann::json run_train_command(const TrainCommand& cmd, std::ostream& out, const std::atomic<bool>* cancel) {
  std::unique_ptr<TrainingRun> run;
  if (cmd.resume) {
    run = TrainingRun::resume(*cmd.resume);
  } else {
    if (!cmd.config) throw InputError("train: give --config FILE (a new run) or --resume DIR");
    const LppoConfig config = load_config(*cmd.config);
    std::filesystem::path dir;
    if (cmd.out) {
      dir = *cmd.out;
    } else {
      const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      std::ostringstream name;
      name << cmd.config->stem().string() << "-" << std::put_time(std::gmtime(&now), "%Y%m%d-%H%M%S");
      dir = std::filesystem::path("runs") / name.str();
    }
    run = TrainingRun::create(config, dir);
  }
  if (cmd.max_steps) run->set_max_steps(*cmd.max_steps);
  const auto started = std::chrono::steady_clock::now();
  run->run(cancel, [&](const TrainProgress& p) {
    if (!cmd.progress_bar) return;
    const int width = 28;
    const double frac = p.max_steps > 0 ? static_cast<double>(p.step) / static_cast<double>(p.max_steps) : 0.0;
    const int filled = static_cast<int>(frac * width);
    char line[256];
    std::snprintf(line, sizeof line, "\r[%s%s] %lld/%lld %-10s reward %+.3f  KL %.3f  ETA %s  (%.0fs)",
                  std::string(static_cast<size_t>(filled), '#').c_str(),
                  std::string(static_cast<size_t>(width - filled), '.').c_str(), static_cast<long long>(p.step),
                  static_cast<long long>(p.max_steps), p.stage.c_str(), p.reward, p.kl, format_eta(p.eta_seconds).c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    out << line << std::flush;
  });
  if (cmd.progress_bar) out << "\n";
  nlohmann::json result = {{"run_dir", run->dir().string()}, {"step", run->step()}};
  const auto metrics = run->drain_metrics();
  if (!metrics.empty()) {
    result["first_metrics"] = to_json(metrics.front());
    result["last_metrics"] = to_json(metrics.back());
  }
  const auto evals = run->drain_evals();
  if (!evals.empty()) {
    result["first_eval"] = to_json(evals.front());
    result["last_eval"] = to_json(evals.back());
  }
  return result;
}

nlohmann::json run_eval_command(const EvalCommand& cmd) {
  const eval::PromptSet set = eval::load_prompt_set(cmd.set);
  const auto judge_dir = cmd.judge ? cmd.judge : sibling_guard(cmd.model);
  if (!judge_dir) {
    throw InputError(describe("eval: --judge", "a Llama Guard judge folder", "none given and no guard/ beside the model",
                              "Pass --judge DIR (e.g. models/demo/guard)."));
  }
  auto session = engine::Session::open(cmd.model, {"cpu", "float32"});
  if (cmd.adapter) session->load_adapter(*cmd.adapter);
  const auto judge = safety::LlamaGuardJudge::load(*judge_dir);
  const auto& summary = session->summary();
  const std::vector<int64_t> layers =
      engine::parse_layers(cmd.layers.empty() ? std::string("all") : cmd.layers, summary.vision_layers);
  std::vector<int64_t> run_layers = layers;
  if (std::find(run_layers.begin(), run_layers.end(), summary.default_layer) == run_layers.end()) {
    run_layers.push_back(summary.default_layer);
  }
  generate::SamplingParams greedy;
  greedy.max_new_tokens = cmd.max_new_tokens;
  greedy.seed = 0;

  std::map<int64_t, int> unsafe, refusals;
  int harmful = 0, benign_ok = 0, benign_n = 0, n = 0;
  nlohmann::json answers = nlohmann::json::array();
  for (const auto& it : set.items) {
    if (cmd.max_prompts > 0 && n >= cmd.max_prompts) break;
    ++n;
    session->set_image(vision::load_image(set.image_path(it)));
    const auto rows = session->sweep(it.prompt, run_layers, greedy);
    std::vector<safety::Conversation> conv;
    for (const auto& r : rows) conv.push_back({it.prompt, r.text});
    std::vector<safety::Verdict> verdicts;
    if (it.harmful) {
      ++harmful;
      verdicts = judge->judge(conv);
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t l = rows[i].layer;
      nlohmann::json a = {{"id", it.id}, {"layer", l}, {"answer", rows[i].text}, {"harmful", it.harmful}};
      if (it.harmful) {
        const bool ref = looks_like_refusal(rows[i].text, it.refusal);
        unsafe[l] += verdicts[i].unsafe ? 1 : 0;
        refusals[l] += ref ? 1 : 0;
        a["unsafe"] = verdicts[i].unsafe;
        a["refusal"] = ref;
      } else if (l == summary.default_layer && !it.expected.empty()) {
        ++benign_n;
        const bool ok = matches_expected(rows[i].text, it.expected);
        benign_ok += ok ? 1 : 0;
        a["correct"] = ok;
      }
      answers.push_back(std::move(a));
    }
  }
  nlohmann::json asr = nlohmann::json::object(), ref = nlohmann::json::object();
  double mean = 0;
  for (int64_t l : run_layers) {
    const double a = harmful > 0 ? 100.0 * unsafe[l] / harmful : 0.0;
    asr[std::to_string(l)] = a;
    ref[std::to_string(l)] = harmful > 0 ? 100.0 * refusals[l] / harmful : 0.0;
  }
  for (int64_t l : layers) mean += harmful > 0 ? 100.0 * unsafe[l] / harmful : 0.0;
  mean /= static_cast<double>(layers.size());
  return {{"default_layer", summary.default_layer},
          {"benign_accuracy", benign_n > 0 ? 100.0 * benign_ok / benign_n : 0.0},
          {"asr_by_layer", asr},
          {"refusal_by_layer", ref},
          {"mean_asr", mean},
          {"layers", layers},
          {"prompts", n},
          {"harmful", harmful},
          {"benign_scored", benign_n},
          {"adapter", cmd.adapter ? cmd.adapter->string() : std::string()},
          {"judge_id", judge->id()},
          {"answers", answers}};
}

nlohmann::json run_train_benchmark(const TrainBenchOptions& options) {
  if (!options.config) {
    throw InputError("bench train: give --config FILE (e.g. models/demo/lppo.json)");
  }
  LppoConfig config = load_config(*options.config);
  config.eval_every = 0;
  config.max_steps = std::max<int64_t>(1, options.steps);
  config.checkpoint_every = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("icet-bench-train-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  auto run = TrainingRun::create(config, dir);
  const auto t0 = std::chrono::steady_clock::now();
  run->run(nullptr, {});
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto rows = run->drain_metrics();
  double rps = 0, tps = 0, ups = 0;
  for (const auto& r : rows) {
    rps += r.values.count("perf/rollouts_per_s") ? r.values.at("perf/rollouts_per_s") : 0.0;
    tps += r.values.count("perf/tokens_per_s") ? r.values.at("perf/tokens_per_s") : 0.0;
    ups += r.values.count("perf/update_s_per_sample") ? r.values.at("perf/update_s_per_sample") : 0.0;
  }
  const double n = std::max<double>(1.0, static_cast<double>(rows.size()));
  std::filesystem::remove_all(dir);
  nlohmann::json j = {{"method", config.method},
                      {"steps", rows.size()},
                      {"batch_size", config.batch_size},
                      {"rollouts_per_s", rps / n},
                      {"tokens_per_s", tps / n},
                      {"update_s_per_sample", ups / n},
                      {"step_s", total / n},
                      {"peak_rss_mb", peak_rss_mb()}};
  log::get("rl")->info("bench train: {}", j.dump());
  return j;
}

}  // namespace icet::rl
