#include "core/engine/session.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <sstream>

#include "core/base/error.h"
#include "core/base/hash.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/base/strings.h"
#include "core/engine/prompt.h"
#include "core/generate/decode.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/models/llama.h"
#include "core/models/llava.h"
#include "core/models/llava_next.h"
#include "core/models/lora.h"
#include "core/models/mllama.h"
#include "core/runtime/device.h"
#include "core/text/tokenizer.h"
#include "core/vision/anyres_processor.h"
#include "core/vision/clip_processor.h"
#include "core/vision/image.h"
#include "core/vision/mllama_processor.h"

namespace icet::engine {
namespace {

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
  Fnv1a64 h;
  h.update(bytes.data(), bytes.size());
  for (int v : {width, height}) {
    for (int i = 0; i < 4; ++i) {
      const auto b = static_cast<uint8_t>(v >> (8 * i));
      h.update(&b, 1);
    }
  }
  std::ostringstream out;  // unpadded hex, as recorded in earlier session bundles
  out << std::hex << h.value();
  return out.str();
}

// An adapter folder's key: absolute, lexically normal, without a trailing separator ("" for
// the base model).
std::string adapter_key(const std::filesystem::path& dir) {
  if (dir.empty()) return {};
  std::filesystem::path p = std::filesystem::absolute(dir).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  return p.string();
}

}  // namespace

nlohmann::json to_json(const ModelSummary& s) {
  return {{"family", s.family},           {"model_id", s.model_id},         {"path", s.path},
          {"weights_hash", s.weights_hash}, {"device", s.device},           {"dtype", s.dtype},
          {"vision_layers", s.vision_layers}, {"default_layer", s.default_layer}, {"image_tokens", s.image_tokens},
          {"context_length", s.context_length}, {"prompt_format", s.prompt_format},
          {"exit_policy", s.exit_policy}};
}

nlohmann::json to_json(const GenerationRecord& r) {
  return {{"model_id", r.model_id},
          {"weights_hash", r.weights_hash},
          {"image_hash", r.image_hash},
          {"prompt", r.prompt},
          {"layer", r.layer},
          {"adapter", r.adapter},
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

namespace {

// Prompt embeddings [L, T, H] built in groups of rows, rows(i0, n) -> [n, T, H] for exit
// layers i0 .. i0+n-1, each group's projector activations (row_floats per row) under 16 MiB.
// Projecting all L layers in one batch made transients of L x N x H floats (three of 226 MB
// at 24 x 576 x 4096) that were faulted in afresh on every sweep; a group's stay in the
// reused heap. Small models (the demo: 24 x 16 x 128) still take every layer at once.
at::Tensor embed_rows(int64_t L, int64_t row_floats, const std::function<at::Tensor(int64_t, int64_t)>& rows) {
  constexpr int64_t kGroupFloats = 4 << 20;
  const int64_t group = std::clamp<int64_t>(kGroupFloats / std::max<int64_t>(row_floats, 1), 1, L);
  if (group == L) return rows(0, L);
  at::Tensor out;
  for (int64_t i0 = 0; i0 < L; i0 += group) {
    const int64_t n = std::min(group, L - i0);
    const at::Tensor part = rows(i0, n);  // [n,T,H]
    if (!out.defined()) out = at::empty({L, part.size(1), part.size(2)}, part.options());
    out.narrow(0, i0, n).copy_(part);
  }
  return out;
}

// A model half per family: preprocessing, the image's cached encoder states, and turning a
// prompt plus exit layers into a decode request.
class Family {
 public:
  virtual ~Family() = default;
  virtual void set_image(const vision::Image& image) = 0;
  virtual bool has_image() const = 0;
  virtual int64_t resolve_layer(std::optional<int64_t> layer) const = 0;
  // Image placeholder segments of the prompt (the image must be set for llava_next's count).
  virtual std::vector<text::Segment> image_segments(const text::Tokenizer& tok) const = 0;
  virtual int64_t image_tokens() const = 0;
  // Fills lm/decoder, prompt_embeds [L, T, H] and the image token to suppress.
  virtual void prepare(const std::vector<int64_t>& ids, const std::vector<int64_t>& layers,
                       generate::DecodeRequest& req) = 0;
  // The Llama decoder LoRA adapters attach to; null for families without one (Mllama).
  virtual models::LlamaModel* adaptable_language_model() { return nullptr; }
};

// LLaVA-1.5: one 336 px view, hidden states cached for every layer.
class LlavaFamily final : public Family {
 public:
  LlavaFamily(std::unique_ptr<models::LlavaModel> model, vision::ClipProcessorConfig processor, c10::Device device,
              c10::ScalarType dtype)
      : model_(std::move(model)), processor_(std::move(processor)), device_(device), dtype_(dtype) {}
  const models::LlavaModel& model() const { return *model_; }
  models::LlamaModel* adaptable_language_model() override { return &model_->language_model(); }

  void set_image(const vision::Image& image) override {
    const at::Tensor pixels = vision::clip_preprocess(image, processor_).unsqueeze(0).to(device_, dtype_);  // [1,3,S,S]
    states_ = model_->encode(pixels, model_->config().vision.num_hidden_layers);
  }
  bool has_image() const override { return !states_.empty(); }
  int64_t resolve_layer(std::optional<int64_t> layer) const override { return model_->resolve_layer(layer); }
  int64_t image_tokens() const override { return model_->config().image_tokens(); }
  std::vector<text::Segment> image_segments(const text::Tokenizer& tok) const override {
    return std::vector<text::Segment>(static_cast<size_t>(image_tokens()),
                                      {tok.piece(model_->config().image_token_index), true});
  }
  void prepare(const std::vector<int64_t>& ids, const std::vector<int64_t>& layers,
               generate::DecodeRequest& req) override {
    // Groups of chosen layers: [n, N, Dv] -> [n, N, H] -> their rows of embeds [L, T, H].
    const at::Tensor id_tensor = at::tensor(ids, at::TensorOptions().dtype(at::kLong));
    const int64_t L = static_cast<int64_t>(layers.size());
    const int64_t row_floats = image_tokens() * model_->config().text.hidden_size;
    req.prompt_embeds = embed_rows(L, row_floats, [&](int64_t i0, int64_t n) {
      std::vector<at::Tensor> selected;
      for (int64_t i = i0; i < i0 + n; ++i) selected.push_back(model_->select(states_.at(static_cast<size_t>(layers[i]))));
      return model_->merge(id_tensor, model_->project(at::cat(selected, 0)));
    });
    req.lm = &model_->language_model();
    req.suppress_ids = {model_->config().image_token_index};
  }

 private:
  std::unique_ptr<models::LlavaModel> model_;
  vision::ClipProcessorConfig processor_;
  c10::Device device_;
  c10::ScalarType dtype_;
  std::vector<at::Tensor> states_;  // hidden states 0..N, each [1, N_img+1, Dv]
};

// LLaVA-NeXT: base tile + grid tiles, hidden states of every tile cached for every layer.
class LlavaNextFamily final : public Family {
 public:
  LlavaNextFamily(std::unique_ptr<models::LlavaNextModel> model, vision::AnyresProcessorConfig processor,
                  c10::Device device, c10::ScalarType dtype)
      : model_(std::move(model)), processor_(std::move(processor)), device_(device), dtype_(dtype) {}
  const models::LlavaNextModel& model() const { return *model_; }

  models::LlamaModel* adaptable_language_model() override { return &model_->language_model(); }
  void set_image(const vision::Image& image) override {
    const auto& cfg = model_->config().base;
    const int64_t p = cfg.vision.image_size / cfg.vision.patch_size;
    // The prompt gets the processor's count, the model packs its own: they must agree (HF
    // raises "Image features and image tokens do not match" otherwise).
    const int64_t tokens = vision::anyres_image_token_count(image.height, image.width, processor_.grid_pinpoints,
                                                            cfg.vision.image_size, p,
                                                            cfg.vision_feature_select_strategy == "default");
    const int64_t packed = model_->packed_tokens(image.height, image.width);
    if (tokens != packed) {
      throw InputError(describe("LLaVA-NeXT image of " + std::to_string(image.width) + "x" +
                                    std::to_string(image.height),
                                "the processor's image-token count to equal the model's packed features",
                                std::to_string(tokens) + " vs " + std::to_string(packed),
                                "preprocessor_config.json and config.json must list the same image_grid_pinpoints."));
    }
    vision::AnyresImage a = vision::anyres_preprocess(image, processor_);
    const at::Tensor pixels = a.pixel_values.to(device_, dtype_);  // [N,3,S,S]
    states_ = model_->encode(pixels, cfg.vision.num_hidden_layers);
    height_ = image.height;
    width_ = image.width;
    tokens_ = tokens;
  }
  bool has_image() const override { return !states_.empty(); }
  int64_t resolve_layer(std::optional<int64_t> layer) const override { return model_->resolve_layer(layer); }
  int64_t image_tokens() const override {
    return has_image() ? tokens_ : model_->config().base.image_tokens();  // base tile only before an image
  }
  std::vector<text::Segment> image_segments(const text::Tokenizer& tok) const override {
    return std::vector<text::Segment>(static_cast<size_t>(image_tokens()),
                                      {tok.piece(model_->config().base.image_token_index), true});
  }
  void prepare(const std::vector<int64_t>& ids, const std::vector<int64_t>& layers,
               generate::DecodeRequest& req) override {
    // Groups of chosen layers: their tiles [n*N, p*p, Dv] -> [n*N, p*p, H] -> per layer packed
    // [M, H] -> their rows of embeds [L, T, H].
    const at::Tensor id_tensor = at::tensor(ids, at::TensorOptions().dtype(at::kLong));
    const int64_t L = static_cast<int64_t>(layers.size());
    const int64_t N = states_.front().size(0);
    const int64_t row_floats = N * states_.front().size(1) * model_->config().base.text.hidden_size;
    req.prompt_embeds = embed_rows(L, row_floats, [&](int64_t i0, int64_t n) {
      std::vector<at::Tensor> selected;
      for (int64_t i = i0; i < i0 + n; ++i) selected.push_back(model_->select(states_.at(static_cast<size_t>(layers[i]))));
      const at::Tensor projected = model_->project(at::cat(selected, 0));
      std::vector<at::Tensor> packed;
      for (int64_t i = 0; i < n; ++i) packed.push_back(model_->pack(projected.narrow(0, i * N, N), height_, width_));
      return model_->merge(id_tensor, at::stack(packed, 0));
    });
    req.lm = &model_->language_model();
    req.suppress_ids = {model_->config().base.image_token_index};
  }

 private:
  std::unique_ptr<models::LlavaNextModel> model_;
  vision::AnyresProcessorConfig processor_;
  c10::Device device_;
  c10::ScalarType dtype_;
  std::vector<at::Tensor> states_;  // hidden states 0..N, each [tiles, p*p+1, Dv]
  int64_t height_ = 0, width_ = 0, tokens_ = 0;
};

// Mllama's text model with one prompt's cross-attention inputs, for run_decode.
class MllamaDecoder final : public generate::TextDecoder {
 public:
  MllamaDecoder(const models::MllamaTextModel& lm, models::CrossAttentionInputs cross)
      : lm_(lm), cross_(std::move(cross)) {}
  models::KvCache make_cache(int64_t batch, int64_t capacity) const override { return lm_.make_cache(batch, capacity); }
  at::Tensor forward(const at::Tensor& embeds, const at::Tensor& positions, models::KvCache* cache,
                     const at::Tensor& key_mask, bool last_only) const override {
    if (key_mask.defined()) throw Error("Mllama decoder: padded batches (a key mask) are not supported");
    const at::Tensor hidden = lm_.forward(embeds, positions, cross_, cache);  // [B,T,H]
    return last_only ? hidden.narrow(1, hidden.size(1) - 1, 1) : hidden;
  }
  at::Tensor logits(const at::Tensor& hidden) const override { return lm_.logits(hidden); }
  at::Tensor embed(const at::Tensor& ids) const override { return lm_.embed(ids); }

 private:
  const models::MllamaTextModel& lm_;
  models::CrossAttentionInputs cross_;
};

// Llama 3.2 Vision: the local encoder's hidden states are cached; the global encoder, taps and
// projector run per chosen exit layer (batched across layers).
class MllamaFamily final : public Family {
 public:
  MllamaFamily(std::unique_ptr<models::MllamaModel> model, vision::MllamaProcessorConfig processor, c10::Device device,
               c10::ScalarType dtype)
      : model_(std::move(model)), processor_(std::move(processor)), device_(device), dtype_(dtype) {}
  const models::MllamaModel& model() const { return *model_; }

  void set_image(const vision::Image& image) override {
    const vision::MllamaImage m = vision::mllama_preprocess(image, processor_);
    const auto opts = at::TensorOptions().dtype(at::kLong);
    aspect_ids_ = at::tensor(std::vector<int64_t>{m.aspect_ratio_id}, opts).to(device_);                    // [1]
    aspect_mask_ = at::tensor(m.aspect_ratio_mask, opts).view({1, -1}).to(device_);                           // [1,A]
    const at::Tensor pixels = m.pixel_values.unsqueeze(0).to(device_, dtype_);                                // [1,A,3,t,t]
    states_ = model_->vision_model().encode_local(pixels, aspect_ids_, aspect_mask_,
                                                  model_->config().vision.num_hidden_layers);
    num_tiles_ = m.num_tiles();
  }
  bool has_image() const override { return !states_.empty(); }
  int64_t resolve_layer(std::optional<int64_t> layer) const override { return model_->resolve_layer(layer); }
  int64_t image_tokens() const override { return 1; }
  std::vector<text::Segment> image_segments(const text::Tokenizer& tok) const override {
    return {{tok.piece(model_->config().image_token_index), true}};
  }
  void prepare(const std::vector<int64_t>& ids, const std::vector<int64_t>& layers,
               generate::DecodeRequest& req) override {
    // [L, A, P, Dout] -> cross-attention states [L, A*P, H]
    const at::Tensor out = model_->vision_model().finish_layers(states_, layers, aspect_ids_, aspect_mask_);
    const at::Tensor id_tensor = at::tensor(ids, at::TensorOptions().dtype(at::kLong));
    decoder_ = std::make_unique<MllamaDecoder>(model_->language_model(),
                                               model_->cross_inputs(id_tensor, model_->project(out), num_tiles_));
    const int64_t L = static_cast<int64_t>(layers.size());
    req.decoder = decoder_.get();
    req.prompt_embeds = model_->language_model().embed(id_tensor.view({1, -1})).expand({L, -1, -1}).contiguous();
    req.suppress_ids = {model_->config().image_token_index};
  }

 private:
  std::unique_ptr<models::MllamaModel> model_;
  vision::MllamaProcessorConfig processor_;
  c10::Device device_;
  c10::ScalarType dtype_;
  std::vector<at::Tensor> states_;  // local hidden states 0..N, each [1, A*Pp, D]
  at::Tensor aspect_ids_, aspect_mask_;
  int64_t num_tiles_ = 0;
  std::unique_ptr<MllamaDecoder> decoder_;
};

}  // namespace

std::vector<std::string> prompt_formats() { return {"llava", "vicuna", "mistral", "llama3"}; }

std::string detect_prompt_format(const std::string& t, const std::string& family) {
  if (t.find("<|start_header_id|>") != std::string::npos) return "llama3";
  if (t.find("[INST]") != std::string::npos) return "mistral";
  if (t.find("ASSISTANT:") != std::string::npos) {
    // LLaVA-1.5 and v1.6-vicuna templates render "USER: ... ASSISTANT:" (USER often comes from
    // message['role'].upper(), so only ASSISTANT: is literal); v1.6's documented
    // prompt puts the vicuna system line first (llava-hf model cards, the fixture).
    return family == "llava_next" ? "vicuna" : "llava";
  }
  return {};
}

struct Session::Impl {
  ModelSummary summary;
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;
  std::unique_ptr<Family> family;
  std::unique_ptr<text::Tokenizer> tokenizer;
  std::vector<int64_t> eos_ids;
  std::string image_hash;
  // Unmerged LoRA adapters by key; every run sets the one it asks for on the LM.
  std::map<std::string, std::unique_ptr<models::LoraSet>> adapters;
  std::string default_adapter;              // load_adapter's key, "" for none
  std::unique_ptr<models::LoraSet> merged;  // load_adapter(dir, true): folded into the weights
  std::filesystem::path adapter_dir;        // load_adapter's folder as given

  models::LlamaModel& adaptable(const std::filesystem::path& dir) const {
    models::LlamaModel* lm = family->adaptable_language_model();
    if (lm == nullptr) {
      throw InputError(describe(dir.string(), "an adapter for a LLaVA-1.5 or LLaVA-NeXT model (Llama decoder)",
                                "a " + summary.family + " model, whose text model has no LoRA support yet"));
    }
    return *lm;
  }

  // The adapter a call asks for (null: the base weights) and its key for the record.
  const models::LoraSet* choose(const AdapterChoice& choice, std::string& key) const {
    if (merged) {
      key = adapter_key(adapter_dir);
      if (choice && adapter_key(*choice) != key) {
        throw InputError(describe("adapter '" + choice->string() + "'", "the merged adapter " + key,
                                  "another choice", "A merged adapter cannot be switched off: clear_adapter() first."));
      }
      return nullptr;
    }
    key = choice ? adapter_key(*choice) : default_adapter;
    if (key.empty()) return nullptr;
    const auto it = adapters.find(key);
    if (it == adapters.end()) {
      throw InputError(describe("adapter '" + key + "'", "an adapter added to this session", "not loaded",
                                "Load the adapter folder first (add_adapter)."));
    }
    return it->second.get();
  }

  std::vector<int64_t> prompt_ids(const std::string& prompt) const {
    return build_prompt_ids(*tokenizer, summary.prompt_format, family->image_segments(*tokenizer), prompt);
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
                                    const std::atomic<bool>* cancel, const AdapterChoice& adapter) {
    if (!family->has_image()) {
      throw InputError("no image is set: open an image before generating");
    }
    std::string adapter_used;
    const models::LoraSet* set = choose(adapter, adapter_used);
    if (models::LlamaModel* lm = family->adaptable_language_model()) lm->set_adapters(set);
    c10::InferenceMode inference;
    const std::vector<int64_t> ids = prompt_ids(prompt);
    check_context(ids.size());
    const generate::SamplingParams p = with_seed(params);

    generate::DecodeRequest req;
    family->prepare(ids, layers, req);
    req.prompt_ids = ids;
    req.params.assign(layers.size(), p);
    req.eos_ids = eos_ids;
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
      r.adapter = adapter_used;
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
  if (type != "llava" && type != "llava_next" && type != "mllama") {
    throw InputError(describe((dir / "config.json").string() + ": key 'model_type'",
                              "\"llava\" (LLaVA-1.5), \"llava_next\" (LLaVA-NeXT) or \"mllama\" (Llama 3.2 Vision)",
                              "\"" + type + "\""));
  }
  const auto formats = prompt_formats();
  if (options.prompt_format != "auto" &&
      std::find(formats.begin(), formats.end(), options.prompt_format) == formats.end()) {
    throw InputError(describe("prompt format", "\"auto\", \"llava\", \"vicuna\", \"mistral\" or \"llama3\"",
                              "\"" + options.prompt_format + "\""));
  }
  if (options.prompt_format != "auto" && (options.prompt_format == "llama3") != (type == "mllama")) {
    throw InputError(describe("prompt format \"" + options.prompt_format + "\"",
                              type == "mllama" ? "\"llama3\" for a Llama 3.2 Vision model"
                                               : "\"llava\", \"vicuna\" or \"mistral\" for a LLaVA model",
                              "a " + type + " model"));
  }
  auto impl = std::make_unique<Impl>();
  impl->device = runtime::parse_device(options.device);
  impl->dtype = runtime::parse_dtype(options.dtype, impl->device);
  ModelSummary& s = impl->summary;
  s.family = type;
  s.model_id = model_id_of(dir);
  s.path = dir.string();
  s.device = impl->device.str();
  s.dtype = runtime::dtype_name(impl->dtype);
  // Tokenizer and processor first: they fail fast, before gigabytes of weights are read.
  impl->tokenizer = text::load_tokenizer(dir);
  const std::filesystem::path pre = dir / "preprocessor_config.json";
  c10::InferenceMode inference;
  const io::TensorStore store = io::TensorStore::open_dir(dir);
  const models::LoadOptions load{impl->device, impl->dtype};
  std::vector<int64_t> text_eos;
  std::string text_model_type;
  if (type == "llava") {
    auto processor = vision::load_clip_processor_config(pre);
    auto model = models::load_llava(models::load_llava_config(dir / "config.json"), store, dir.string(), load, progress);
    const auto& cfg = model->config();
    const auto& crop = processor.crop_size;
    // The processor must produce what the vision tower takes; say so at load, not at the first image.
    if (processor.do_center_crop && crop.height && crop.width &&
        (*crop.height != cfg.vision.image_size || *crop.width != cfg.vision.image_size)) {
      throw InputError(describe(pre.string() + ": key 'crop_size'",
                                std::to_string(cfg.vision.image_size) + "x" + std::to_string(cfg.vision.image_size) +
                                    " (config.json vision_config.image_size)",
                                std::to_string(*crop.width) + "x" + std::to_string(*crop.height)));
    }
    s.vision_layers = cfg.vision.num_hidden_layers;
    s.default_layer = cfg.default_exit_layer();
    s.context_length = cfg.text.max_position_embeddings;
    s.exit_policy = "ICET-l: the projector takes hidden_states[l] of the CLIP tower (l = 1..N)";
    text_eos = cfg.text.eos_token_ids;
    impl->family = std::make_unique<LlavaFamily>(std::move(model), std::move(processor), impl->device, impl->dtype);
  } else if (type == "llava_next") {
    auto processor = vision::load_anyres_processor_config(pre);
    auto model = models::load_llava_next(models::load_llava_next_config(dir / "config.json"), store, dir.string(),
                                         load, progress);
    const auto& cfg = model->config().base;
    if (processor.tile_size() != cfg.vision.image_size) {
      throw InputError(describe(pre.string() + ": key 'crop_size'",
                                std::to_string(cfg.vision.image_size) + " (config.json vision_config.image_size)",
                                std::to_string(processor.tile_size())));
    }
    s.vision_layers = cfg.vision.num_hidden_layers;
    s.default_layer = cfg.default_exit_layer();
    s.context_length = cfg.text.max_position_embeddings;
    s.exit_policy = "ICET-l: every tile (base tile first) takes hidden_states[l] of the CLIP tower (l = 1..N)";
    text_eos = cfg.text.eos_token_ids;
    const nlohmann::json j = json_util::read_file(dir / "config.json");
    if (j.contains("text_config") && j["text_config"].is_object()) {
      text_model_type = j["text_config"].value("model_type", "llama");
    }
    impl->family = std::make_unique<LlavaNextFamily>(std::move(model), std::move(processor), impl->device, impl->dtype);
  } else {
    auto processor = vision::load_mllama_processor_config(pre);
    auto model = models::load_mllama(models::load_mllama_config(dir / "config.json"), store, dir.string(), load,
                                     progress);
    const auto& cfg = model->config();
    if (processor.tile_size != cfg.vision.image_size || processor.max_image_tiles != cfg.vision.max_num_tiles) {
      throw InputError(describe(pre.string() + ": keys 'size' and 'max_image_tiles'",
                                "tiles of " + std::to_string(cfg.vision.image_size) + " px, at most " +
                                    std::to_string(cfg.vision.max_num_tiles) +
                                    " (config.json vision_config image_size, max_num_tiles)",
                                std::to_string(processor.tile_size) + " px, " + std::to_string(processor.max_image_tiles)));
    }
    if (vision::supported_aspect_ratios(processor.max_image_tiles) != cfg.vision.supported_aspect_ratios) {
      throw InputError(describe((dir / "config.json").string() + ": key 'vision_config.supported_aspect_ratios'",
                                "the arrangements the image processor uses for max_image_tiles " +
                                    std::to_string(processor.max_image_tiles),
                                "a different list"));
    }
    s.vision_layers = cfg.vision.num_hidden_layers;
    s.default_layer = cfg.vision.num_hidden_layers;
    s.context_length = cfg.text.llama.max_position_embeddings;
    s.exit_policy = models::MllamaModel::kExitPolicy;
    text_eos = cfg.text.llama.eos_token_ids;
    impl->family = std::make_unique<MllamaFamily>(std::move(model), std::move(processor), impl->device, impl->dtype);
  }
  s.weights_hash = store.content_hash();
  s.image_tokens = impl->family->image_tokens();

  const models::GenerationConfig gen = models::load_generation_config(dir / "generation_config.json");
  impl->eos_ids = !gen.eos_token_ids.empty() ? gen.eos_token_ids : text_eos;

  s.prompt_format = resolve_prompt_format(dir, type, text_model_type, options.prompt_format);
  log::get("models")->info("session ready: {} ({}) on {} ({}), {} vision layers, default exit layer {}, prompt format {}",
                           s.model_id, s.family, s.device, s.dtype, s.vision_layers, s.default_layer, s.prompt_format);
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

const ModelSummary& Session::summary() const { return impl_->summary; }

void Session::set_image(const vision::Image& image) {
  c10::InferenceMode inference;
  impl_->family->set_image(image);
  impl_->image_hash = hash_bytes(image.rgb, image.width, image.height);
  impl_->summary.image_tokens = impl_->family->image_tokens();
}

bool Session::has_image() const { return impl_->family->has_image(); }
const std::string& Session::image_hash() const { return impl_->image_hash; }

GenerationRecord Session::generate(const std::string& prompt, std::optional<int64_t> layer,
                                   const generate::SamplingParams& params, const StreamCallback& stream,
                                   const std::atomic<bool>* cancel, const AdapterChoice& adapter) {
  const int64_t l = impl_->family->resolve_layer(layer);
  return impl_->run(prompt, {l}, params, stream, cancel, adapter).front();
}

std::vector<GenerationRecord> Session::sweep(const std::string& prompt, const std::vector<int64_t>& layers,
                                             const generate::SamplingParams& params, const StreamCallback& stream,
                                             const std::atomic<bool>* cancel, const AdapterChoice& adapter) {
  if (layers.empty()) {
    throw InputError("sweep: no layers chosen (expected e.g. 1-24 or 3,7,9)");
  }
  for (int64_t l : layers) impl_->family->resolve_layer(l);
  return impl_->run(prompt, layers, params, stream, cancel, adapter);
}

std::vector<int64_t> Session::prompt_ids(const std::string& prompt) const { return impl_->prompt_ids(prompt); }

std::string Session::add_adapter(const std::filesystem::path& dir) {
  c10::InferenceMode inference;
  models::LlamaModel& lm = impl_->adaptable(dir);
  auto set = std::make_unique<models::LoraSet>(models::load_peft_adapter(dir, lm, "language_model."));
  const std::string key = adapter_key(dir);
  lm.set_adapters(nullptr);  // the LM may point at the set replaced below; every run sets its own
  impl_->adapters[key] = std::move(set);
  log::get("models")->info("adapter {} loaded ({} held)", key, impl_->adapters.size());
  return key;
}

void Session::remove_adapter(const std::filesystem::path& dir) {
  const std::string key = adapter_key(dir);
  if (impl_->adapters.erase(key) == 0) return;
  if (models::LlamaModel* lm = impl_->family->adaptable_language_model()) lm->set_adapters(nullptr);
  if (impl_->default_adapter == key) {
    impl_->default_adapter.clear();
    impl_->adapter_dir.clear();
  }
}

std::vector<std::string> Session::adapters() const {
  std::vector<std::string> keys;
  for (const auto& entry : impl_->adapters) keys.push_back(entry.first);
  return keys;
}

void Session::load_adapter(const std::filesystem::path& dir, bool merge) {
  c10::InferenceMode inference;
  if (!merge) {
    const std::string key = add_adapter(dir);  // a bad folder keeps the old default
    if (impl_->default_adapter != key) clear_adapter();
    impl_->default_adapter = key;
    impl_->adapter_dir = dir;
    return;
  }
  models::LlamaModel& lm = impl_->adaptable(dir);
  auto set = std::make_unique<models::LoraSet>(models::load_peft_adapter(dir, lm, "language_model."));
  clear_adapter();
  lm.merge_adapters(*set, 1.0);
  impl_->merged = std::move(set);
  impl_->adapter_dir = dir;
  log::get("models")->info("adapter {} merged into the weights", dir.string());
}

void Session::clear_adapter() {
  if (impl_->merged) {
    c10::InferenceMode inference;
    impl_->family->adaptable_language_model()->merge_adapters(*impl_->merged, -1.0);
    impl_->merged.reset();
  } else if (!impl_->default_adapter.empty()) {
    remove_adapter(impl_->default_adapter);
  }
  impl_->default_adapter.clear();
  impl_->adapter_dir.clear();
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
