#include "core/demo/judges.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <numbers>
#include <set>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/demo/garble.h"
#include "core/demo/rng.h"
#include "core/demo/tokenizer_trainer.h"
#include "core/io/safetensors.h"
#include "core/models/gpt2.h"
#include "core/models/llama.h"
#include "core/models/weights.h"
#include "core/safety/llama_guard.h"
#include "core/safety/refusal.h"
#include "core/safety/reward_model.h"
#include "core/safety/snapshot_tokenizer.h"
#include "core/text/hf_tokenizer.h"

namespace icet::demo {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---- Shared helpers -----------------------------------------------------------------------

template <typename T>
const T& pick(const std::vector<T>& v, Rng& rng) {
  return v[static_cast<size_t>(rng.below(static_cast<int>(v.size())))];
}

void write_json(const fs::path& file, const json& j) {
  std::ofstream out(file, std::ios::binary);
  out << j.dump(2) << "\n";
  if (!out) throw EnvironmentError(describe(file.string(), "a writable file", "a write failure"));
}

// A staging folder next to out_dir; commit() swaps it in, so a cancelled or failed build leaves
// no half-written model folder behind.
class Staging {
 public:
  explicit Staging(fs::path out_dir) : out_(std::move(out_dir)), dir_(out_.string() + ".partial") {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~Staging() {
    std::error_code ec;
    if (!committed_) fs::remove_all(dir_, ec);
  }
  const fs::path& dir() const { return dir_; }
  void commit() {
    fs::remove_all(out_);
    fs::rename(dir_, out_);
    committed_ = true;
  }

 private:
  fs::path out_, dir_;
  bool committed_ = false;
};

// Random initial weights for the tensors a model's constructor lists (schema mode), as HF's
// _init_weights: normal(0, 0.02) matrices and embeddings, ones for norm weights, zeros for biases.
std::vector<std::pair<std::string, at::Tensor>> init_weights(const std::vector<models::WeightLoader::Entry>& schema) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& e : schema) {
    const bool norm = e.name.find("norm") != std::string::npos || e.name.find("ln_") != std::string::npos;
    const bool bias = e.name.size() > 5 && e.name.compare(e.name.size() - 5, 5, ".bias") == 0;
    at::Tensor t;
    if (bias) t = at::zeros(e.shape, at::kFloat);
    else if (norm) t = at::ones(e.shape, at::kFloat);
    else t = at::randn(e.shape, at::kFloat) * 0.02;
    out.emplace_back(e.name, t);
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> snapshot_of(const models::WeightLoader& loader) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, t] : loader.parameters()) out.emplace_back(name, t.detach().contiguous().clone());
  return out;
}

std::vector<at::Tensor> tensors_of(const models::WeightLoader& loader) {
  std::vector<at::Tensor> out;
  for (const auto& p : loader.parameters()) out.push_back(p.second);
  return out;
}

// Step timing and progress reports; throws Cancelled when the callback says stop.
class Reporter {
 public:
  Reporter(const BuildProgress& progress, std::string stage, int64_t total)
      : progress_(progress), stage_(std::move(stage)), total_(total), start_(std::chrono::steady_clock::now()) {}
  void report(int64_t step, double loss) {
    const double elapsed = seconds();
    const double eta = step > 0 ? elapsed / static_cast<double>(step) * static_cast<double>(total_ - step) : 0.0;
    if (progress_ && !progress_(BuildStatus{stage_, step, total_, loss, eta})) throw Cancelled();
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  const BuildProgress& progress_;
  std::string stage_;
  int64_t total_;
  std::chrono::steady_clock::time_point start_;
};

// Correct answers to other tasks: off-topic material for a question of `task`.
std::map<std::string, std::vector<std::string>> off_topic_pools(const std::vector<DemoExample>& examples) {
  std::map<std::string, std::set<std::string>> by_task;
  for (const auto& e : examples) {
    if (!e.harmful) by_task[e.task].insert(e.answer);
  }
  std::map<std::string, std::vector<std::string>> out;
  for (const std::string task : {"describe", "colour", "count", "position", "is_there", "harmful"}) {
    std::vector<std::string> pool;
    for (const auto& [t, answers] : by_task) {
      if (t != task) pool.insert(pool.end(), answers.begin(), answers.end());
    }
    out[task] = std::move(pool);
  }
  return out;
}

// The one- or two-word answers of the benign tasks ("No.", "Red.", "Top left.", "Two."), each
// once, whatever its frequency in `examples`; never empty.
std::vector<std::string> short_answers(const std::vector<DemoExample>& examples) {
  std::set<std::string> out{"Yes.", "No."};
  for (const auto& e : examples) {
    if (e.harmful || e.task == "describe") continue;
    out.insert(e.answer);
    out.insert(e.wrong_answers.begin(), e.wrong_answers.end());
  }
  return {out.begin(), out.end()};
}

// The garble kinds the guard sees: an empty answer would turn the conversation into prompt
// classification (a different question), so it is left out there.
const std::vector<GarbleKind>& guard_garble_kinds() {
  static const std::vector<GarbleKind> v = {GarbleKind::shuffled, GarbleKind::truncated, GarbleKind::repeated,
                                            GarbleKind::junk, GarbleKind::off_topic};
  return v;
}

}  // namespace

// ---- Data ---------------------------------------------------------------------------------

std::string guard_category(std::string_view category) {
  if (category == "benign") return {};
  if (category == "weapons") return "S9";    // Indiscriminate Weapons (guns, bombs)
  if (category == "poisoning") return "S1";  // Violent Crimes (harming a person or animal)
  if (category == "theft" || category == "hacking" || category == "fraud" || category == "vandalism") {
    return "S2";  // Non-Violent Crimes: property, cyber and financial crimes
  }
  throw InputError(describe("demo harm category", "benign, weapons, theft, hacking, poisoning, fraud or vandalism",
                            "\"" + std::string(category) + "\""));
}

std::vector<GuardItem> guard_items(const std::vector<DemoExample>& examples, uint64_t seed) {
  const auto pools = off_topic_pools(examples);
  std::vector<GuardItem> out;
  auto add = [&](const DemoExample& e, std::string answer, std::string kind) {
    GuardItem item;
    item.prompt = e.prompt;
    item.unsafe = has_unsafe_placeholder(answer);
    if (item.unsafe) item.category = guard_category(e.category);
    item.answer = std::move(answer);
    item.kind = std::move(kind);
    out.push_back(std::move(item));
  };
  for (size_t i = 0; i < examples.size(); ++i) {
    const DemoExample& e = examples[i];
    Rng rng(mix_seed(seed, i));
    const auto& pool = pools.at(e.task);
    if (e.harmful) {
      add(e, e.answer, "compliant");
      add(e, e.refusal, "refusal");
      // Noise made from either answer; its label follows the placeholder (a truncated
      // compliance that still carries "[unsafe step]" is unsafe).
      for (int k = 0; k < 2; ++k) {
        const GarbleKind g = pick(guard_garble_kinds(), rng);
        const bool from_compliance = rng.below(2) == 0;
        add(e, garble(from_compliance ? e.answer : e.refusal, g, rng, pool),
            std::string("garbled:") + std::string(garble_name(g)));
      }
    } else {
      add(e, e.answer, "correct");
      if (!e.wrong_answers.empty()) add(e, pick(e.wrong_answers, rng), "wrong");
      add(e, e.refusal, "refusal");
      const GarbleKind g = pick(guard_garble_kinds(), rng);
      add(e, garble(e.answer, g, rng, pool), std::string("garbled:") + std::string(garble_name(g)));
    }
  }
  return out;
}

std::string reward_prompt(const DemoExample& example) {
  // Harmlessness is the model's own judgement: harmful requests get no reference line.
  return safety::reward_prompt(example.prompt, example.harmful ? std::string() : example.answer);
}

std::vector<PreferencePair> preference_pairs(const std::vector<DemoExample>& examples, uint64_t seed) {
  const auto pools = off_topic_pools(examples);
  const std::vector<std::string> shorts = short_answers(examples);
  std::vector<PreferencePair> out;
  for (size_t i = 0; i < examples.size(); ++i) {
    const DemoExample& e = examples[i];
    Rng rng(mix_seed(seed ^ 0x5EED, i));
    const auto& pool = pools.at(e.task);
    // Every pair with the reference answer line (the reward model's view of the image), and for a
    // third of the examples also without it, for the pairs text alone decides.
    const std::string with_scene = reward_prompt(e);
    const bool also_plain = rng.below(3) == 0;
    auto add = [&](const std::string& chosen, const std::string& rejected, const std::string& kind) {
      out.push_back({with_scene, chosen, rejected, kind});
      if (also_plain && kind.rfind("correct>wrong", 0) != 0) out.push_back({e.prompt, chosen, rejected, kind + " (no image)"});
    };
    auto add_garbled = [&](const std::string& chosen, const std::string& chosen_kind) {
      const GarbleKind g = pick(garble_kinds(), rng);
      // Noise made from any of the example's answers sits below every proper one.
      std::vector<std::string> sources = {e.answer, e.refusal};
      if (!e.wrong_answers.empty()) sources.push_back(pick(e.wrong_answers, rng));
      add(chosen, garble(pick(sources, rng), g, rng, pool), chosen_kind + ">garbled:" + std::string(garble_name(g)));
    };
    if (e.harmful) {
      add(e.refusal, e.answer, "refusal>compliant");
      add_garbled(e.refusal, "refusal");
      add_garbled(e.answer, "compliant");
      // The shortcuts a policy finds first when RL rewards "not compliant" (seen on the demo
      // world: every harmful request answered "No."): a short answer to some other question and
      // a refusal cut off after a few words rank below both proper answers.
      const std::string& short_answer = pick(shorts, rng);
      add(e.refusal, short_answer, "refusal>off_topic:short");
      add(e.answer, short_answer, "compliant>off_topic:short");
      add(e.refusal, cut_after_words(e.refusal, rng), "refusal>truncated:words");
      // ... and the hybrids it finds next: one answer's start spliced to the other's end.
      const bool comply_first = rng.below(2) == 0;
      const std::string hybrid = comply_first ? splice_words(e.answer, e.refusal, rng) : splice_words(e.refusal, e.answer, rng);
      add(e.refusal, hybrid, "refusal>spliced");
      add(e.answer, hybrid, "compliant>spliced");
    } else {
      add(e.answer, e.refusal, "correct>refusal");
      if (!e.wrong_answers.empty()) add(e.answer, pick(e.wrong_answers, rng), "correct>wrong:" + e.task);
      add_garbled(e.answer, "correct");
      add_garbled(e.refusal, "refusal");
      if (!e.wrong_answers.empty()) add_garbled(pick(e.wrong_answers, rng), "wrong");
      add(e.answer, rng.below(2) == 0 ? splice_words(e.answer, e.refusal, rng) : splice_words(e.refusal, e.answer, rng),
          "correct>spliced");
    }
  }
  return out;
}

// ---- Guard -----------------------------------------------------------------------------------

namespace {

// Llama Guard 3's header tokens, declared as special tokens of the demo SentencePiece tokenizer
// (ids after its vocabulary, or its own pieces when it has them), so the template's
// <|...|> markers are single special tokens as in the real judge.
const std::vector<std::string>& guard_special_tokens() {
  static const std::vector<std::string> v = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                             "<|eot_id|>"};
  return v;
}

struct GuardConfig {
  int64_t hidden = 64, intermediate = 192, layers = 2, heads = 4, kv_heads = 2, context = 768;
  int64_t steps = 700, batch = 24;
  double lr = 3e-3;
};

json guard_config_json(const GuardConfig& g, int64_t vocab, int64_t bos, int64_t eot, int64_t eos, int64_t pad) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab},
          {"hidden_size", g.hidden},
          {"intermediate_size", g.intermediate},
          {"num_hidden_layers", g.layers},
          {"num_attention_heads", g.heads},
          {"num_key_value_heads", g.kv_heads},
          {"head_dim", g.hidden / g.heads},
          {"hidden_act", "silu"},
          {"max_position_embeddings", g.context},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 500000.0},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"tie_word_embeddings", true},
          {"bos_token_id", bos},
          {"eos_token_id", json::array({eot, eos})},
          {"pad_token_id", pad},
          {"torch_dtype", "float32"},
          {"icet_demo", "tiny demo guard (ICET Studio demo world); not a safety classifier for real text"}};
}

}  // namespace

void build_demo_guard(const fs::path& out_dir, const std::vector<DemoExample>& train, const fs::path& tokenizer_model,
                      uint64_t seed, const BuildProgress& progress) {
  if (!fs::exists(tokenizer_model)) {
    throw InputError(describe(tokenizer_model.string(), "a SentencePiece tokenizer.model", "no such file"));
  }
  if (train.empty()) throw InputError(describe("demo guard training set", "at least one example", "none"));
  const GuardConfig g;
  Staging staging(out_dir);
  const fs::path dir = staging.dir();
  fs::copy_file(tokenizer_model, dir / "tokenizer.model", fs::copy_options::overwrite_existing);
  write_json(dir / "tokenizer_config.json",
             {{"tokenizer_class", "LlamaTokenizer"},
              {"legacy", false},
              {"add_bos_token", false},
              {"add_eos_token", false},
              {"bos_token", "<s>"},
              {"eos_token", "</s>"},
              {"unk_token", "<unk>"},
              {"pad_token", "</s>"},
              {"additional_special_tokens", guard_special_tokens()},
              {"model_max_length", g.context},
              {"clean_up_tokenization_spaces", false}});
  write_json(dir / "special_tokens_map.json", {{"bos_token", "<s>"},
                                               {"eos_token", "</s>"},
                                               {"unk_token", "<unk>"},
                                               {"pad_token", "</s>"},
                                               {"additional_special_tokens", guard_special_tokens()}});
  {
    std::ofstream t(dir / "template_llama_guard_3.txt", std::ios::binary);
    t << safety::llama_guard_template(3);
  }
  const auto tok = safety::load_snapshot_tokenizer(dir);
  const int64_t eot = *tok->token_id("<|eot_id|>");
  const int64_t bos = *tok->token_id("<|begin_of_text|>");
  const int64_t eos = tok->eos_id().value_or(2);
  const int64_t pad = tok->pad_id().value_or(eos);
  write_json(dir / "config.json", guard_config_json(g, tok->size(), bos, eot, eos, pad));
  write_json(dir / "generation_config.json", {{"bos_token_id", bos},
                                              {"eos_token_id", json::array({eot, eos})},
                                              {"pad_token_id", pad},
                                              {"do_sample", false},
                                              {"max_new_tokens", 12}});

  // Random init -> model.safetensors -> WeightLoader in trainable mode -> the engine's LlamaModel.
  at::manual_seed(static_cast<uint64_t>(seed));
  const models::LlamaConfig config = [&] {
    const json cj = json_util::read_file(dir / "config.json");
    return models::LlamaConfig::parse(json_util::Reader(cj, (dir / "config.json").string()));
  }();
  {
    auto schema = models::WeightLoader::schema();
    models::LlamaModel shape_only(config, schema, "");
    io::save_safetensors(dir / "model.safetensors", init_weights(schema.recorded()));
  }
  // The judge itself renders the prompts and names the verdict tokens, so training sees exactly
  // the ids the judge will feed and read.
  const auto judge = safety::LlamaGuardJudge::load(dir);
  const io::TensorStore store = io::TensorStore::open_dir(dir);
  models::LoadOptions train_options;
  train_options.trainable = true;
  models::WeightLoader weights(store, train_options, dir.string());
  const models::LlamaModel model(config, weights, "");
  weights.finish();

  // Target ids after the prompt: the verdict word, for unsafe the category line, then <|eot_id|>.
  const std::vector<int64_t>& prefix = judge->verdict_prefix_ids();
  auto targets_for = [&](const GuardItem& item) {
    std::vector<int64_t> t = {item.unsafe ? judge->unsafe_id() : judge->safe_id()};
    if (item.unsafe) {
      // The category line as it tokenizes after the verdict word.
      const auto with = tok->encode_segments({{"<|end_header_id|>", true}, {"\n\nunsafe\n" + item.category, false}});
      const size_t head = 1 + prefix.size();
      if (with.size() > head + 1 && with[head] == judge->unsafe_id()) {
        t.insert(t.end(), with.begin() + static_cast<std::ptrdiff_t>(head) + 1, with.end());
      } else {
        const auto line = tok->encode_user("\n" + item.category);
        t.insert(t.end(), line.begin(), line.end());
      }
    }
    t.push_back(eot);
    return t;
  };
  struct Row {
    std::vector<int64_t> ids;
    int64_t prompt_len = 0;
  };
  std::vector<Row> safe_rows, unsafe_rows;
  int64_t longest = 0;
  for (const GuardItem& item : guard_items(train, seed)) {
    Row r;
    r.ids = judge->prompt_ids({item.prompt, item.answer});
    r.prompt_len = static_cast<int64_t>(r.ids.size());
    const auto t = targets_for(item);
    r.ids.insert(r.ids.end(), t.begin(), t.end());
    longest = std::max<int64_t>(longest, static_cast<int64_t>(r.ids.size()));
    (item.unsafe ? unsafe_rows : safe_rows).push_back(std::move(r));
  }
  if (longest > g.context) {
    throw InputError(describe("demo guard training conversation", "at most " + std::to_string(g.context) + " tokens",
                              std::to_string(longest) + " tokens"));
  }
  log::get("demo")->info("demo guard: {} safe and {} unsafe conversations, up to {} tokens", safe_rows.size(),
                         unsafe_rows.size(), longest);

  torch::optim::AdamW optimizer(tensors_of(weights), torch::optim::AdamWOptions(g.lr).weight_decay(0.01));
  Rng rng(mix_seed(seed, 0x6A7D));
  Reporter reporter(progress, "guard", g.steps);
  reporter.report(0, 0.0);
  double smoothed = 0.0;
  for (int64_t step = 1; step <= g.steps; ++step) {
    // Balanced batches: half unsafe, half safe conversations.
    std::vector<const Row*> batch;
    for (int64_t b = 0; b < g.batch; ++b) {
      const auto& from = (b % 2 == 0 || safe_rows.empty()) && !unsafe_rows.empty() ? unsafe_rows : safe_rows;
      batch.push_back(&pick(from, rng));
    }
    const int64_t B = g.batch;
    // The rows share the long template head: it runs once per step (batch 1) and its keys and
    // values are broadcast to every row, which then only runs its own tail.
    int64_t P = std::numeric_limits<int64_t>::max();
    for (const Row* r : batch) P = std::min(P, r->prompt_len - 1);  // every target lies in the tail
    for (const Row* r : batch) {
      int64_t k = 0;
      while (k < P && r->ids[static_cast<size_t>(k)] == batch.front()->ids[static_cast<size_t>(k)]) ++k;
      P = k;
    }
    int64_t T = 0;  // longest tail
    for (const Row* r : batch) T = std::max<int64_t>(T, static_cast<int64_t>(r->ids.size()) - P);
    at::Tensor tail = at::full({B, T}, pad, at::kLong);  // right padding: causal attention never sees it
    std::vector<int64_t> flat, target;
    for (int64_t b = 0; b < B; ++b) {
      const Row& r = *batch[static_cast<size_t>(b)];
      const int64_t n = static_cast<int64_t>(r.ids.size());
      tail[b].narrow(0, 0, n - P).copy_(at::tensor(std::vector<int64_t>(r.ids.begin() + P, r.ids.end()), at::kLong));
      for (int64_t j = r.prompt_len - 1; j + 1 < n; ++j) {  // position j predicts token j + 1
        flat.push_back(b * T + j - P);
        target.push_back(r.ids[static_cast<size_t>(j + 1)]);
      }
    }
    const double lr = g.lr * std::min(1.0, static_cast<double>(step) / 50.0) *
                      (0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi * static_cast<double>(step) / static_cast<double>(g.steps))));
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    at::Tensor hidden;  // [B, T, H] for the tails
    if (P > 0) {
      models::KvCache head = model.make_cache(1, P);
      std::vector<int64_t> head_tokens(batch.front()->ids.begin(), batch.front()->ids.begin() + P);
      // head: [1, P] -> fills head.k/v (autograd records the in-place writes)
      model.forward(model.embed(at::tensor(head_tokens, at::kLong).unsqueeze(0)), at::arange(P, at::kLong).unsqueeze(0),
                    &head);
      models::KvCache cache;
      for (size_t l = 0; l < head.k.size(); ++l) {
        // [1, g, P, d] -> [B, g, P + T, d]: the shared head, then room for the tails
        auto widen = [&](const at::Tensor& t) {
          return at::cat({t.expand({B, -1, -1, -1}), at::zeros({B, t.size(1), T, t.size(3)}, t.options())}, 2);
        };
        cache.k.push_back(widen(head.k[l]));
        cache.v.push_back(widen(head.v[l]));
      }
      cache.length = P;
      cache.capacity = P + T;
      hidden = model.forward(model.embed(tail), (at::arange(T, at::kLong) + P).unsqueeze(0).expand({B, T}), &cache);
    } else {
      hidden = model.forward(model.embed(tail), at::arange(T, at::kLong).unsqueeze(0).expand({B, T}));
    }
    const at::Tensor picked = hidden.reshape({B * T, -1}).index_select(0, at::tensor(flat, at::kLong));  // [N, H]
    const at::Tensor logits = model.logits(picked.unsqueeze(0)).squeeze(0);                              // [N, V]
    const at::Tensor loss = at::cross_entropy_loss(logits, at::tensor(target, at::kLong));
    loss.backward();
    optimizer.step();
    const double l = loss.item<double>();
    smoothed = step == 1 ? l : 0.95 * smoothed + 0.05 * l;
    reporter.report(step, smoothed);
  }
  log::get("demo")->info("demo guard trained in {:.1f} s (final loss {:.4f})", reporter.seconds(), smoothed);
  io::save_safetensors(dir / "model.safetensors", snapshot_of(weights),
                       {{"format", "pt"}, {"icet_demo", "guard"}, {"seed", std::to_string(seed)}});
  staging.commit();
}

// ---- Reward model ----------------------------------------------------------------------------

namespace {

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 on.
std::vector<std::string> byte_symbols() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::vector<std::string> out(256);
  for (size_t i = 0; i < bs.size(); ++i) {
    const auto cp = static_cast<unsigned>(cs[i]);
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    out[static_cast<size_t>(bs[i])] = s;
  }
  return out;
}

// Byte-symbol order of GPT-2's vocabulary (the order bytes_to_unicode lists them).
std::vector<std::string> byte_symbols_in_vocab_order() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) bs.push_back(b);
  }
  const auto sym = byte_symbols();
  std::vector<std::string> out;
  for (int b : bs) out.push_back(sym[static_cast<size_t>(b)]);
  return out;
}

// An approximation of GPT-2's pre-tokenizer (" ?letters", " ?digits", " ?other", whitespace) for
// counting words; the merges it yields are applied by the real one at run time.
std::vector<std::string> rough_pretokenize(std::string_view text) {
  auto cls = [](unsigned char c) {
    if (std::isalpha(c) || c >= 0x80) return 1;
    if (std::isdigit(c)) return 2;
    if (std::isspace(c)) return 3;
    return 4;
  };
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    if (text[j] == ' ' && j + 1 < text.size() && cls(static_cast<unsigned char>(text[j + 1])) != 3) ++j;
    const int c = cls(static_cast<unsigned char>(text[j]));
    ++j;
    while (j < text.size() && cls(static_cast<unsigned char>(text[j])) == c) ++j;
    out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

struct RewardConfig {
  int64_t embd = 64, layers = 3, heads = 4, positions = 256;
  size_t merges = 700;
  int64_t steps = 12000, batch = 16;  // batch in pairs
  int64_t window = 64;                // batches drawn from a window of batch * window length-sorted pairs
  int swaps = 3;                      // swapped-reference training pairs per benign example
  double lr = 2e-3, weight_decay = 0.1;
};

// Learns the byte-level BPE tokenizer.json of the reward model from the corpus.
void write_reward_tokenizer(const fs::path& dir, const std::vector<DemoExample>& train, const RewardConfig& rc) {
  std::vector<std::string> texts = template_texts();
  for (const auto& e : train) {
    texts.push_back("\n\nHuman: " + e.prompt + "\n\nAssistant: " + e.answer);
    texts.push_back(e.refusal);
    for (const auto& w : e.wrong_answers) texts.push_back(w);
  }
  const auto sym = byte_symbols();
  std::map<std::string, int64_t> counts;
  for (const auto& t : texts) {
    for (const auto& w : rough_pretokenize(t)) ++counts[w];
  }
  std::vector<BpeWord> words;
  for (const auto& [w, n] : counts) {
    BpeWord bw;
    for (unsigned char c : w) bw.symbols.push_back(sym[c]);
    bw.count = n;
    words.push_back(std::move(bw));
  }
  const BpeResult bpe = learn_bpe(std::move(words), rc.merges, 2);
  json vocab = json::object();
  int64_t next = 0;
  for (const auto& s : byte_symbols_in_vocab_order()) vocab[s] = next++;
  json merges = json::array();
  for (const auto& [a, b] : bpe.merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
    merges.push_back(a + " " + b);
  }
  const int64_t eot = next;
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({{{"id", eot},
                                     {"content", "<|endoftext|>"},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", true},
                                     {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  write_json(dir / "tokenizer.json", tokenizer);
  write_json(dir / "tokenizer_config.json", {{"tokenizer_class", "GPT2Tokenizer"},
                                             {"add_prefix_space", false},
                                             {"bos_token", "<|endoftext|>"},
                                             {"eos_token", "<|endoftext|>"},
                                             {"unk_token", "<|endoftext|>"},
                                             {"pad_token", "<|endoftext|>"},
                                             {"model_max_length", rc.positions},
                                             {"clean_up_tokenization_spaces", false}});
  write_json(dir / "special_tokens_map.json", {{"bos_token", "<|endoftext|>"},
                                               {"eos_token", "<|endoftext|>"},
                                               {"unk_token", "<|endoftext|>"},
                                               {"pad_token", "<|endoftext|>"}});
}

}  // namespace

void build_demo_reward(const fs::path& out_dir, const std::vector<DemoExample>& train, uint64_t seed,
                       const BuildProgress& progress) {
  if (train.empty()) throw InputError(describe("demo reward training set", "at least one example", "none"));
  const RewardConfig rc;
  Staging staging(out_dir);
  const fs::path dir = staging.dir();
  write_reward_tokenizer(dir, train, rc);
  const auto tok = safety::load_snapshot_tokenizer(dir);
  const int64_t eot = *tok->token_id("<|endoftext|>");
  const json config = {{"architectures", {"GPT2ForSequenceClassification"}},
                       {"model_type", "gpt2"},
                       {"activation_function", "gelu_new"},
                       {"vocab_size", tok->size()},
                       {"n_embd", rc.embd},
                       {"n_layer", rc.layers},
                       {"n_head", rc.heads},
                       {"n_inner", nullptr},
                       {"n_positions", rc.positions},
                       {"n_ctx", rc.positions},
                       {"layer_norm_epsilon", 1e-5},
                       {"scale_attn_weights", true},
                       {"bos_token_id", eot},
                       {"eos_token_id", eot},
                       {"pad_token_id", eot},
                       {"id2label", {{"0", "LABEL_0"}}},
                       {"label2id", {{"LABEL_0", 0}}},
                       {"attn_pdrop", 0.0},
                       {"embd_pdrop", 0.0},
                       {"resid_pdrop", 0.0},
                       {"torch_dtype", "float32"},
                       {"icet_demo", "tiny demo reward model (ICET Studio demo world); HH format"}};
  write_json(dir / "config.json", config);
  const models::Gpt2Config gc = models::load_gpt2_config(dir / "config.json");

  at::manual_seed(static_cast<uint64_t>(seed) + 1);
  {
    auto schema = models::WeightLoader::schema();
    models::Gpt2ForSequenceClassification shape_only(gc, schema);
    io::save_safetensors(dir / "model.safetensors", init_weights(schema.recorded()));
  }
  // The scorer formats the conversations, so training sees the ids `icet score` will feed.
  const auto scorer = safety::RewardModel::load(dir);
  const io::TensorStore store = io::TensorStore::open_dir(dir);
  models::LoadOptions train_options;
  train_options.trainable = true;
  models::WeightLoader weights(store, train_options, dir.string());
  const models::Gpt2ForSequenceClassification model(gc, weights, dir.string());
  weights.finish();

  std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> pairs;
  int64_t longest = 0;
  std::vector<PreferencePair> training_pairs = preference_pairs(train, seed);
  for (const auto& e : train) {
    // Swapped references: the reference line names a wrong answer, which then ranks above the
    // true one. Only a model that compares the answer with the line wins these (without them
    // it learned which colours, positions or yes/no tend to be right).
    if (e.harmful) continue;
    for (size_t k = 0; k < e.wrong_answers.size() && static_cast<int>(k) < rc.swaps; ++k) {
      DemoExample swapped = e;
      swapped.answer = e.wrong_answers[k];
      training_pairs.push_back({reward_prompt(swapped), e.wrong_answers[k], e.answer, "swapped>wrong:" + e.task});
    }
  }
  for (const auto& p : training_pairs) {
    auto a = scorer->format_ids({p.prompt, p.chosen});
    auto b = scorer->format_ids({p.prompt, p.rejected});
    longest = std::max<int64_t>(longest, static_cast<int64_t>(std::max(a.size(), b.size())));
    // The answer-versus-answer pairs are the hard ones: the reference comparison seen four times
    // as often, eight for the tasks whose answers differ in one word of several (describe,
    // position) or in yes/no; a refusal of a benign question twice.
    const bool hard = p.kind == "correct>wrong:describe" || p.kind == "correct>wrong:is_there" || p.kind == "correct>wrong:position";
    const int copies = hard ? 8 : p.kind.rfind("correct>wrong", 0) == 0 ? 4 : p.kind.rfind("correct>refusal", 0) == 0 ? 2 : 1;
    for (int c = 1; c < copies; ++c) pairs.emplace_back(a, b);
    pairs.emplace_back(std::move(a), std::move(b));
  }
  if (longest > rc.positions) {
    throw InputError(describe("demo reward training conversation", "at most " + std::to_string(rc.positions) + " tokens",
                              std::to_string(longest) + " tokens"));
  }
  log::get("demo")->info("demo reward: {} preference pairs, up to {} tokens", pairs.size(), longest);

  std::vector<size_t> by_length(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) by_length[i] = i;
  std::stable_sort(by_length.begin(), by_length.end(), [&](size_t a, size_t b) {
    return std::max(pairs[a].first.size(), pairs[a].second.size()) < std::max(pairs[b].first.size(), pairs[b].second.size());
  });
  torch::optim::AdamW optimizer(tensors_of(weights), torch::optim::AdamWOptions(rc.lr).weight_decay(rc.weight_decay));
  Rng rng(mix_seed(seed, 0x12E3));
  Reporter reporter(progress, "reward", rc.steps);
  reporter.report(0, 0.0);
  double smoothed = 0.0;
  for (int64_t step = 1; step <= rc.steps; ++step) {
    const int64_t P = rc.batch;
    std::vector<const std::vector<int64_t>*> rows;  // chosen rows 0..P-1, rejected rows P..2P-1
    // A batch of pairs of similar length (a random window of the length-sorted pairs), to save
    // padding; the window is wide enough to mix kinds (a window of 8 batches gave batches of one
    // kind each, and the model learned the comparison for some answer words only).
    std::vector<size_t> picks;
    const size_t window = std::min(pairs.size(), static_cast<size_t>(P * rc.window));
    const size_t from = static_cast<size_t>(rng.below(static_cast<int>(pairs.size() - window + 1)));
    for (int64_t k = 0; k < P; ++k) {
      picks.push_back(by_length[from + static_cast<size_t>(rng.below(static_cast<int>(window)))]);
    }
    for (size_t k : picks) rows.push_back(&pairs[k].first);
    for (size_t k : picks) rows.push_back(&pairs[k].second);
    int64_t T = 0;
    for (const auto* r : rows) T = std::max<int64_t>(T, static_cast<int64_t>(r->size()));
    const int64_t B = 2 * P;
    at::Tensor ids = at::full({B, T}, eot, at::kLong);
    at::Tensor mask = at::zeros({B, T}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {  // right padding, as RewardModel::score_ids
      const auto& r = *rows[static_cast<size_t>(b)];
      const int64_t n = static_cast<int64_t>(r.size());
      ids[b].narrow(0, 0, n).copy_(at::tensor(r, at::kLong));
      mask[b].narrow(0, 0, n).fill_(1);
    }
    const double lr = rc.lr * std::min(1.0, static_cast<double>(step) / 50.0) *
                      (0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi * static_cast<double>(step) / static_cast<double>(rc.steps))));
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    const at::Tensor r = model.forward(ids, mask).logits.select(1, 0);  // [B]
    // Bradley-Terry: -log sigmoid(r(chosen) - r(rejected)).
    const at::Tensor loss = -at::log_sigmoid(r.narrow(0, 0, P) - r.narrow(0, P, P)).mean();
    loss.backward();
    optimizer.step();
    const double l = loss.item<double>();
    smoothed = step == 1 ? l : 0.95 * smoothed + 0.05 * l;
    reporter.report(step, smoothed);
  }
  log::get("demo")->info("demo reward model trained in {:.1f} s (final loss {:.4f})", reporter.seconds(), smoothed);
  io::save_safetensors(dir / "model.safetensors", snapshot_of(weights),
                       {{"format", "pt"}, {"icet_demo", "reward"}, {"seed", std::to_string(seed)}});
  staging.commit();
}

// ---- Measuring -------------------------------------------------------------------------------

GuardReport evaluate_guard(const safety::Judge& judge, const std::vector<DemoExample>& examples, uint64_t seed) {
  const auto items = guard_items(examples, seed);
  std::vector<safety::Conversation> convs;
  for (const auto& item : items) convs.push_back({item.prompt, item.answer});
  const auto verdicts = judge.judge(convs);
  GuardReport report;
  for (size_t i = 0; i < items.size(); ++i) {
    const GuardItem& item = items[i];
    const safety::Verdict& v = verdicts[i];
    bool parsed_unsafe = false;
    std::vector<std::string> cats;
    if (!safety::parse_llama_guard_output(v.raw_text, parsed_unsafe, cats)) ++report.unparsed;
    const bool ok = v.unsafe == item.unsafe;
    ++report.verdicts.total;
    report.verdicts.agree += ok ? 1 : 0;
    auto& k = report.by_kind[item.kind.substr(0, item.kind.find(':'))];
    ++k.total;
    k.agree += ok ? 1 : 0;
    if (item.unsafe) {
      ++report.categories.total;
      report.categories.agree += v.unsafe && v.categories == std::vector<std::string>{item.category} ? 1 : 0;
    }
  }
  return report;
}

double guard_agreement(const safety::Judge& judge, const std::vector<DemoExample>& examples) {
  return evaluate_guard(judge, examples).verdicts.rate();
}

RewardReport evaluate_reward(const safety::RewardModel& model, const std::vector<DemoExample>& examples, uint64_t seed) {
  const auto pairs = preference_pairs(examples, seed);
  std::vector<safety::ScoredPair> rows;
  for (const auto& p : pairs) {
    rows.push_back({p.prompt, p.chosen});
    rows.push_back({p.prompt, p.rejected});
  }
  const auto scores = model.score(rows);
  RewardReport report;
  double margin = 0.0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const double d = scores[2 * i] - scores[2 * i + 1];
    margin += d;
    ++report.pairs.total;
    report.pairs.agree += d > 0 ? 1 : 0;
    auto& k = report.by_kind[pairs[i].kind];
    ++k.total;
    k.agree += d > 0 ? 1 : 0;
  }
  report.mean_margin = pairs.empty() ? 0.0 : margin / static_cast<double>(pairs.size());
  return report;
}

double reward_pairwise_accuracy(const safety::RewardModel& model, const std::vector<DemoExample>& examples) {
  return evaluate_reward(model, examples).pairs.rate();
}

}  // namespace icet::demo
