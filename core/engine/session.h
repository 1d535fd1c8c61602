#pragma once

// The engine's API for front ends (CLI, UI adapters). Torch-free header (pimpl), so ui code
// can hold a Session without including LibTorch.

#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/generate/sampling_params.h"

namespace icet::vision {
struct Image;
}

namespace icet::engine {

// Checked by runtime::parse_device / parse_dtype (core/runtime/device.h), as every --device /
// --dtype is.
struct SessionOptions {
  std::string device = "auto";  // "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
  std::string dtype = "auto";   // "auto" (float32 on CPU, bfloat16 on CUDA), "float32", "bfloat16", "float16" (CUDA)
  // How the user's message is wrapped: "auto" detects the snapshot's chat template among the
  // known ones (falling back to the family's usual format); or one of prompt_formats().
  std::string prompt_format = "auto";
};

// Known prompt formats ({user} is the message, <image> the family's image placeholder):
//   "llava"   USER: <image>\n{user} ASSISTANT:                       (LLaVA-1.5)
//   "vicuna"  A chat between ... questions. USER: <image>\n{user} ASSISTANT:   (LLaVA-v1.6 vicuna)
//   "mistral" [INST] <image>\n{user} [/INST]                          (LLaVA-v1.6 mistral)
//   "llama3"  <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>{user}
//             <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n   (Llama 3.2 Vision)
std::vector<std::string> prompt_formats();
// The format a chat template renders, or "" when it is none of the known ones.
std::string detect_prompt_format(const std::string& chat_template, const std::string& family);

struct ModelSummary {
  std::string family;        // "llava", "llava_next" or "mllama"
  std::string model_id;      // "llava-hf/llava-1.5-7b-hf" for a hub-cache snapshot, else the folder name
  std::string path;
  std::string weights_hash;  // identifies the exact weights (see io::TensorStore::content_hash)
  std::string device;
  std::string dtype;
  int64_t vision_layers = 0;  // exit layers are 1..vision_layers
  int64_t default_layer = 0;  // the checkpoint's own vision_feature_layer, as an index
  int64_t image_tokens = 0;  // image tokens in the prompt (llava_next: for the current image)
  int64_t context_length = 0;
  std::string prompt_format;  // see prompt_formats()
  std::string exit_policy;    // what exit layer l means for this family (Mllama's is an assumption)
};
nlohmann::json to_json(const ModelSummary& s);

// Everything needed to replay an answer: same model + weights, image, prompt, layer,
// sampling parameters and seed give the same tokens.
struct GenerationRecord {
  std::string model_id;
  std::string weights_hash;
  std::string image_hash;
  std::string prompt;
  int64_t layer = 0;
  std::string adapter;  // the LoRA adapter folder that answered (Session's key), empty for the base model
  generate::SamplingParams params;  // seed always set
  std::vector<int64_t> token_ids;
  std::string text;
  std::string stop_reason;
  int64_t prompt_tokens = 0;
  double seconds = 0.0;
  double first_token_seconds = 0.0;
  double tokens_per_second = 0.0;
};
nlohmann::json to_json(const GenerationRecord& r);

// Streaming: called on the generating thread for every token of every row.
struct StreamEvent {
  size_t row = 0;
  int64_t layer = 0;
  int64_t token = 0;  // -1 for a final text flush
  std::string text;   // completed UTF-8 text for this token (may be empty)
};
using StreamCallback = std::function<void(const StreamEvent&)>;
// Load progress: (done, total) tensors; return false to cancel.
using ProgressCallback = std::function<bool(size_t, size_t)>;

// Which LoRA adapter answers a generate/sweep call: nullopt = the one load_adapter set (none:
// the base model); an empty path = the base model; a folder = that adapter, added before with
// add_adapter (any spelling of the same folder).
using AdapterChoice = std::optional<std::filesystem::path>;

// A loaded VLM plus the current image's cached encoder states. One thread at a time.
class Session {
 public:
  // Loads an HF snapshot folder (config.json, *.safetensors, tokenizer, preprocessor config).
  static std::unique_ptr<Session> open(const std::filesystem::path& dir, const SessionOptions& options = {},
                                       const ProgressCallback& progress = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const ModelSummary& summary() const;

  // Preprocesses the image and runs the vision tower once, keeping every hidden state: a
  // later layer change only re-runs the projector and the LM.
  void set_image(const vision::Image& image);
  bool has_image() const;
  const std::string& image_hash() const;

  // `prompt` is the user's message; the family's chat template is applied here.
  // layer: exit layer 1..N, or the checkpoint's default when empty.
  GenerationRecord generate(const std::string& prompt, std::optional<int64_t> layer,
                            const generate::SamplingParams& params, const StreamCallback& stream = {},
                            const std::atomic<bool>* cancel = nullptr, const AdapterChoice& adapter = {});

  // All `layers` as ONE batch: one projection, one prefill, one decode loop; rows that finish
  // leave the batch. Row i equals generate(prompt, layers[i], params) token for token.
  std::vector<GenerationRecord> sweep(const std::string& prompt, const std::vector<int64_t>& layers,
                                      const generate::SamplingParams& params, const StreamCallback& stream = {},
                                      const std::atomic<bool>* cancel = nullptr, const AdapterChoice& adapter = {});

  // LoRA adapters (PEFT folder: adapter_config.json + adapter_model.safetensors, e.g. a
  // training run's adapter/). Several unmerged ones are held at once and each call picks one
  // (AdapterChoice): the encoder states of the image are shared, and switching costs nothing
  // (the LM applies the chosen A/B pairs on the fly). add_adapter returns the folder's key;
  // adding a folder again reloads it (a run writes newer checkpoints). InputError when it does
  // not fit the model.
  std::string add_adapter(const std::filesystem::path& dir);
  void remove_adapter(const std::filesystem::path& dir);
  std::vector<std::string> adapters() const;  // keys, sorted

  // The default adapter, for calls that name none; replaces a previous one. merge: folded
  // into the weights (no per-token cost; clear_adapter subtracts it again, equal up to
  // rounding) and then calls may only choose it (a merged adapter cannot be switched off).
  void load_adapter(const std::filesystem::path& dir, bool merge = false);
  void clear_adapter();
  // The default adapter's folder as given (empty when none).
  const std::filesystem::path& adapter() const;

  // The prompt's token ids after the chat template and image-token expansion.
  std::vector<int64_t> prompt_ids(const std::string& prompt) const;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// "1-24", "3,7,9", "1-8,20", "all" -> sorted unique layers, each checked against 1..num_layers.
std::vector<int64_t> parse_layers(const std::string& spec, int64_t num_layers);

}  // namespace icet::engine
