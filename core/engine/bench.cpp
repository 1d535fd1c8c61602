#include "core/engine/bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/engine/session.h"
#include "core/io/safetensors.h"
#include "core/models/llava.h"
#include "core/models/llava_next.h"
#include "core/runtime/diagnostics.h"
#include "core/runtime/threads.h"
#include "core/text/sentencepiece_writer.h"
#include "core/vision/image.h"

namespace icet::engine {
namespace {

void write_json(const std::filesystem::path& file, const nlohmann::json& j) {
  std::ofstream out(file);
  out << j.dump(2) << "\n";
  if (!out) throw EnvironmentError(file.string() + ": cannot write");
}

// A deterministic test card: colour gradients and a few blocks.
vision::Image test_image(int width, int height) {
  vision::Image img;
  img.width = width;
  img.height = height;
  img.rgb.resize(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* px = &img.rgb[(static_cast<size_t>(y) * width + x) * 3];
      const bool block = ((x / 8) + (y / 8)) % 3 == 0;
      px[0] = static_cast<uint8_t>(block ? 230 : (x * 255) / std::max(1, width - 1));
      px[1] = static_cast<uint8_t>(block ? 40 : (y * 255) / std::max(1, height - 1));
      px[2] = static_cast<uint8_t>(((x + y) * 255) / std::max(1, width + height - 2));
    }
  }
  return img;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

std::string SyntheticLlava::describe() const {
  return "synthetic LLaVA-1.5 layout (24 vision / " + std::to_string(text_layers) + " text layers, widths " +
         std::to_string(vision_hidden) + " / " + std::to_string(text_hidden) + ", " + std::to_string(image_tokens()) +
         " image tokens)";
}

void write_synthetic_llava(const std::filesystem::path& dir, const SyntheticLlava& shape, uint64_t seed) {
  const int64_t image_size = shape.image_size, patch_size = shape.patch_size;
  std::filesystem::create_directories(dir);
  // Tokenizer: byte fallback plus enough English pieces for readable prompts.
  std::vector<std::string> pieces = {"▁", "e", "t", "a", "o", "i", "n", "s", "r", "h", "l", "d", "c", "u",
                                     "m", "p", "g", "y", "w", "f", "b", ".", "?", ":", "U", "S", "E", "R",
                                     "A", "I", "T", "N", "D", "W", "▁t", "he", "▁a", "in", "er", "▁the"};
  // Whole words, as a real LLaMA vocabulary has them: BPE reaches a word only through its
  // prefixes, so every prefix is a piece too.
  for (std::string word : {"USER", "▁ASSISTANT", "What", "▁What", "▁is", "▁in", "▁picture", "▁Describe", "▁image"}) {
    // Shortest new prefix: "▁" plus one letter, or two letters (single letters are pieces).
    const size_t shortest = word.rfind("▁", 0) == 0 ? std::string("▁").size() + 1 : 2;
    for (size_t n = shortest; n <= word.size(); ++n) pieces.push_back(word.substr(0, n));
  }
  std::vector<std::string> unique;
  for (const auto& p : pieces) {
    if (std::find(unique.begin(), unique.end(), p) == unique.end()) unique.push_back(p);
  }
  const auto vocab = text::byte_fallback_vocabulary(unique);
  text::write_sentencepiece_model(dir / "tokenizer.model", vocab);
  const int64_t image_token = static_cast<int64_t>(vocab.size());
  const int64_t pad_token = image_token + 1;
  auto added = [](const std::string& content) {
    return nlohmann::json{{"content", content}, {"lstrip", false}, {"normalized", false},
                          {"rstrip", false},    {"single_word", false}, {"special", true}};
  };
  write_json(dir / "tokenizer_config.json",
             {{"add_bos_token", true}, {"add_eos_token", false}, {"add_prefix_space", true}, {"legacy", false},
              {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"},
              {"tokenizer_class", "LlamaTokenizer"},
              {"added_tokens_decoder",
               {{"0", added("<unk>")}, {"1", added("<s>")}, {"2", added("</s>")},
                {std::to_string(image_token), added("<image>")}, {std::to_string(pad_token), added("<pad>")}}}});
  write_json(dir / "added_tokens.json", {{"<image>", image_token}, {"<pad>", pad_token}});
  write_json(dir / "special_tokens_map.json",
             {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"}});
  write_json(dir / "preprocessor_config.json",
             {{"image_processor_type", "CLIPImageProcessor"}, {"do_resize", true},
              {"size", {{"shortest_edge", image_size}}}, {"do_center_crop", true},
              {"crop_size", {{"height", image_size}, {"width", image_size}}}, {"resample", 3},
              {"do_rescale", true}, {"rescale_factor", 1.0 / 255.0}, {"do_normalize", true},
              {"image_mean", {0.48145466, 0.4578275, 0.40821073}}, {"image_std", {0.26862954, 0.26130258, 0.27577711}},
              {"do_convert_rgb", true}});
  write_json(dir / "generation_config.json", {{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", pad_token}});
  const int64_t patches = (image_size / patch_size) * (image_size / patch_size);
  const nlohmann::json config = {
      {"model_type", "llava"},
      {"architectures", {"LlavaForConditionalGeneration"}},
      {"image_token_index", image_token},
      {"pad_token_id", pad_token},
      {"image_seq_length", patches},
      {"projector_hidden_act", "gelu"},
      {"vision_feature_layer", -2},
      {"vision_feature_select_strategy", "default"},
      {"vision_config",
       {{"model_type", "clip_vision_model"}, {"hidden_size", shape.vision_hidden},
        {"intermediate_size", 2 * shape.vision_hidden},
        {"num_hidden_layers", 24}, {"num_attention_heads", 4}, {"image_size", image_size},
        {"patch_size", patch_size}, {"projection_dim", shape.vision_hidden}}},
      {"text_config",
       {{"model_type", "llama"}, {"hidden_size", shape.text_hidden}, {"intermediate_size", 2 * shape.text_hidden},
        {"num_hidden_layers", shape.text_layers},
        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", pad_token + 1},
        {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}}}};
  write_json(dir / "config.json", config);

  // Random weights with O(1) activations: N(0, 1/fan_in) matrices, norms near 1.
  const models::LlavaConfig cfg = models::LlavaConfig::parse(json_util::Reader(config, "synthetic config.json"));
  auto schema = models::WeightLoader::schema();
  models::LlavaModel shape_only(cfg, schema);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& e : schema.recorded()) {
    at::Tensor t;
    const bool is_bias = e.name.size() > 5 && e.name.compare(e.name.size() - 5, 5, ".bias") == 0;
    if (e.shape.size() == 1 && !is_bias && e.name.find("class_embedding") == std::string::npos) {
      t = 1.0 + 0.01 * at::randn(e.shape, gen, at::TensorOptions().dtype(at::kFloat));  // norm gains
    } else if (e.shape.size() == 1) {
      t = 0.01 * at::randn(e.shape, gen, at::TensorOptions().dtype(at::kFloat));
    } else if (e.name.find("embed") != std::string::npos) {
      t = 0.5 * at::randn(e.shape, gen, at::TensorOptions().dtype(at::kFloat));
    } else {
      int64_t fan_in = 1;
      for (size_t i = 1; i < e.shape.size(); ++i) fan_in *= e.shape[i];
      t = at::randn(e.shape, gen, at::TensorOptions().dtype(at::kFloat)) / std::sqrt(static_cast<double>(fan_in));
    }
    tensors.emplace_back(e.name, t);
  }
  io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
}

namespace {

// Floating-point operations of one row's prefill: the projector over the image tokens, every
// text layer over the prompt (causal attention), the LM head at the last position.
double prefill_flops(const models::LlavaConfig& c, int64_t prompt_tokens, int64_t image_tokens) {
  const models::LlamaConfig& t = c.text;
  const double T = static_cast<double>(prompt_tokens), H = static_cast<double>(t.hidden_size);
  const double heads = static_cast<double>(t.num_attention_heads);
  const double kv = static_cast<double>(t.num_key_value_heads > 0 ? t.num_key_value_heads : t.num_attention_heads);
  const double d = t.head_dim > 0 ? static_cast<double>(t.head_dim) : H / heads;
  const double I = static_cast<double>(t.intermediate_size);
  // Per layer: q/k/v/o and the gated MLP for every position, then the causal attention
  // products (QK^T and PV) over the T(T+1)/2 query-key pairs.
  const double dense = 2.0 * T * (H * (heads + 2 * kv) * d + heads * d * H + 3 * H * I);
  const double attention = 2.0 * 2.0 * heads * d * T * (T + 1) / 2;
  const double projector = 2.0 * static_cast<double>(image_tokens) *
                           (static_cast<double>(c.vision.hidden_size) * H + H * H);
  const double lm_head = 2.0 * H * static_cast<double>(t.vocab_size);  // the last position only
  return static_cast<double>(t.num_hidden_layers) * (dense + attention) + projector + lm_head;
}

}  // namespace

nlohmann::json run_sweep_benchmark(const SweepBenchOptions& o) {
  auto logger = log::get("generate");
  std::filesystem::path dir;
  std::filesystem::path temp;
  if (o.model) {
    dir = *o.model;
  } else {
    temp = std::filesystem::temp_directory_path() / ("icet-bench-" + std::to_string(std::random_device{}()));
    write_synthetic_llava(temp, o.synthetic, 1234);
    dir = temp;
  }
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() {
      std::error_code ec;
      if (!p.empty()) std::filesystem::remove_all(p, ec);
    }
  } cleanup{temp};

  auto session = Session::open(dir, {"cpu", "float32"});
  const ModelSummary& s = session->summary();
  const vision::Image image = test_image(64, 48);
  auto t0 = std::chrono::steady_clock::now();
  session->set_image(image);
  const double encode_s = seconds_since(t0);

  const std::string prompt = "What is in the picture?";
  generate::SamplingParams greedy;
  greedy.max_new_tokens = o.max_new_tokens;
  greedy.stop_at_eos = false;  // every row makes exactly max_new_tokens: equal work in both variants
  greedy.seed = 0;
  std::vector<int64_t> layers;
  for (int64_t l = 1; l <= s.vision_layers; ++l) layers.push_back(l);

  session->generate(prompt, std::nullopt, greedy);  // warm-up: allocator, thread pool

  // Prefill = until the first token (projector, prompt forward, first choice); decode = the rest.
  struct Timing {
    double total = 1e30, prefill = 0.0, decode = 0.0;
    std::vector<std::vector<int64_t>> tokens;
  };
  const auto keep_best = [](Timing& best, double total, double prefill, std::vector<std::vector<int64_t>> tokens) {
    if (total < best.total) best = {total, prefill, total - prefill, std::move(tokens)};
  };
  const bool run_sequential = o.only != "batched", run_batched = o.only != "sequential";
  Timing seq, bat;
  for (int rep = 0; rep < std::max(1, o.repeats); ++rep) {
    if (run_sequential) {
      std::vector<std::vector<int64_t>> tokens;
      double prefill = 0.0;
      t0 = std::chrono::steady_clock::now();
      for (int64_t l : layers) {
        const auto t1 = std::chrono::steady_clock::now();
        auto r = session->generate(prompt, l, greedy);
        // first_token_seconds counts from the decode call; the projector ran before it.
        prefill += seconds_since(t1) - (r.seconds - r.first_token_seconds);
        tokens.push_back(std::move(r.token_ids));
      }
      keep_best(seq, seconds_since(t0), prefill, std::move(tokens));
    }
    if (run_batched) {
      std::vector<std::vector<int64_t>> tokens;
      t0 = std::chrono::steady_clock::now();
      auto rows = session->sweep(prompt, layers, greedy);
      const double total = seconds_since(t0);
      double last = 0.0, first = 1e30;
      for (auto& r : rows) {
        last = std::max(last, r.seconds);
        first = std::min(first, r.first_token_seconds);
        tokens.push_back(std::move(r.token_ids));
      }
      keep_best(bat, total, total - (last - first), std::move(tokens));
    }
  }

  // Single generation at the default layer, and the first token after a layer change (the
  // encoder states are cached: projector + prefill + one step).
  double tokens_per_second = 0.0, decode_tokens_per_second = 0.0, ttft = 1e30;
  int64_t prev = s.default_layer;
  for (int rep = 0; rep < std::max(1, o.repeats); ++rep) {
    const auto r = session->generate(prompt, s.default_layer, greedy);
    tokens_per_second = std::max(tokens_per_second, static_cast<double>(r.token_ids.size()) / r.seconds);
    if (r.token_ids.size() > 1) {
      decode_tokens_per_second = std::max(
          decode_tokens_per_second, static_cast<double>(r.token_ids.size() - 1) / (r.seconds - r.first_token_seconds));
    }
    const int64_t next = prev == 1 ? s.vision_layers / 2 : 1;  // a different layer each time
    double first = 0.0;
    t0 = std::chrono::steady_clock::now();
    generate::SamplingParams one = greedy;
    one.max_new_tokens = 1;
    session->generate(prompt, next, one, [&](const StreamEvent& e) {
      if (first == 0.0 && e.token >= 0) first = seconds_since(t0);
    });
    ttft = std::min(ttft, first);
    prev = next;
  }

  const int64_t prompt_tokens = static_cast<int64_t>(session->prompt_ids(prompt).size());
  const double rows = static_cast<double>(layers.size());
  nlohmann::json j = {{"model", o.model ? s.model_id : o.synthetic.describe()},
                      {"device", s.device},
                      {"threads", runtime::current_intra_op_threads()},
                      {"layers", static_cast<int64_t>(layers.size())},
                      {"max_new_tokens", o.max_new_tokens},
                      {"prompt_tokens", prompt_tokens},
                      {"image_tokens", s.image_tokens},
                      {"repeats", o.repeats},
                      {"encode_s", encode_s},
                      {"tokens_per_second", tokens_per_second},
                      {"decode_tokens_per_second", decode_tokens_per_second},
                      {"ttft_layer_change_s", ttft}};
  if (run_sequential) {
    j["sequential_s"] = seq.total;
    j["sequential_prefill_s"] = seq.prefill;
    j["sequential_decode_s"] = seq.decode;
  }
  if (run_batched) {
    j["batched_s"] = bat.total;
    j["batched_prefill_s"] = bat.prefill;
    j["batched_decode_s"] = bat.decode;
  }
  if (run_sequential && run_batched) {
    j["speedup"] = seq.total / bat.total;
    j["identical_tokens"] = seq.tokens == bat.tokens;
  }
  // The compute bound: the prefill FLOPs of every row at the float32 matmul rate measured now.
  const std::string type = models::read_model_type(dir / "config.json");
  if (type == "llava" || type == "llava_next") {
    const models::LlavaConfig cfg = type == "llava" ? models::load_llava_config(dir / "config.json")
                                                    : models::load_llava_next_config(dir / "config.json").base;
    const double flops = prefill_flops(cfg, prompt_tokens, s.image_tokens);
    const double peak = runtime::measure_cpu_matmul_gflops(512, 5) * 1e9;
    j["prefill_gflop_per_row"] = flops / 1e9;
    j["matmul_gflops"] = peak / 1e9;
    j["prefill_bound_s"] = rows * flops / peak;
    if (run_batched) j["batched_prefill_gflops"] = rows * flops / bat.prefill / 1e9;
    if (run_sequential) j["sequential_prefill_gflops"] = rows * flops / seq.prefill / 1e9;
  }
  logger->info("bench sweep: {}", j.dump());
  return j;
}

}  // namespace icet::engine
