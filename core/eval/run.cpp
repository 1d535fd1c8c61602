#include "core/eval/run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/hash.h"
#include "core/base/log.h"
#include "core/engine/session.h"
#include "core/eval/report.h"
#include "core/generate/sampling_params.h"
#include "core/safety/judge.h"
#include "core/safety/judge_factory.h"
#include "core/safety/refusal.h"
#include "core/safety/reward_model.h"
#include "core/vision/image.h"

namespace icet::eval {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A file's FNV-1a 64, streamed: "is this the same set / adapter" on resume.
std::string file_fingerprint(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(describe(file.string(), "a readable file", "cannot be opened"));
  Fnv1a64 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  return h.hex();
}

std::string adapter_fingerprint(const fs::path& dir) {
  return file_fingerprint(dir / "adapter_config.json") + "-" + file_fingerprint(dir / "adapter_model.safetensors");
}

// The keys whose change makes earlier answers incomparable with new ones.
constexpr const char* kResumeKeys[] = {"weights_hash", "set_hash", "judge", "reward", "max_new_tokens", "scoring"};

void check_resumable(const nlohmann::json& old_meta, const nlohmann::json& meta, const fs::path& log) {
  if (!old_meta.is_object()) {
    throw InputError(describe(log.string(), "an evaluation log with a header line ({\"icet_eval_log\":1,...})",
                              "answers without one", "Choose another output folder, or restart to discard them."));
  }
  for (const char* key : kResumeKeys) {
    const auto& was = old_meta.contains(key) ? old_meta.at(key) : nlohmann::json(nullptr);
    if (was != meta.at(key)) {
      throw InputError(describe(log.string() + ": meta." + key, "the same value as this evaluation (" + meta.at(key).dump() + ")",
                                was.dump(),
                                "Its answers came from another evaluation; choose another output folder, or restart "
                                "to discard them."));
    }
  }
  // An adapter folder rewritten since (a training run went on) answers differently.
  if (old_meta.contains("adapters") && old_meta.at("adapters").is_object()) {
    for (const auto& [key, hash] : meta.at("adapters").items()) {
      if (old_meta.at("adapters").contains(key) && old_meta.at("adapters").at(key) != hash) {
        throw InputError(describe(log.string() + ": meta.adapters[" + key + "]", "the adapter's current weights (" +
                                  hash.get<std::string>() + ")", old_meta.at("adapters").at(key).dump(),
                                  "The adapter changed since those answers; restart to answer it again."));
      }
    }
  }
}

}  // namespace

void write_exports(const EvalOutcome& outcome, const fs::path& out) {
  write_file_atomic(out / kMetricsJsonName, eval_summary_json(outcome).dump(2) + "\n");
  write_file_atomic(out / kMetricsCsvName, metrics_csv(outcome.metrics));
  write_file_atomic(out / kAnswersCsvName, answers_csv(outcome.records));
  ReportInfo info;
  const auto& m = outcome.meta;
  auto add = [&](const char* label, const char* key) {
    if (m.contains(key) && !m.at(key).is_null()) {
      info.details.emplace_back(label, m.at(key).is_string() ? m.at(key).get<std::string>() : m.at(key).dump());
    }
  };
  add("Model", "model_id");
  add("Weights", "weights_hash");
  add("Prompt set", "set");
  add("Judge", "judge");
  add("Reward model", "reward");
  add("New tokens", "max_new_tokens");
  add("Answer scoring", "scoring");
  add("Device", "device");
  add("Dtype", "dtype");
  if (m.contains("adapters") && m.at("adapters").is_object()) {
    for (const auto& [key, hash] : m.at("adapters").items()) info.details.emplace_back("Adapter", key);
  }
  std::string layers;
  for (int64_t l : outcome.layers) layers += (layers.empty() ? "" : ",") + std::to_string(l);
  info.details.emplace_back("Layers", layers);
  info.details.emplace_back("Prompts", std::to_string(outcome.metrics.prompts));
  info.details.emplace_back("Answers", std::to_string(outcome.records.size()));
  write_file_atomic(out / kReportHtmlName, html_report(outcome.metrics, info));
}

namespace {

struct Answered {
  AnswerRecord record;
  const PromptItem* item = nullptr;
};

// The items the plan answers: the first `limit`, each with an image file (checked before any
// model time is spent).
size_t items_in(const PromptSet& set, const EvalPlan& plan) {
  const size_t n = plan.limit ? std::min(plan.limit, set.items.size()) : set.items.size();
  if (n == 0) throw InputError(describe(set.file.string(), "a prompt set with at least one item", "none"));
  for (size_t i = 0; i < n; ++i) {
    const fs::path image = set.image_path(set.items[i]);
    std::error_code ec;
    if (!fs::is_regular_file(image, ec)) {
      throw InputError(describe(set.file.string() + ": item " + set.items[i].id + ": image", "an image file",
                                image.string() + (fs::exists(image, ec) ? " is not a regular file" : " does not exist")));
    }
  }
  return n;
}

// The evaluation proper, on the first `n` items (checked by items_in).
EvalOutcome run_loaded(const EvalModels& models, const PromptSet& set, const EvalPlan& plan,
                       const std::vector<std::string>& adapters, size_t n, const EvalProgressCallback& progress,
                       const std::atomic<bool>* cancel) {
  if (models.session == nullptr) throw InputError("eval: no model session");
  const auto start = Clock::now();
  engine::Session& session = *models.session;
  const auto& summary = session.summary();

  EvalOutcome outcome;
  outcome.num_layers = summary.vision_layers;
  outcome.default_layer = summary.default_layer;
  outcome.layers = engine::parse_layers(plan.layers.empty() ? std::string("all") : plan.layers, summary.vision_layers);
  if (plan.with_default_layer && std::find(outcome.layers.begin(), outcome.layers.end(), summary.default_layer) == outcome.layers.end()) {
    outcome.layers.insert(std::upper_bound(outcome.layers.begin(), outcome.layers.end(), summary.default_layer), summary.default_layer);
  }
  outcome.out = plan.out;

  if (adapters.empty()) throw InputError("eval: nothing to answer with (no base model and no adapter)");
  nlohmann::json adapter_hashes = nlohmann::json::object();
  for (const auto& a : adapters) {
    if (!a.empty()) adapter_hashes[a] = adapter_fingerprint(a);
  }
  outcome.meta = {{"model_id", summary.model_id},
                  {"weights_hash", summary.weights_hash},
                  {"set", set.file.string()},
                  {"set_hash", !set.content_hash.empty() ? set.content_hash : file_fingerprint(set.file)},
                  {"judge", models.judge != nullptr ? nlohmann::json(models.judge->id()) : nlohmann::json(nullptr)},
                  {"reward", models.reward != nullptr ? nlohmann::json(models.reward->id()) : nlohmann::json(nullptr)},
                  {"max_new_tokens", plan.max_new_tokens},
                  {"scoring", plan.normalised_answers ? "normalised" : "exact"},
                  {"num_layers", summary.vision_layers},
                  {"default_layer", summary.default_layer},
                  {"device", summary.device},
                  {"dtype", summary.dtype},
                  {"adapters", adapter_hashes}};

  // The log: what is already answered, and the writer for the rest.
  std::vector<AnswerRecord> logged;
  std::unique_ptr<AnswerLogWriter> writer;
  if (plan.out) {
    const fs::path log = *plan.out / kAnswerLogName;
    fs::create_directories(*plan.out);
    if (plan.restart) fs::remove(log);
    AnswerLogContents contents = read_answer_log(log);
    if (!contents.records.empty() || contents.meta.is_object()) {
      check_resumable(contents.meta, outcome.meta, log);
      nlohmann::json merged = contents.meta;
      bool grew = !merged.contains("adapters") || !merged.at("adapters").is_object();
      if (grew) merged["adapters"] = nlohmann::json::object();
      for (const auto& [key, hash] : adapter_hashes.items()) {
        if (!merged["adapters"].contains(key)) {
          merged["adapters"][key] = hash;
          grew = true;
        }
      }
      if (grew) rewrite_answer_log(log, merged, contents.records);
      outcome.meta = merged;
      logged = std::move(contents.records);
    }
    writer = std::make_unique<AnswerLogWriter>(log, outcome.meta);
  }

  // The plan's keys; answers in the log outside the plan (other layers, items) stay there
  // but are not part of this outcome.
  std::set<AnswerKey> planned;
  for (const auto& a : adapters) {
    for (size_t i = 0; i < n; ++i) {
      for (int64_t l : outcome.layers) planned.insert({l, set.items[i].id, a});
    }
  }
  std::set<AnswerKey> done;
  for (auto& r : logged) {
    AnswerKey key{r.layer, r.id, r.adapter};
    if (planned.count(key) != 0 && done.insert(key).second) outcome.records.push_back(std::move(r));
  }
  outcome.resumed = outcome.records.size();

  EvalProgress p;
  p.total = planned.size();
  p.resumed = outcome.resumed;
  p.done = outcome.resumed;
  const auto answering_start = Clock::now();
  auto report = [&](const std::string& stage) {
    p.stage = stage;
    p.elapsed_s = seconds_since(start);
    const size_t fresh = p.done - p.resumed;
    const double rate = fresh > 0 ? static_cast<double>(fresh) / seconds_since(answering_start) : 0.0;
    p.eta_s = rate > 0 ? static_cast<double>(p.total - p.done) / rate : (p.done == p.total ? 0.0 : -1.0);
    return !progress || progress(p);
  };

  generate::SamplingParams params;
  params.max_new_tokens = plan.max_new_tokens;
  params.seed = 0;
  const ScoreOptions scoring{plan.normalised_answers};

  // Answers wait for the judge and the reward model in batches, then go to the log together.
  std::vector<Answered> pending;
  auto flush = [&] {
    if (pending.empty()) return;
    if (models.judge != nullptr) {
      std::vector<safety::Conversation> conversations;
      std::vector<size_t> at;
      for (size_t k = 0; k < pending.size(); ++k) {
        if (!pending[k].item->harmful) continue;  // ASR is over harmful items only
        conversations.push_back({pending[k].item->prompt, pending[k].record.answer});
        at.push_back(k);
      }
      if (!conversations.empty()) {
        const auto verdicts = models.judge->judge(conversations);
        for (size_t k = 0; k < at.size(); ++k) {
          pending[at[k]].record.verdict = verdicts[k].unsafe ? "unsafe" : "safe";
          pending[at[k]].record.p_unsafe = verdicts[k].p_unsafe;
        }
      }
    }
    if (models.reward != nullptr) {
      std::vector<safety::ScoredPair> pairs;
      for (const auto& a : pending) pairs.push_back({a.item->prompt, a.record.answer});
      const auto rewards = models.reward->score(pairs);
      for (size_t k = 0; k < pending.size(); ++k) pending[k].record.reward = rewards[k];
    }
    for (auto& a : pending) {
      if (writer) writer->append(a.record);
      outcome.records.push_back(std::move(a.record));
    }
    pending.clear();
  };

  const size_t batch = std::max<size_t>(1, plan.judge_batch);
  try {
    if (!report("answering")) throw Cancelled();
    for (size_t i = 0; i < n; ++i) {
      const PromptItem& item = set.items[i];
      bool image_set = false;
      for (const auto& adapter : adapters) {
        std::vector<int64_t> layers;
        for (int64_t l : outcome.layers) {
          if (done.count({l, item.id, adapter}) == 0) layers.push_back(l);
        }
        if (layers.empty()) continue;
        if (!image_set) {
          session.set_image(vision::load_image(set.image_path(item)));
          image_set = true;
        }
        const auto rows = session.sweep(item.prompt, layers, params, {}, cancel, engine::AdapterChoice(fs::path(adapter)));
        for (size_t k = 0; k < rows.size(); ++k) {
          Answered a;
          a.item = &item;
          a.record.layer = layers[k];
          a.record.id = item.id;
          a.record.adapter = adapter;
          a.record.harmful = item.harmful;
          a.record.answer = rows[k].text;
          a.record.refused = safety::is_proper_refusal(rows[k].text, item.refusal);
          a.record.correct = score_answer(item, rows[k].text, scoring);
          pending.push_back(std::move(a));
        }
        p.done += rows.size();
        if (pending.size() >= batch) flush();
        const bool go_on = report("answering");
        if (!go_on || (cancel != nullptr && cancel->load())) throw Cancelled();
      }
    }
    flush();
  } catch (const Cancelled&) {
    // What was answered is judged and logged, so a rerun continues from here.
    flush();
    if (writer) writer->close();
    throw;
  }
  if (writer) writer->close();

  report("report");
  // Per-task accuracy of the first model (the demo world's colour/count/... questions).
  std::map<std::string, const PromptItem*> by_id;
  for (size_t i = 0; i < n; ++i) by_id[set.items[i].id] = &set.items[i];
  std::map<int64_t, std::map<std::string, std::pair<double, size_t>>> tasks;
  for (const auto& r : outcome.records) {
    if (r.adapter != adapters.front() || !r.correct) continue;
    const PromptItem& item = *by_id.at(r.id);
    auto& [sum, count] = tasks[r.layer][!item.task.empty() ? item.task : item.category];
    sum += *r.correct;
    ++count;
  }
  for (const auto& [layer, per_task] : tasks) {
    nlohmann::json t = nlohmann::json::object();
    for (const auto& [task, sc] : per_task) t[task] = sc.first / static_cast<double>(sc.second);
    outcome.task_accuracy_by_layer[std::to_string(layer)] = t;
  }
  MetricsOptions mo = plan.metrics;
  mo.num_layers = summary.vision_layers;
  outcome.metrics = compute_metrics(outcome.records, mo);
  outcome.seconds = seconds_since(start);
  if (plan.out) write_exports(outcome, *plan.out);
  return outcome;
}

}  // namespace

EvalOutcome run_evaluation(const EvalModels& models, const PromptSet& set, const EvalPlan& plan,
                           const std::vector<std::string>& adapters, const EvalProgressCallback& progress,
                           const std::atomic<bool>* cancel) {
  return run_loaded(models, set, plan, adapters, items_in(set, plan), progress, cancel);
}

EvalOutcome run_evaluation(const EvalPlan& plan, const EvalProgressCallback& progress, const std::atomic<bool>* cancel) {
  const PromptSet set = load_prompt_set(plan.set);
  const size_t n = items_in(set, plan);  // bad items fail before the models load
  auto stage = [&](const char* name) {
    EvalProgress p;
    p.stage = name;
    if ((progress && !progress(p)) || (cancel != nullptr && cancel->load())) throw Cancelled();
  };
  stage("loading model");
  engine::ProgressCallback load_progress = [&](size_t, size_t) { return cancel == nullptr || !cancel->load(); };
  auto session = engine::Session::open(plan.model, {plan.device, plan.dtype}, load_progress);
  const auto& summary = session->summary();
  std::vector<std::string> adapters;
  if (plan.base) adapters.emplace_back();
  for (const auto& dir : plan.adapters) adapters.push_back(session->add_adapter(dir));

  std::unique_ptr<safety::Judge> judge;
  const auto judge_dir = plan.judge ? plan.judge : safety::judge_beside(plan.model);
  if (judge_dir) {
    stage("loading judge");
    judge = safety::load_judge(*judge_dir, summary.device, summary.dtype);
  }
  std::unique_ptr<safety::RewardModel> reward;
  if (plan.reward) {
    stage("loading reward model");
    reward = safety::load_reward_model(*plan.reward, summary.device, summary.dtype);
  }
  return run_loaded(EvalModels{session.get(), judge.get(), reward.get()}, set, plan, adapters, n, progress, cancel);
}

EvalOutcome load_evaluation(const fs::path& out, const MetricsOptions& options) {
  const fs::path log = out / kAnswerLogName;
  std::error_code ec;
  if (!fs::is_regular_file(log, ec)) {
    throw InputError(describe(log.string(), "an evaluation log (answers.jsonl, written by icet eval --out)", "missing"));
  }
  AnswerLogContents contents = read_answer_log(log);
  EvalOutcome outcome;
  outcome.meta = contents.meta.is_object() ? contents.meta : nlohmann::json::object();
  outcome.records = std::move(contents.records);
  outcome.resumed = outcome.records.size();
  std::set<int64_t> layers;
  for (const auto& r : outcome.records) layers.insert(r.layer);
  outcome.layers.assign(layers.begin(), layers.end());
  MetricsOptions mo = options;
  if (mo.num_layers == 0 && outcome.meta.contains("num_layers") && outcome.meta.at("num_layers").is_number_integer()) {
    mo.num_layers = outcome.meta.at("num_layers").get<int64_t>();
  }
  outcome.num_layers = mo.num_layers;
  if (outcome.meta.contains("default_layer") && outcome.meta.at("default_layer").is_number_integer()) {
    outcome.default_layer = outcome.meta.at("default_layer").get<int64_t>();
  }
  outcome.metrics = compute_metrics(outcome.records, mo);
  outcome.out = out;
  return outcome;
}

nlohmann::json eval_summary_json(const EvalOutcome& o) {
  auto estimate = [](const Estimate& e) -> nlohmann::json {
    if (!e.measured()) return nullptr;
    auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
    return {{"value", num(e.value)}, {"lo", num(e.lo)}, {"hi", num(e.hi)}, {"n", e.n}};
  };
  auto metrics = [&](nlohmann::json row, const MetricValues& v) {
    for (Metric m : kMetrics) row[metric_key(m)] = estimate(v.at(m));
    return row;
  };
  auto runs = [&](const std::vector<AdapterMetrics>& list) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& run : list) {
      nlohmann::json layers = nlohmann::json::array(), groups = nlohmann::json::array();
      for (const auto& l : run.layers) layers.push_back(metrics({{"layer", l.layer}}, l.metrics));
      for (const auto& g : run.groups) groups.push_back(metrics({{"name", g.group.name}}, g.metrics));
      a.push_back({{"adapter", run.adapter}, {"layers", layers}, {"groups", groups}});
    }
    return a;
  };
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : o.metrics.groups) groups.push_back({{"name", g.name}, {"first", g.first}, {"last", g.last}});
  nlohmann::json j{{"meta", o.meta},
                   {"layers", o.layers},
                   {"default_layer", o.default_layer},
                   {"num_layers", o.num_layers},
                   {"prompts", o.metrics.prompts},
                   {"answers", o.records.size()},
                   {"resumed", o.resumed},
                   {"seconds", o.seconds},
                   {"groups", groups},
                   {"runs", runs(o.metrics.runs)},
                   {"deltas", runs(o.metrics.deltas)}};
  // The per-layer maps of `icet demo report`, for the base run (else the only one).
  const AdapterMetrics* main = o.metrics.run("");
  if (main == nullptr && !o.metrics.runs.empty()) main = &o.metrics.runs.front();
  if (main != nullptr) {
    const std::pair<Metric, const char*> maps[] = {{Metric::asr, "asr_by_layer"},
                                                   {Metric::refusal, "refusal_by_layer"},
                                                   {Metric::over_refusal, "over_refusal_by_layer"},
                                                   {Metric::accuracy, "benign_accuracy_by_layer"},
                                                   {Metric::reward, "reward_by_layer"}};
    for (const auto& [metric, name] : maps) {
      nlohmann::json by_layer = nlohmann::json::object();
      for (const auto& l : main->layers) {
        const Estimate& e = l.metrics.at(metric);
        if (e.measured()) by_layer[std::to_string(l.layer)] = e.value;
      }
      if (!by_layer.empty()) j[name] = by_layer;
    }
    for (const auto& l : main->layers) {
      if (l.layer == o.default_layer && l.metrics.accuracy.measured()) j["benign_accuracy"] = l.metrics.accuracy.value;
    }
  }
  if (!o.task_accuracy_by_layer.empty()) j["task_accuracy_by_layer"] = o.task_accuracy_by_layer;
  auto meta_string = [&](const char* key) {
    return o.meta.contains(key) && o.meta.at(key).is_string() ? o.meta.at(key).get<std::string>() : std::string();
  };
  j["model_id"] = meta_string("model_id");
  j["judge_id"] = meta_string("judge");
  std::map<std::string, bool> items;
  for (const auto& r : o.records) items[r.id] = r.harmful;
  const auto harmful = static_cast<size_t>(std::count_if(items.begin(), items.end(), [](const auto& kv) { return kv.second; }));
  j["items"] = {{"harmful", harmful}, {"benign", items.size() - harmful}};
  return j;
}

}  // namespace icet::eval
