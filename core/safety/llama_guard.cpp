#include "core/safety/llama_guard.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/base/strings.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/safety/snapshot_tokenizer.h"
#include "core/text/chat_template.h"

namespace icet::safety {
namespace {

#include "core/safety/llama_guard_templates.inc"

constexpr std::string_view kRole = "{{ role }}";
constexpr std::string_view kUser = "{{ user_message_1 }}";
constexpr std::string_view kAgent = "{{ model_answer_1 }}";
constexpr std::string_view kAgentLine = "Agent: {{ model_answer_1 }}\n\n";

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

// The template with role filled in and, for prompt classification, the Agent line removed.
std::string prepare(const std::string& template_text, const Conversation& c) {
  std::string t = template_text;
  const bool has_response = !trim(c.response).empty();
  if (!has_response) {
    replace_all(t, kAgentLine, "");
  }
  replace_all(t, kRole, has_response ? "Agent" : "User");
  return t;
}

std::string read_text_file(const std::filesystem::path& file) {
  return read_file_limited(file, 16ull << 20, "a template file");
}

}  // namespace

const std::string& llama_guard_template(int version) {
  static const std::string v1 = kLlamaGuard1, v2 = kLlamaGuard2, v3 = kLlamaGuard3;
  switch (version) {
    case 1: return v1;
    case 2: return v2;
    case 3: return v3;
    default:
      throw InputError(describe("Llama Guard version", "1, 2 or 3", std::to_string(version)));
  }
}

std::vector<std::pair<std::string, std::string>> llama_guard_categories(int version) {
  switch (version) {
    case 1:
      return {{"O1", "Violence and Hate"}, {"O2", "Sexual Content"}, {"O3", "Criminal Planning"},
              {"O4", "Guns and Illegal Weapons"}, {"O5", "Regulated or Controlled Substances"}, {"O6", "Self-Harm"}};
    case 2:
      return {{"S1", "Violent Crimes"},       {"S2", "Non-Violent Crimes"},  {"S3", "Sex Crimes"},
              {"S4", "Child Exploitation"},   {"S5", "Specialized Advice"},  {"S6", "Privacy"},
              {"S7", "Intellectual Property"}, {"S8", "Indiscriminate Weapons"}, {"S9", "Hate"},
              {"S10", "Self-Harm"},           {"S11", "Sexual Content"}};
    case 3:
      return {{"S1", "Violent Crimes"},   {"S2", "Non-Violent Crimes"},     {"S3", "Sex Crimes"},
              {"S4", "Child Exploitation"}, {"S5", "Defamation"},          {"S6", "Specialized Advice"},
              {"S7", "Privacy"},          {"S8", "Intellectual Property"}, {"S9", "Indiscriminate Weapons"},
              {"S10", "Hate"},            {"S11", "Self-Harm"},            {"S12", "Sexual Content"},
              {"S13", "Elections"},       {"S14", "Code Interpreter Abuse"}};
    default:
      throw InputError(describe("Llama Guard version", "1, 2 or 3", std::to_string(version)));
  }
}

std::string render_llama_guard(const std::string& template_text, const Conversation& c) {
  // One pass, so a message that contains placeholder text is never substituted again.
  const std::string t = prepare(template_text, c);
  const std::string user = trim(c.prompt), agent = trim(c.response);
  std::string out;
  size_t pos = 0;
  while (pos < t.size()) {
    const size_t u = t.find(kUser, pos), a = t.find(kAgent, pos);
    const size_t next = std::min(u, a);
    if (next == std::string::npos) {
      out += t.substr(pos);
      break;
    }
    out += t.substr(pos, next - pos);
    out += next == u ? user : agent;
    pos = next + (next == u ? kUser.size() : kAgent.size());
  }
  return out;
}

std::vector<text::Segment> llama_guard_segments(const std::string& template_text, const Conversation& c,
                                                const text::Tokenizer& tokenizer) {
  const std::string t = prepare(template_text, c);
  std::vector<text::Segment> out;
  const std::string user = trim(c.prompt), agent = trim(c.response);
  size_t pos = 0;
  while (pos < t.size()) {
    const size_t u = t.find(kUser, pos), a = t.find(kAgent, pos);
    const size_t next = std::min(u, a);
    if (next == std::string::npos) {
      text::append_template_text(std::string_view(t).substr(pos), tokenizer, out);
      break;
    }
    text::append_template_text(std::string_view(t).substr(pos, next - pos), tokenizer, out);
    text::append_plain_text(next == u ? user : agent, out);  // user text: never parsed for special tokens
    pos = next + (next == u ? kUser.size() : kAgent.size());
  }
  return out;
}

GreedyOutput greedy_generate(const models::LlamaModel& model, const std::vector<std::vector<int64_t>>& rows,
                             int64_t pad_id, int64_t max_new_tokens, const std::vector<int64_t>& stop_ids) {
  c10::InferenceMode guard;
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t T = 0;
  for (const auto& r : rows) T = std::max<int64_t>(T, static_cast<int64_t>(r.size()));
  GreedyOutput out;
  out.input_ids = at::full({B, T}, pad_id, at::kLong);
  out.attention_mask = at::zeros({B, T}, at::kLong);
  std::vector<int64_t> n_real(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = rows[static_cast<size_t>(b)];
    const int64_t n = static_cast<int64_t>(r.size());
    n_real[static_cast<size_t>(b)] = n;
    out.input_ids[b].narrow(0, T - n, n).copy_(at::tensor(r, at::kLong));  // left padding
    out.attention_mask[b].narrow(0, T - n, n).fill_(1);
  }
  out.prefill_positions = (out.attention_mask.cumsum(-1) - 1).masked_fill(out.attention_mask.eq(0), 1);
  const auto dev = model.inv_freq().device();
  const at::Tensor n_real_t = at::tensor(n_real, at::kLong);

  models::KvCache cache = model.make_cache(B, T + max_new_tokens);
  at::Tensor mask = out.attention_mask.to(dev);
  at::Tensor hidden =
      model.forward(model.embed(out.input_ids), out.prefill_positions.to(dev), &cache, mask, /*last_only=*/true);
  at::Tensor logits = model.logits(hidden).squeeze(1);  // [B,V]
  std::vector<at::Tensor> ids, steps, positions;
  at::Tensor done = at::zeros({B}, at::TensorOptions().dtype(at::kBool).device(dev));
  at::Tensor stops = at::tensor(stop_ids.empty() ? std::vector<int64_t>{-1} : stop_ids, at::kLong).to(dev);
  out.lengths.assign(static_cast<size_t>(B), 0);
  for (int64_t s = 0; s < max_new_tokens; ++s) {
    at::Tensor next = logits.argmax(-1);  // [B]
    next = next.masked_fill(done, pad_id);
    steps.push_back(logits.to(at::kFloat).cpu());
    ids.push_back(next.cpu());
    positions.push_back(n_real_t - 1 + s);
    const at::Tensor stopped = at::isin(next, stops).logical_or(done);
    const at::Tensor stopped_cpu = stopped.cpu().contiguous();  // one device sync per step, not one per row
    const bool* st = stopped_cpu.data_ptr<bool>();
    for (int64_t b = 0; b < B; ++b) {
      if (!st[b]) ++out.lengths[static_cast<size_t>(b)];
    }
    done = stopped;
    if (s + 1 == max_new_tokens || std::all_of(st, st + B, [](bool x) { return x; })) break;
    mask = at::cat({mask, at::ones({B, 1}, mask.options())}, 1);
    const at::Tensor pos = (n_real_t + s).view({B, 1}).to(dev);
    hidden = model.forward(model.embed(next.view({B, 1})), pos, &cache, mask);
    logits = model.logits(hidden).squeeze(1);
  }
  out.ids = at::stack(ids, 1);
  out.step_logits = at::stack(steps, 1);
  out.decode_positions = at::stack(positions, 1);
  return out;
}

bool parse_llama_guard_output(const std::string& text, bool& unsafe, std::vector<std::string>& categories) {
  categories.clear();
  const std::string t = trim(text);
  const size_t nl = t.find('\n');
  const std::string first = trim(t.substr(0, nl));
  if (first != "safe" && first != "unsafe") {
    return false;
  }
  unsafe = first == "unsafe";
  if (unsafe && nl != std::string::npos) {
    std::string second = t.substr(nl + 1);
    second = trim(second.substr(0, second.find('\n')));
    std::stringstream list(second);
    for (std::string item; std::getline(list, item, ',');) {
      if (!trim(item).empty()) categories.push_back(trim(item));
    }
  }
  return true;
}

std::unique_ptr<LlamaGuardJudge> LlamaGuardJudge::load(const std::filesystem::path& dir, const Options& options) {
  std::unique_ptr<LlamaGuardJudge> j(new LlamaGuardJudge());
  j->dir_ = dir;
  j->options_ = options;
  const std::filesystem::path config_json = dir / "config.json";
  if (!std::filesystem::exists(config_json)) {
    throw InputError(describe(dir.string(), "a Llama Guard snapshot folder with config.json", "no config.json",
                              "Choose the folder that holds config.json, *.safetensors and the tokenizer."));
  }
  const nlohmann::json cj = json_util::read_file(config_json);
  const json_util::Reader r(cj, config_json.string());
  const models::LlamaConfig config = models::LlamaConfig::parse(r);
  j->tokenizer_ = load_snapshot_tokenizer(dir);

  // Version and template: explicit option, a template file, the chat template's wording, the vocabulary.
  int version = options.version;
  std::optional<text::ChatTemplate> snapshot_template = text::ChatTemplate::load(dir);
  const std::string chat_template = snapshot_template ? snapshot_template->source() : std::string();
  for (int v = 3; v >= 1 && version == 0; --v) {
    if (std::filesystem::exists(dir / ("template_llama_guard_" + std::to_string(v) + ".txt"))) version = v;
  }
  if (version == 0 && !chat_template.empty()) {
    if (chat_template.find("<|start_header_id|>") != std::string::npos) version = 3;
    else if (chat_template.find("S1: Violent Crimes") != std::string::npos) version = 2;
    else if (chat_template.find("O1: Violence and Hate") != std::string::npos) version = 1;
  }
  if (version == 0 && config.vocab_size == 32000) version = 1;
  if (version == 0) {
    throw InputError(describe(dir.string(), "a recognisable Llama Guard snapshot (template file or chat template)",
                              "neither", "Pass the Llama Guard version (1, 2 or 3) explicitly."));
  }
  const std::filesystem::path template_file = dir / ("template_llama_guard_" + std::to_string(version) + ".txt");
  if (std::filesystem::exists(template_file)) {
    j->template_ = read_text_file(template_file);
    j->template_origin_ = template_file.filename().string();
  } else if (snapshot_template && options.use_chat_template) {
    j->template_ = snapshot_template->source();
    j->template_origin_ = snapshot_template->origin();
    j->chat_template_ = std::move(snapshot_template);
  } else {
    j->template_ = llama_guard_template(version);
    j->template_origin_ = "built-in Llama Guard " + std::to_string(version) + " template";
  }
  j->version_ = version;

  const io::TensorStore store = io::TensorStore::open_dir(dir);
  models::WeightLoader weights(store, options.load, dir.string());
  j->model_ = std::make_unique<models::LlamaModel>(config, weights, "");
  weights.finish();

  const text::Tokenizer& tok = *j->tokenizer_;
  // Verdict tokens: the first token of the word as the model writes it at the verdict step.
  // v1 (SentencePiece after text) writes "▁safe"; v2/v3 write "safe" right after a header or "\n\n".
  auto verdict_id = [&](const std::string& word) -> int64_t {
    for (const std::string& piece : version == 1 ? std::vector<std::string>{"\xE2\x96\x81" + word, word}
                                                 : std::vector<std::string>{word, "\xE2\x96\x81" + word}) {
      if (auto id = tok.token_id(piece)) return *id;
    }
    const auto ids = tok.encode_user(word);
    if (ids.empty()) throw InputError(describe(dir.string() + ": tokenizer", "a token for '" + word + "'", "none"));
    return ids.front();
  };
  j->safe_id_ = verdict_id("safe");
  j->unsafe_id_ = verdict_id("unsafe");
  if (version == 3) {
    // "\n\n" as it tokenizes after the prompt's final header token.
    const auto with = tok.encode_segments({{"<|end_header_id|>", true}, {"\n\n", false}});
    j->prefix_ids_.assign(with.begin() + 1, with.end());
  }
  const models::GenerationConfig gen = models::load_generation_config(dir / "generation_config.json");
  j->stop_ids_ = !gen.eos_token_ids.empty() ? gen.eos_token_ids : config.eos_token_ids;
  if (auto eos = tok.eos_id()) j->stop_ids_.push_back(*eos);
  j->pad_id_ = gen.pad_token_id ? gen.pad_token_id : config.pad_token_id ? config.pad_token_id : tok.pad_id();
  j->id_ = "llama-guard-" + std::to_string(version) + ":" + dir.filename().string() + "@" + store.content_hash();
  log::get("safety")->info("Llama Guard {} judge from {} (prompt: {}; verdict tokens safe={} unsafe={})", version,
                           dir.string(), j->template_origin_, j->safe_id_, j->unsafe_id_);
  return j;
}

namespace {

// [user] for prompt classification, [user, assistant] for response classification.
std::vector<text::ChatMessage> messages(const Conversation& c) {
  std::vector<text::ChatMessage> m = {{"user", c.prompt}};
  if (!trim(c.response).empty()) m.push_back({"assistant", c.response});
  return m;
}

}  // namespace

std::vector<int64_t> LlamaGuardJudge::prompt_ids(const Conversation& c) const {
  std::vector<int64_t> ids = tokenizer_->encode_segments(
      chat_template_ ? chat_template_->render(messages(c), /*add_generation_prompt=*/false, *tokenizer_)
                     : llama_guard_segments(template_, c, *tokenizer_));
  ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
  return ids;
}

std::vector<Verdict> LlamaGuardJudge::judge(const std::vector<Conversation>& conversations) const {
  std::vector<Verdict> out;
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, options_.batch_size));
  for (size_t i = 0; i < conversations.size(); i += chunk) {
    const std::vector<Conversation> part(conversations.begin() + static_cast<std::ptrdiff_t>(i),
                                         conversations.begin() + static_cast<std::ptrdiff_t>(std::min(i + chunk, conversations.size())));
    auto verdicts = judge_chunk(part);
    out.insert(out.end(), verdicts.begin(), verdicts.end());
  }
  return out;
}

std::vector<Verdict> LlamaGuardJudge::judge_chunk(const std::vector<Conversation>& conversations) const {
  c10::InferenceMode guard;
  std::vector<std::vector<int64_t>> rows;
  const int64_t context = model_->config().max_position_embeddings;
  for (size_t i = 0; i < conversations.size(); ++i) {
    rows.push_back(prompt_ids(conversations[i]));
    const int64_t need = static_cast<int64_t>(rows.back().size()) + options_.max_new_tokens;
    if (need > context) {
      throw InputError(describe(dir_.string() + ": conversation " + std::to_string(i),
                                "at most max_position_embeddings = " + std::to_string(context) +
                                    " positions (prompt + " + std::to_string(options_.max_new_tokens) + " new tokens)",
                                std::to_string(need), "Shorten the prompt or the response."));
    }
  }
  if (rows.size() > 1 && !pad_id_) {
    throw InputError(describe(dir_.string() + ": pad token (generation_config.json, config.json or tokenizer)",
                              "a pad token id to batch conversations", "none",
                              "Judge one conversation at a time, or set pad_token_id in generation_config.json."));
  }
  const GreedyOutput g = greedy_generate(*model_, rows, pad_id_.value_or(0), options_.max_new_tokens, stop_ids_);
  const at::Tensor logp = at::log_softmax(g.step_logits.select(1, 0), -1);  // [B,V] at the verdict step
  std::vector<Verdict> out;
  for (size_t b = 0; b < rows.size(); ++b) {
    Verdict v;
    v.judge_id = id_;
    const int64_t bi = static_cast<int64_t>(b);
    const double lp_unsafe = logp[bi][unsafe_id_].item<double>(), lp_safe = logp[bi][safe_id_].item<double>();
    v.p_unsafe = std::exp(lp_unsafe);
    std::vector<int64_t> generated = prefix_ids_;
    const at::Tensor row_t = g.ids[bi].narrow(0, 0, g.lengths[b]).contiguous();
    const std::vector<int64_t> row(row_t.data_ptr<int64_t>(), row_t.data_ptr<int64_t>() + row_t.numel());
    generated.insert(generated.end(), row.begin(), row.end());
    v.raw_text = tokenizer_->decode(generated, /*skip_special_tokens=*/true);
    if (!parse_llama_guard_output(v.raw_text, v.unsafe, v.categories)) {
      // Not a Llama Guard answer (e.g. an untrained model): decide from the verdict-step probabilities.
      v.unsafe = lp_unsafe > lp_safe;
      log::get("safety")->warn("{}: output does not start with 'safe' or 'unsafe' (\"{}\"); verdict from P(unsafe)",
                               id_, v.raw_text.substr(0, 40));
    }
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace icet::safety
