#include "core/eval/evaluate.h"

#include <nlohmann/json.hpp>

#include <chrono>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/engine/session.h"
#include "core/generate/sampling_params.h"
#include "core/safety/judge.h"
#include "core/safety/refusal.h"
#include "core/vision/image.h"

namespace icet::eval {

const LayerMetrics* EvalResult::at(int64_t layer) const {
  for (const auto& m : layers) {
    if (m.layer == layer) return &m;
  }
  return nullptr;
}

EvalResult evaluate(engine::Session& session, const PromptSet& set, const safety::Judge* judge,
                    const EvalOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const auto& summary = session.summary();
  std::vector<int64_t> layers = options.layers;
  if (layers.empty()) {
    for (int64_t l = 1; l <= summary.vision_layers; ++l) layers.push_back(l);
  }
  EvalResult result;
  result.model_id = summary.model_id;
  result.default_layer = summary.default_layer;
  result.judge_id = judge != nullptr ? judge->id() : "";
  for (int64_t l : layers) {
    LayerMetrics m;
    m.layer = l;
    result.layers.push_back(std::move(m));
  }

  generate::SamplingParams params;
  params.max_new_tokens = options.max_new_tokens;
  params.seed = 0;

  const size_t n = options.limit ? std::min(options.limit, set.items.size()) : set.items.size();
  // Harmful answers wait for the judge in batches: (answer index, layer slot, item).
  std::vector<safety::Conversation> pending;
  std::vector<std::pair<size_t, size_t>> pending_at;  // (answer index, layer slot)
  std::vector<EvalAnswer> answers;
  auto flush = [&] {
    if (pending.empty()) return;
    const auto verdicts = judge->judge(pending);
    for (size_t i = 0; i < verdicts.size(); ++i) {
      auto& a = answers[pending_at[i].first];
      a.unsafe = verdicts[i].unsafe;
      if (a.unsafe) ++result.layers[pending_at[i].second].unsafe;
    }
    pending.clear();
    pending_at.clear();
  };

  for (size_t i = 0; i < n; ++i) {
    const PromptItem& item = set.items[i];
    session.set_image(vision::load_image(set.image_path(item)));
    const auto rows = session.sweep(item.prompt, layers, params);
    const std::string task = !item.task.empty() ? item.task : item.category;
    for (size_t k = 0; k < rows.size(); ++k) {
      LayerMetrics& m = result.layers[k];
      EvalAnswer a;
      a.id = item.id;
      a.layer = layers[k];
      a.answer = rows[k].text;
      a.harmful = item.harmful;
      if (item.harmful) {
        ++m.harmful;
        a.refusal = safety::is_proper_refusal(rows[k].text, item.refusal);
        if (a.refusal) ++m.refusals;
        if (judge != nullptr) {
          pending.push_back({item.prompt, rows[k].text});
          pending_at.emplace_back(answers.size(), k);
        }
      } else {
        ++m.benign;
        a.correct = trim(rows[k].text) == trim(item.expected);
        if (a.correct) ++m.correct;
        auto& [correct, total] = m.by_task[task];
        correct += a.correct ? 1 : 0;
        ++total;
      }
      answers.push_back(std::move(a));
    }
    if (judge != nullptr && pending.size() >= std::max<size_t>(1, options.judge_batch)) flush();
    if (options.progress && !options.progress(i + 1, n)) throw Cancelled();
  }
  if (judge != nullptr) flush();
  if (options.keep_answers) result.answers = std::move(answers);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

nlohmann::json to_json(const EvalResult& r) {
  nlohmann::json asr = nlohmann::json::object(), refusal = nlohmann::json::object(),
                 benign = nlohmann::json::object(), tasks = nlohmann::json::object();
  size_t harmful_items = 0, benign_items = 0;
  for (const auto& m : r.layers) {
    const std::string key = std::to_string(m.layer);
    if (!r.judge_id.empty()) asr[key] = m.asr();
    refusal[key] = m.refusal_rate();
    benign[key] = m.benign_accuracy();
    nlohmann::json t = nlohmann::json::object();
    for (const auto& [task, ct] : m.by_task) t[task] = ct.second ? static_cast<double>(ct.first) / static_cast<double>(ct.second) : 0.0;
    tasks[key] = t;
    harmful_items = m.harmful;
    benign_items = m.benign;
  }
  nlohmann::json j{{"model_id", r.model_id},
                   {"judge_id", r.judge_id},
                   {"default_layer", r.default_layer},
                   {"refusal_by_layer", refusal},
                   {"benign_accuracy_by_layer", benign},
                   {"task_accuracy_by_layer", tasks},
                   {"items", {{"harmful", harmful_items}, {"benign", benign_items}}},
                   {"seconds", r.seconds}};
  if (const LayerMetrics* d = r.at(r.default_layer)) j["benign_accuracy"] = d->benign_accuracy();
  if (!r.judge_id.empty()) j["asr_by_layer"] = asr;
  if (!r.answers.empty()) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& x : r.answers) {
      a.push_back({{"id", x.id}, {"layer", x.layer}, {"answer", x.answer}, {"harmful", x.harmful},
                   {"unsafe", x.unsafe}, {"refusal", x.refusal}, {"correct", x.correct}});
    }
    j["answers"] = a;
  }
  return j;
}

}  // namespace icet::eval
