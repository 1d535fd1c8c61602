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
#include "core/base/strings.h"
#include "core/base/log.h"
#include "core/engine/session.h"
#include "core/models/config.h"
#include "core/rl/policy.h"
#include "core/rl/trainer.h"
#include "core/vision/image.h"

namespace icet::rl {
namespace {

double peak_rss_mb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

}  // namespace

namespace {

nlohmann::json train_one(std::unique_ptr<TrainingRun> run, const TrainCommand& cmd, std::ostream& out,
                         const std::atomic<bool>* cancel) {
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

}  // namespace

nlohmann::json run_train_command(const TrainCommand& cmd, std::ostream& out, const std::atomic<bool>* cancel) {
  if (cmd.resume) {
    if (!cmd.layers.empty() || cmd.schedule || cmd.seed) {
      throw InputError(describe("train --resume", "no --layers, --schedule or --seed (a resumed run keeps its config)",
                                "an override"));
    }
    return train_one(TrainingRun::resume(*cmd.resume), cmd, out, cancel);
  }
  if (!cmd.config) throw InputError("train: give --config FILE (a new run) or --resume DIR");
  LppoConfig config = load_config(*cmd.config);
  check_paths(config, cmd.config->string());  // before the model's config is read for --layers
  if (cmd.schedule) config.layer_schedule = *cmd.schedule == "uniform" ? "set" : *cmd.schedule;
  if (cmd.schedule == "random" && cmd.layers.empty()) config.layers.clear();  // every layer: the config's list does not apply
  if (cmd.seed) config.seed = *cmd.seed;
  std::vector<int64_t> layers = config.layers;
  if (!cmd.layers.empty()) {
    const auto model = models::load_llava_config(config.model / "config.json");
    layers = engine::parse_layers(cmd.layers, model.vision.num_hidden_layers);
    if (config.layer_schedule == "curriculum") {
      // A curriculum opens the layers nearest the model's default layer first.
      const int64_t def = model.default_exit_layer();
      std::stable_sort(layers.begin(), layers.end(), [def](int64_t a, int64_t b) { return std::abs(a - def) < std::abs(b - def); });
    }
    if (config.layer_schedule == "random") {
      throw InputError(describe("train --layers", "no layers with --schedule random (every exit layer of the model)", cmd.layers));
    }
  }
  std::filesystem::path dir;
  if (cmd.out) {
    dir = *cmd.out;
  } else {
    const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::ostringstream name;
    name << cmd.config->stem().string() << "-" << std::put_time(std::gmtime(&now), "%Y%m%d-%H%M%S");
    dir = std::filesystem::path("runs") / name.str();
  }
  if (config.layer_schedule == "fixed" && layers.size() > 1) {
    // The paper's reading: an independent run (its own adapter) per exit layer.
    nlohmann::json runs = nlohmann::json::array();
    for (int64_t l : layers) {
      if (cancel != nullptr && cancel->load()) break;
      config.layers = {l};
      char name[32];
      std::snprintf(name, sizeof name, "layer-%02lld", static_cast<long long>(l));
      if (cmd.progress_bar) out << "layer " << l << ":\n";
      runs.push_back(train_one(TrainingRun::create(config, dir / name), cmd, out, cancel));
    }
    return {{"runs", runs}, {"run_dir", dir.string()}};
  }
  config.layers = layers;
  validate(config, "train --layers/--schedule");
  return train_one(TrainingRun::create(config, dir), cmd, out, cancel);
}

nlohmann::json run_train_benchmark(const TrainBenchOptions& options) {
  if (!options.config) {
    throw InputError("bench train: give --config FILE (e.g. models/demo/lppo.json)");
  }
  LppoConfig config = load_config(*options.config);
  config.eval_every = 0;
  config.max_steps = std::max<int64_t>(1, options.steps);
  // A schedule longer than the timed steps is cut to them (the check requires it).
  config.curriculum_steps = std::min(config.curriculum_steps, config.max_steps);
  config.warmup_steps = std::min(config.warmup_steps, config.max_steps);
  config.checkpoint_every = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("icet-bench-train-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<TrainingRun> run;
  try {
    run = TrainingRun::create(config, dir);
    run->run(nullptr, {});
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);  // no scratch run left behind
    throw;
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto rows = run->drain_metrics();
  double rps = 0, tps = 0, ups = 0, step_s = 0;
  for (const auto& r : rows) {
    step_s += (r.values.count("time/rollout_s") ? r.values.at("time/rollout_s") : 0.0) +
              (r.values.count("time/update_s") ? r.values.at("time/update_s") : 0.0);
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
                      {"step_s", step_s / n},
                      {"total_s_with_loading", total},
                      {"peak_rss_mb", peak_rss_mb()}};
  log::get("rl")->info("bench train: {}", j.dump());
  return j;
}

}  // namespace icet::rl
