#include "core/engine/session.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/generate/decode.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/models/llava.h"
#include "core/models/lora.h"
#include "core/text/tokenizer.h"
#include "core/vision/clip_processor.h"
#include "core/vision/image.h"

namespace icet::engine {
namespace {

c10::Device parse_device(const std::string& name) {
  if (name == "auto") {
    return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  try {
    c10::Device d(name);
    if (d.is_cuda() && !torch::cuda::is_available()) {
      throw InputError(describe("device '" + name + "'", "a CUDA device", "none (this LibTorch sees no GPU)",
                                "Use --device cpu, or run `icet info` to see why CUDA is unavailable."));
    }
    return d;
  } catch (const c10::Error&) {
    throw InputError(describe("device", "\"auto\", \"cpu\", \"cuda\" or \"cuda:N\"", "\"" + name + "\""));
  }
}

c10::ScalarType parse_dtype(const std::string& name, const c10::Device& device) {
  if (name == "auto") return device.is_cuda() ? c10::kBFloat16 : c10::kFloat;
  if (name == "float32" || name == "f32") return c10::kFloat;
  if (name == "bfloat16" || name == "bf16") return c10::kBFloat16;
  if (name == "float16" || name == "f16") return c10::kHalf;
  throw InputError(describe("dtype", "\"auto\", \"float32\", \"bfloat16\" or \"float16\"", "\"" + name + "\""));
}

// ".../models--org--name/snapshots/<rev>" (hub cache) -> "org/name"; else the folder name.
std::string model_id_of(const std::filesystem::path& dir) {
  const std::filesystem::path clean = dir.lexically_normal();
  const std::filesystem::path d = clean.filename().empty() ? clean.parent_path() : clean;
  if (d.parent_path().filename() == "snapshots") {
    std::string repo = d.parent_path().parent_path().filename().string();
    if (repo.rfind("models--", 0) == 0) {
      repo = repo.substr(8);
      const auto sep = repo.find("--");
      if (sep != std::string::npos) repo.replace(sep, 2, "/");
      return repo;
    }
  }
  return d.filename().string();
}

std::string hash_bytes(const std::vector<uint8_t>& bytes, int width, int height) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  auto mix = [&h](uint8_t b) {
    h ^= b;
    h *= 1099511628211ULL;
  };
  for (uint8_t b : bytes) mix(b);
  for (int v : {width, height}) {
    for (int i = 0; i < 4; ++i) mix(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::ostringstream out;
  out << std::hex << h;
  return out.str();
}

std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: return c10::toString(t);
  }
}

}  // namespace

nlohmann::json to_json(const ModelSummary& s) {
  return {{"family", s.family},           {"model_id", s.model_id},         {"path", s.path},
          {"weights_hash", s.weights_hash}, {"device", s.device},           {"dtype", s.dtype},
          {"vision_layers", s.vision_layers}, {"default_layer", s.default_layer}, {"image_tokens", s.image_tokens},
          {"context_length", s.context_length}};
}

nlohmann::json to_json(const GenerationRecord& r) {
  return {{"model_id", r.model_id},
          {"weights_hash", r.weights_hash},
          {"image_hash", r.image_hash},
          {"prompt", r.prompt},
          {"layer", r.layer},
          {"sampling", generate::to_json(r.params)},
          {"seed", r.params.seed.value_or(0)},
          {"token_ids", r.token_ids},
          {"text", r.text},
          {"stop_reason", r.stop_reason},
          {"prompt_tokens", r.prompt_tokens},
          {"seconds", r.seconds},
          {"first_token_seconds", r.first_token_seconds},
          {"tokens_per_second", r.tokens_per_second}};
}

struct Session::Impl {
  ModelSummary summary;
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;
  std::unique_ptr<models::LlavaModel> model;
  std::unique_ptr<text::Tokenizer> tokenizer;
  vision::ClipProcessorConfig processor;
  std::vector<int64_t> eos_ids;
  // Current image: hidden states 0..N, each [1, N_img+1, Dv] on the device.
  std::vector<at::Tensor> states;
  std::string image_hash;
  // LoRA adapter (load_adapter): set on the LM, or merged into its weights.
  std::unique_ptr<models::LoraSet> adapter;
  std::filesystem::path adapter_dir;
  bool adapter_merged = false;

  std::vector<int64_t> prompt_ids(const std::string& prompt) const {
    if (prompt.find_first_not_of(" \t\r\n") == std::string::npos) {
      throw InputError("the prompt is empty: type a question or an instruction about the image");
    }
    // LLaVA-1.5 (llava-hf): "USER: <image>\n{prompt} ASSISTANT:". The user's text is a text
    // segment: a typed "<image>" or "</s>" never becomes a special token.
    const std::string image_token = tokenizer->piece(model->config().image_token_index);
    std::vector<text::Segment> segments{{"USER: ", false}};
    for (int64_t i = 0; i < model->config().image_tokens(); ++i) segments.push_back({image_token, true});
    segments.push_back({"\n" + prompt + " ASSISTANT:", false});
    std::vector<int64_t> ids;
    if (tokenizer->add_bos() && tokenizer->bos_id()) ids.push_back(*tokenizer->bos_id());
    const auto body = tokenizer->encode_segments(segments);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  }

  void check_context(size_t prompt_tokens) const {
    const int64_t limit = summary.context_length;
    if (static_cast<int64_t>(prompt_tokens) + 1 > limit) {
      throw InputError(describe("prompt", "at most " + std::to_string(limit - 1) + " tokens (the context window is " +
                                              std::to_string(limit) + ", including " +
                                              std::to_string(summary.image_tokens) + " image tokens)",
                                std::to_string(prompt_tokens) + " tokens",
                                "Shorten the prompt."));
    }
  }

  generate::SamplingParams with_seed(generate::SamplingParams p) const {
    generate::validate(p);
    if (!p.seed) p.seed = generate::fresh_seed();
    return p;
  }

  std::vector<GenerationRecord> run(const std::string& prompt, const std::vector<int64_t>& layers,
                                    const generate::SamplingParams& params, const StreamCallback& stream,
                                    const std::atomic<bool>* cancel) {
    if (states.empty()) {
      throw InputError("no image is set: open an image before generating");
    }
    c10::InferenceMode inference;
    const std::vector<int64_t> ids = prompt_ids(prompt);
    check_context(ids.size());
    const generate::SamplingParams p = with_seed(params);

    // [L, N, Dv] -> [L, N, H] -> embeds [L, T, H]: every chosen layer projected in one batch.
    std::vector<at::Tensor> selected;
    for (int64_t layer : layers) selected.push_back(model->select(states.at(static_cast<size_t>(layer))));
    const at::Tensor features = model->project(at::cat(selected, 0));
    const at::Tensor id_tensor = at::tensor(ids, at::TensorOptions().dtype(at::kLong));
    generate::DecodeRequest req;
    req.lm = &model->language_model();
    req.prompt_embeds = model->merge(id_tensor, features);
    req.prompt_ids = ids;
    req.params.assign(layers.size(), p);
    req.eos_ids = eos_ids;
    req.suppress_ids = {model->config().image_token_index};
    req.suppress_from = tokenizer->size();
    req.context_limit = summary.context_length;
    req.tokenizer = tokenizer.get();
    req.cancel = cancel;
    if (stream) {
      req.on_token = [&](const generate::TokenEvent& e) { stream({e.row, layers[e.row], e.token, e.text}); };
    }
    const auto rows = generate::run_decode(req);

    std::vector<GenerationRecord> out;
    for (size_t i = 0; i < rows.size(); ++i) {
      GenerationRecord r;
      r.model_id = summary.model_id;
      r.weights_hash = summary.weights_hash;
      r.image_hash = image_hash;
      r.prompt = prompt;
      r.layer = layers[i];
      r.params = p;
      r.token_ids = rows[i].tokens;
      r.text = rows[i].text;
      r.stop_reason = generate::stop_reason_name(rows[i].stop);
      r.prompt_tokens = static_cast<int64_t>(ids.size());
      r.seconds = rows[i].seconds;
      r.first_token_seconds = rows[i].first_token_seconds;
      r.tokens_per_second = r.seconds > 0 ? static_cast<double>(r.token_ids.size()) / r.seconds : 0.0;
      out.push_back(std::move(r));
    }
    return out;
  }
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

std::unique_ptr<Session> Session::open(const std::filesystem::path& dir, const SessionOptions& options,
                                       const ProgressCallback& progress) {
  if (!std::filesystem::is_directory(dir)) {
    throw InputError(dir.string() + ": not a folder. Choose the folder of a Hugging Face snapshot.");
  }
  const std::string type = models::read_model_type(dir / "config.json");
  if (type != "llava") {
    throw InputError(describe((dir / "config.json").string() + ": key 'model_type'", "\"llava\" (LLaVA-1.5)",
                              "\"" + type + "\""));
  }
  auto impl = std::make_unique<Impl>();
  impl->device = parse_device(options.device);
  impl->dtype = parse_dtype(options.dtype, impl->device);
  // Tokenizer and processor first: they fail fast, before gigabytes of weights are read.
  impl->tokenizer = text::load_tokenizer(dir);
  impl->processor = vision::load_clip_processor_config(dir / "preprocessor_config.json");
  c10::InferenceMode inference;
  const io::TensorStore store = io::TensorStore::open_dir(dir);
  impl->model = models::load_llava(models::load_llava_config(dir / "config.json"), store, dir.string(),
                                   {impl->device, impl->dtype}, progress);
  const auto& cfg = impl->model->config();

  const models::GenerationConfig gen = models::load_generation_config(dir / "generation_config.json");
  impl->eos_ids = !gen.eos_token_ids.empty() ? gen.eos_token_ids : cfg.text.eos_token_ids;

  ModelSummary& s = impl->summary;
  s.family = "llava";
  s.model_id = model_id_of(dir);
  s.path = dir.string();
  s.weights_hash = store.content_hash();
  s.device = impl->device.str();
  s.dtype = dtype_name(impl->dtype);
  s.vision_layers = cfg.vision.num_hidden_layers;
  s.default_layer = cfg.default_exit_layer();
  s.image_tokens = cfg.image_tokens();
  s.context_length = cfg.text.max_position_embeddings;
  // The processor must produce what the vision tower takes; say so at load, not at the first image.
  const auto& crop = impl->processor.crop_size;
  if (impl->processor.do_center_crop && crop.height && crop.width &&
      (*crop.height != cfg.vision.image_size || *crop.width != cfg.vision.image_size)) {
    throw InputError(describe((dir / "preprocessor_config.json").string() + ": key 'crop_size'",
                              std::to_string(cfg.vision.image_size) + "x" + std::to_string(cfg.vision.image_size) +
                                  " (config.json vision_config.image_size)",
                              std::to_string(*crop.width) + "x" + std::to_string(*crop.height)));
  }
  log::get("models")->info("session ready: {} on {} ({}), {} vision layers, default exit layer {}", s.model_id,
                           s.device, s.dtype, s.vision_layers, s.default_layer);
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

const ModelSummary& Session::summary() const { return impl_->summary; }

void Session::set_image(const vision::Image& image) {
  c10::InferenceMode inference;
  const at::Tensor pixels = vision::clip_preprocess(image, impl_->processor)  // [3,S,S]
                                .unsqueeze(0)
                                .to(impl_->device, impl_->dtype);
  impl_->states = impl_->model->encode(pixels, impl_->summary.vision_layers);
  impl_->image_hash = hash_bytes(image.rgb, image.width, image.height);
}

bool Session::has_image() const { return !impl_->states.empty(); }
const std::string& Session::image_hash() const { return impl_->image_hash; }

GenerationRecord Session::generate(const std::string& prompt, std::optional<int64_t> layer,
                                   const generate::SamplingParams& params, const StreamCallback& stream,
                                   const std::atomic<bool>* cancel) {
  const int64_t l = impl_->model->resolve_layer(layer);
  return impl_->run(prompt, {l}, params, stream, cancel).front();
}

std::vector<GenerationRecord> Session::sweep(const std::string& prompt, const std::vector<int64_t>& layers,
                                             const generate::SamplingParams& params, const StreamCallback& stream,
                                             const std::atomic<bool>* cancel) {
  if (layers.empty()) {
    throw InputError("sweep: no layers chosen (expected e.g. 1-24 or 3,7,9)");
  }
  for (int64_t l : layers) impl_->model->resolve_layer(l);
  return impl_->run(prompt, layers, params, stream, cancel);
}

std::vector<int64_t> Session::prompt_ids(const std::string& prompt) const { return impl_->prompt_ids(prompt); }

void Session::load_adapter(const std::filesystem::path& dir, bool merge) {
  c10::InferenceMode inference;
  models::LlamaModel& lm = impl_->model->language_model();
  auto set = std::make_unique<models::LoraSet>(models::load_peft_adapter(dir, lm, "language_model."));
  clear_adapter();
  if (merge) {
    lm.merge_adapters(*set, 1.0);
  } else {
    lm.set_adapters(set.get());
  }
  impl_->adapter = std::move(set);
  impl_->adapter_dir = dir;
  impl_->adapter_merged = merge;
  log::get("models")->info("adapter {} loaded{}", dir.string(), merge ? " (merged)" : "");
}

void Session::clear_adapter() {
  if (!impl_->adapter) return;
  c10::InferenceMode inference;
  models::LlamaModel& lm = impl_->model->language_model();
  if (impl_->adapter_merged) {
    lm.merge_adapters(*impl_->adapter, -1.0);
  } else {
    lm.set_adapters(nullptr);
  }
  impl_->adapter.reset();
  impl_->adapter_dir.clear();
  impl_->adapter_merged = false;
}

const std::filesystem::path& Session::adapter() const { return impl_->adapter_dir; }

std::vector<int64_t> parse_layers(const std::string& spec, int64_t num_layers) {
  std::vector<int64_t> layers;
  auto bad = [&](const std::string& part) {
    return InputError(describe("layers '" + spec + "'", "a list like 1-24, 3,7,9 or all (layers 1.." +
                                                            std::to_string(num_layers) + ")",
                               "'" + part + "'"));
  };
  if (spec == "all") {
    for (int64_t l = 1; l <= num_layers; ++l) layers.push_back(l);
    return layers;
  }
  std::stringstream in(spec);
  std::string part;
  while (std::getline(in, part, ',')) {
    if (part.empty()) throw bad(part);
    const auto dash = part.find('-', 1);
    try {
      size_t used = 0;
      const int64_t a = std::stoll(part.substr(0, dash), &used);
      if (used != (dash == std::string::npos ? part.size() : dash)) throw bad(part);
      int64_t b = a;
      if (dash != std::string::npos) {
        const std::string rest = part.substr(dash + 1);
        b = std::stoll(rest, &used);
        if (used != rest.size()) throw bad(part);
      }
      if (a < 1 || b > num_layers || a > b) throw bad(part);
      for (int64_t l = a; l <= b; ++l) layers.push_back(l);
    } catch (const std::logic_error&) {
      throw bad(part);
    }
  }
  if (layers.empty()) throw bad(spec);
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  return layers;
}

}  // namespace icet::engine
