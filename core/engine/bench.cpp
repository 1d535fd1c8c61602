#include "core/engine/bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
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
#include "core/runtime/blas_kernels.h"
#include "core/runtime/device.h"
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

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Element i of stream `key`: uniform on mean +- half_width (65536 levels, plenty for 16-bit
// floats), from a hash of (key, i / 4) alone, so the values do not depend on the thread count.
template <typename T>
void fill_uniform_typed(T* data, int64_t n, uint64_t key, float mean, float half_width) {
  at::parallel_for(0, n, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    while (i < end) {
      const uint64_t h = splitmix64(key + static_cast<uint64_t>(i >> 2) * 0xD1B54A32D192ED03ULL);
      for (int64_t lane = i & 3; lane < 4 && i < end; ++lane, ++i) {
        const float u = (static_cast<float>((h >> (16 * lane)) & 0xFFFF) + 0.5f) * (1.0f / 65536.0f);  // (0, 1)
        data[i] = static_cast<T>(mean + half_width * (2.0f * u - 1.0f));
      }
    }
  });
}

// A [shape] tensor of `dtype` with mean `mean` and standard deviation `std` (uniform draws:
// half width sqrt(3) std).
at::Tensor uniform_tensor(const std::vector<int64_t>& shape, c10::ScalarType dtype, uint64_t key, double mean,
                          double std) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  const auto m = static_cast<float>(mean);
  const auto w = static_cast<float>(std::sqrt(3.0) * std);
  switch (dtype) {
    case at::kBFloat16: fill_uniform_typed(t.data_ptr<c10::BFloat16>(), t.numel(), key, m, w); break;
    case at::kHalf: fill_uniform_typed(t.data_ptr<c10::Half>(), t.numel(), key, m, w); break;
    case at::kFloat: fill_uniform_typed(t.data_ptr<float>(), t.numel(), key, m, w); break;
    default:
      throw InputError(describe("synthetic checkpoint dtype", "float32, bfloat16 or float16", c10::toString(dtype)));
  }
  return t;
}

// The stored dtype by name (float16 is allowed: the checkpoint may run on a GPU).
c10::ScalarType parse_dtype_or_throw(const std::string& name) {
  return runtime::parse_dtype(name, c10::Device(c10::kCUDA));
}

}  // namespace

std::string SyntheticLlava::describe() const {
  std::string d = "synthetic LLaVA-1.5 layout (" + std::to_string(vision_layers) + " vision / " +
                  std::to_string(text_layers) + " text layers, widths " + std::to_string(vision_hidden) + " / " +
                  std::to_string(text_hidden) + ", " + std::to_string(image_tokens()) + " image tokens";
  if (text_intermediate > 0) d += ", text MLP " + std::to_string(text_intermediate);
  if (vocab_size > 0) d += ", vocabulary " + std::to_string(vocab_size);
  if (dtype != "float32") d += ", " + dtype;
  return d + ")";
}

std::vector<std::string> SyntheticLlava::names() { return {"tiny", "llava-1.5-7b"}; }

void SyntheticLlava::check() const {
  const std::pair<const char*, int64_t> sizes[] = {
      {"image size", image_size},       {"patch size", patch_size},
      {"vision width", vision_hidden},  {"vision heads", vision_heads},
      {"vision layers", vision_layers}, {"text width", text_hidden},
      {"text heads", text_heads},       {"text key/value heads", text_kv_heads},
      {"text layers", text_layers}};
  for (const auto& [what, value] : sizes) {
    if (value <= 0) {
      throw InputError(icet::describe(std::string("synthetic checkpoint: ") + what, "a positive number",
                                      std::to_string(value)));
    }
  }
  if (vision_intermediate < 0 || text_intermediate < 0 || vocab_size < 0) {
    throw InputError(icet::describe("synthetic checkpoint: MLP sizes and vocabulary", "0 (the default) or positive",
                                    "a negative number"));
  }
  const auto need = [](bool ok, const std::string& what, const std::string& expected, const std::string& found) {
    if (!ok) {
      throw InputError(icet::describe("synthetic checkpoint: " + what, expected, found,
                                      "Pick widths that split into the heads (e.g. --text-width 4096 with 32 heads)."));
    }
  };
  need(vision_hidden % vision_heads == 0, "vision width " + std::to_string(vision_hidden),
       "a multiple of the " + std::to_string(vision_heads) + " vision heads", "a remainder");
  need(text_hidden % text_heads == 0, "text width " + std::to_string(text_hidden),
       "a multiple of the " + std::to_string(text_heads) + " text heads", "a remainder");
  need(text_heads % text_kv_heads == 0, std::to_string(text_heads) + " text heads",
       "a multiple of the " + std::to_string(text_kv_heads) + " key/value heads", "a remainder");
  need(text_hidden % text_heads == 0 && (text_hidden / text_heads) % 2 == 0, "text head size",
       "even (rotary embeddings pair the dimensions)", std::to_string(text_hidden / text_heads));
  need(image_size >= patch_size, "image size " + std::to_string(image_size),
       "at least the patch size " + std::to_string(patch_size), "smaller");
  parse_dtype_or_throw(dtype);
}

SyntheticLlava SyntheticLlava::named(const std::string& name) {
  SyntheticLlava s;
  if (name == "tiny") return s;
  if (name == "llava-1.5-7b") {
    s.image_size = 336;
    s.patch_size = 14;
    s.vision_hidden = 1024;
    s.vision_intermediate = 4096;
    s.vision_heads = 16;
    s.vision_layers = 24;
    s.text_hidden = 4096;
    s.text_intermediate = 11008;
    s.text_heads = 32;
    s.text_kv_heads = 32;
    s.text_layers = 32;
    s.vocab_size = 32064;
    return s;
  }
  throw InputError(icet::describe("synthetic shape \"" + name + "\"", "\"tiny\" or \"llava-1.5-7b\"", "another name"));
}

void write_synthetic_llava(const std::filesystem::path& dir, const SyntheticLlava& shape, uint64_t seed) {
  shape.check();
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
        {"intermediate_size", shape.vision_intermediate > 0 ? shape.vision_intermediate : 2 * shape.vision_hidden},
        {"num_hidden_layers", shape.vision_layers}, {"num_attention_heads", shape.vision_heads},
        {"image_size", image_size}, {"patch_size", patch_size}, {"projection_dim", shape.vision_hidden}}},
      {"text_config",
       {{"model_type", "llama"}, {"hidden_size", shape.text_hidden},
        {"intermediate_size", shape.text_intermediate > 0 ? shape.text_intermediate : 2 * shape.text_hidden},
        {"num_hidden_layers", shape.text_layers}, {"num_attention_heads", shape.text_heads},
        {"num_key_value_heads", shape.text_kv_heads}, {"vocab_size", std::max(pad_token + 1, shape.vocab_size)},
        {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}}}};
  write_json(dir / "config.json", config);

  // Random weights with O(1) activations: N(0, 1/fan_in) matrices, norms near 1.
  const models::LlavaConfig cfg = models::LlavaConfig::parse(json_util::Reader(config, "synthetic config.json"));
  const c10::ScalarType dtype = parse_dtype_or_throw(shape.dtype);
  // Names and shapes only: the schema's stand-ins live on the meta device (no memory, which a
  // 7B shape would otherwise take twice over).
  std::vector<models::WeightLoader::Entry> entries;
  {
    models::LoadOptions meta;
    meta.device = c10::Device(c10::kMeta);
    auto schema = models::WeightLoader::schema(meta);
    models::LlavaModel shape_only(cfg, schema);
    entries = schema.recorded();
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t k = 0; k < entries.size(); ++k) {
    const auto& e = entries[k];
    const bool is_bias = e.name.size() > 5 && e.name.compare(e.name.size() - 5, 5, ".bias") == 0;
    const bool gain = e.shape.size() == 1 && !is_bias && e.name.find("class_embedding") == std::string::npos;
    const bool embed = e.shape.size() > 1 && e.name.find("embed") != std::string::npos;
    int64_t fan_in = 1;
    for (size_t i = 1; i < e.shape.size(); ++i) fan_in *= e.shape[i];
    at::Tensor t;
    if (dtype == at::kFloat) {
      const auto f32 = at::TensorOptions().dtype(at::kFloat);
      if (gain) {
        t = 1.0 + 0.01 * at::randn(e.shape, gen, f32);  // norm gains
      } else if (e.shape.size() == 1) {
        t = 0.01 * at::randn(e.shape, gen, f32);  // biases, class embedding
      } else if (embed) {
        t = 0.5 * at::randn(e.shape, gen, f32);
      } else {
        t = at::randn(e.shape, gen, f32) / std::sqrt(static_cast<double>(fan_in));
      }
    } else {
      // The same means and deviations, drawn uniformly (see SyntheticLlava::dtype).
      const double mean = gain ? 1.0 : 0.0;
      const double std = e.shape.size() == 1 ? 0.01 : embed ? 0.5 : 1.0 / std::sqrt(static_cast<double>(fan_in));
      t = uniform_tensor(e.shape, dtype, splitmix64(seed ^ splitmix64(k)), mean, std);
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
  // The parsed config has num_key_value_heads and head_dim resolved (as the model reads them).
  const double heads = static_cast<double>(t.num_attention_heads), kv = static_cast<double>(t.num_key_value_heads);
  const double d = static_cast<double>(t.head_dim), I = static_cast<double>(t.intermediate_size);
  // Per layer: q/k/v/o and the gated MLP for every position, then the causal attention
  // products (QK^T and PV) over the T(T+1)/2 query-key pairs.
  const double dense = 2.0 * T * (H * (heads + 2 * kv) * d + heads * d * H + 3 * H * I);
  const double attention = 2.0 * 2.0 * heads * d * T * (T + 1) / 2;
  const double projector = 2.0 * static_cast<double>(image_tokens) *
                           (static_cast<double>(c.vision.hidden_size) * H + H * H);
  const double lm_head = 2.0 * H * static_cast<double>(t.vocab_size);  // the last position only
  return static_cast<double>(t.num_hidden_layers) * (dense + attention) + projector + lm_head;
}

// Seconds of the dense products of one text layer over one row's prompt (q, k, v, o and the
// gated MLP; random data, best of 3): times layers x rows it is the prefill with no attention
// product and no element-wise pass, the floor under any kernel work on those.
double dense_layer_seconds(const models::LlamaConfig& t, int64_t prompt_tokens, c10::ScalarType dtype) {
  const int64_t H = t.hidden_size, I = t.intermediate_size;
  const int64_t heads = t.num_attention_heads, kv = t.num_key_value_heads, d = t.head_dim;
  const auto opts = at::TensorOptions().dtype(dtype);
  const at::Tensor x = at::randn({prompt_tokens, H}, opts), wide = at::randn({prompt_tokens, I}, opts);
  const at::Tensor heads_in = at::randn({prompt_tokens, heads * d}, opts);
  // [out, in] weights with the inputs they multiply
  const std::pair<at::Tensor, const at::Tensor*> products[] = {
      {at::randn({heads * d, H}, opts), &x}, {at::randn({kv * d, H}, opts), &x}, {at::randn({kv * d, H}, opts), &x},
      {at::randn({H, heads * d}, opts), &heads_in}, {at::randn({I, H}, opts), &x}, {at::randn({I, H}, opts), &x},
      {at::randn({H, I}, opts), &wide}};
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {  // the first is a warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& [w, in] : products) (void)at::linear(*in, w);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) best = std::min(best, s);
  }
  return best;
}

// Bytes of the text weights one decode step reads: every layer's projections and norms, the
// final norm and the LM head (tied or not, all of it); of the embedding table only one row.
double decode_weight_bytes(const models::LlamaConfig& t, size_t element_bytes) {
  const double H = static_cast<double>(t.hidden_size), I = static_cast<double>(t.intermediate_size);
  const double heads = static_cast<double>(t.num_attention_heads), kv = static_cast<double>(t.num_key_value_heads);
  const double d = static_cast<double>(t.head_dim);
  double layer = H * (heads + 2 * kv) * d + heads * d * H + 3 * H * I + 2 * H;
  if (t.attention_bias) layer += (heads + 2 * kv) * d + H;
  if (t.mlp_bias) layer += 2 * I + H;
  const double params = static_cast<double>(t.num_hidden_layers) * layer + H +
                        static_cast<double>(t.vocab_size) * H + H;  // final norm, LM head, one embedding row
  return params * static_cast<double>(element_bytes);
}

// KV-cache bytes per cached position (keys and values of every layer).
double kv_cache_bytes_per_position(const models::LlamaConfig& t, size_t element_bytes) {
  return 2.0 * static_cast<double>(t.num_hidden_layers * t.num_key_value_heads * t.head_dim) *
         static_cast<double>(element_bytes);
}

}  // namespace

nlohmann::json run_sweep_benchmark(const SweepBenchOptions& o) {
  auto logger = log::get("generate");
  // Checked before a synthetic checkpoint is written (a 7B one is 14 GB).
  if (!o.only.empty() && o.only != "sequential" && o.only != "batched" && o.only != "decode") {
    throw InputError(icet::describe("bench sweep: only \"" + o.only + "\"", "\"sequential\", \"batched\" or \"decode\"",
                                    "another value"));
  }
  const c10::Device device = runtime::parse_device(o.device);
  const c10::ScalarType dtype = runtime::parse_dtype(o.dtype, device);
  std::filesystem::path dir;
  std::filesystem::path temp;
  SyntheticLlava synthetic = o.synthetic;
  if (dtype != at::kFloat) synthetic.dtype = runtime::dtype_name(dtype);  // written as it will run
  if (!o.model) synthetic.check();
  double write_s = 0.0;
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() {
      std::error_code ec;
      if (!p.empty()) std::filesystem::remove_all(p, ec);
    }
  } cleanup;
  if (o.model) {
    dir = *o.model;
  } else {
    temp = std::filesystem::temp_directory_path() / ("icet-bench-" + std::to_string(std::random_device{}()));
    cleanup.p = temp;
    const auto tw = std::chrono::steady_clock::now();
    write_synthetic_llava(temp, synthetic, 1234);
    write_s = seconds_since(tw);
    dir = temp;
  }

  const auto tl = std::chrono::steady_clock::now();
  auto session = Session::open(dir, {o.device, o.dtype});
  const double load_s = seconds_since(tl);
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
  const bool run_sequential = o.only.empty() || o.only == "sequential";
  const bool run_batched = o.only.empty() || o.only == "batched";
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
  nlohmann::json j = {{"model", o.model ? s.model_id : synthetic.describe()},
                      {"device", s.device},
                      {"dtype", s.dtype},
                      {"threads", runtime::current_intra_op_threads()},
                      {"blas_kernels", runtime::blas_kernels()},  // OpenBLAS's kernel set, "" for another BLAS
                      {"layers", static_cast<int64_t>(layers.size())},
                      {"max_new_tokens", o.max_new_tokens},
                      {"prompt_tokens", prompt_tokens},
                      {"image_tokens", s.image_tokens},
                      {"repeats", o.repeats},
                      {"load_s", load_s},
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
  if (!o.model) j["synthetic_write_s"] = write_s;
  if (run_sequential && run_batched) {
    j["speedup"] = seq.total / bat.total;
    j["identical_tokens"] = seq.tokens == bat.tokens;
  }
  // The compute bound: the prefill FLOPs of every row at the float32 matmul rate measured now
  // (CPU sessions; a GPU's rate is not measured here).
  const std::string type = models::read_model_type(dir / "config.json");
  if (type == "llava" || type == "llava_next") {
    const models::LlavaConfig cfg = type == "llava" ? models::load_llava_config(dir / "config.json")
                                                    : models::load_llava_next_config(dir / "config.json").base;
    const double flops = prefill_flops(cfg, prompt_tokens, s.image_tokens);
    j["prefill_gflop_per_row"] = flops / 1e9;
    double bound = 0.0;  // measured on CPU sessions only
    if (device.is_cpu() && (run_sequential || run_batched)) {
      const double peak = runtime::measure_cpu_matmul_gflops(512, 5) * 1e9;
      const double sustained = runtime::measure_cpu_matmul_gflops_sustained(512, 1.0) * 1e9;
      j["matmul_gflops"] = peak / 1e9;  // as `icet info --matmul`
      bound = rows * flops / peak;
      j["prefill_bound_s"] = bound;
      j["matmul_gflops_sustained"] = sustained / 1e9;
      j["prefill_bound_sustained_s"] = rows * flops / sustained;
      j["prefill_dense_products_s"] = rows * static_cast<double>(cfg.text.num_hidden_layers) *
                                      dense_layer_seconds(cfg.text, prompt_tokens, dtype);
    }
    if (run_batched) {
      j["batched_prefill_gflops"] = rows * flops / bat.prefill / 1e9;
      if (bound > 0.0) j["batched_prefill_vs_bound"] = bat.prefill / bound;
    }
    if (run_sequential) j["sequential_prefill_gflops"] = rows * flops / seq.prefill / 1e9;
    // The memory bound of one decode step of one row: every text weight is read once (the
    // embedding table only a row of it), plus the KV cache so far (the answer's mean length).
    const double weight_bytes = decode_weight_bytes(cfg.text, c10::elementSize(dtype));
    const double kv_bytes = kv_cache_bytes_per_position(cfg.text, c10::elementSize(dtype)) *
                            (static_cast<double>(prompt_tokens) + static_cast<double>(o.max_new_tokens) / 2.0);
    j["decode_weight_bytes_per_token"] = weight_bytes;
    j["decode_kv_bytes_per_token"] = kv_bytes;
    j["decode_bytes_per_token"] = weight_bytes + kv_bytes;
  }
  logger->info("bench sweep: {}", j.dump());
  return j;
}

}  // namespace icet::engine
