#pragma once

// The L-PPO policy around a loaded LLaVA model: frozen encoder and projector (image features
// cached per image and exit layer), the LM with LoRA adapters (adapters off = the reference
// policy, no second copy), batched sampling of left-padded prompts with a KV cache, and the
// full-sequence forward that PPO and SFT train with.
//
// Shape legend: B rollouts, P padded prompt length, R padded response length, S = P + R,
// H LM width, V vocab, N image tokens.

#include <ATen/core/Tensor.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/eval/prompt_set.h"
#include "core/models/llava.h"
#include "core/text/tokenizer.h"
#include "core/vision/clip_processor.h"

namespace icet::rl {

struct SampleSettings {
  bool greedy = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t max_new_tokens = 64;
};

// A padded batch of (prompt, response) rows: prompts left-padded, responses right-padded.
struct RolloutBatch {
  at::Tensor embeds;     // [B, S, H] input embeddings (constant: embedding table and features are frozen)
  at::Tensor attention;  // [B, S] 1 = real position
  at::Tensor positions;  // [B, S] int64, cumsum(attention) - 1 (0 on padding)
  at::Tensor tokens;     // [B, R] int64 response ids (0 on padding)
  at::Tensor mask;       // [B, R] float 1 = real response token
  int64_t prompt_len = 0;  // P

  RolloutBatch rows(const at::Tensor& index) const;  // index: [b] int64
};

struct Generated {
  std::vector<std::vector<int64_t>> tokens;  // per row, up to and including an EOS
  std::vector<bool> ended;                   // row stopped at EOS
  int64_t new_tokens = 0;                    // sum of real tokens
};

struct PolicyOptions {
  std::string device = "cpu";     // runtime::parse_device names ("auto", "cpu", "cuda", "cuda:N")
  std::string dtype = "float32";  // the frozen weights ("auto", "float32", "bfloat16", "float16")
};

class Policy {
 public:
  // Loads config.json, weights (frozen, in options.dtype on options.device), tokenizer and
  // preprocessor config. The prompt format is the one engine::Session picks for the snapshot.
  explicit Policy(const std::filesystem::path& model_dir, const PolicyOptions& options = {});

  models::LlavaModel& model() { return *model_; }
  models::LlamaModel& lm() { return model_->language_model(); }
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }
  int64_t default_layer() const { return model_->config().default_exit_layer(); }
  int64_t vision_layers() const { return model_->config().vision.num_hidden_layers; }
  const std::vector<int64_t>& eos_ids() const { return eos_ids_; }
  int64_t hidden_size() const { return model_->config().text.hidden_size; }
  c10::Device device() const { return device_; }
  c10::ScalarType dtype() const { return dtype_; }

  // The message in the snapshot's prompt format with the image tokens expanded, built by
  // engine::build_prompt_ids as the lab builds it; the prompt is user text (never parsed for
  // special tokens).
  std::vector<int64_t> prompt_ids(const std::string& prompt) const;
  // Projected features of `image` at exit `layer`: [N, H], cached (the encoder runs once per image).
  at::Tensor features(const std::filesystem::path& image, int64_t layer);
  // ids: [T] with N image tokens, features [N, H] -> [T, H]
  at::Tensor prompt_embeds(const std::vector<int64_t>& ids, const at::Tensor& features) const;

  // Samples (or greedy-decodes) one response per prompt, all rows as one left-padded batch,
  // through the lab's decoder (generate::run_decode) with its clean logits policy: row i is
  // the answer engine::Session::generate gives for that prompt, layer and seeds[i]. Cancel is
  // checked before every decode step (throws icet::Cancelled).
  Generated generate(const std::vector<at::Tensor>& prompts, const SampleSettings& s, const std::vector<uint64_t>& seeds,
                     const std::atomic<bool>* cancel) const;

  // Pads prompts ([T_i, H] each) and responses into one batch.
  RolloutBatch make_batch(const std::vector<at::Tensor>& prompts, const std::vector<std::vector<int64_t>>& responses) const;

  // The LM over a batch (adapters as currently set) -> hidden states at the positions that
  // predict each response token: [B, R, H]
  at::Tensor response_hidden(const RolloutBatch& batch) const;

  std::string decode(const std::vector<int64_t>& ids) const;  // special tokens skipped

 private:
  c10::Device device_ = c10::Device(c10::kCPU);
  c10::ScalarType dtype_ = c10::kFloat;
  std::unique_ptr<models::LlavaModel> model_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  vision::ClipProcessorConfig processor_;
  std::string prompt_format_;
  std::vector<int64_t> eos_ids_;
  std::map<std::pair<std::string, int64_t>, at::Tensor> feature_cache_;
};

// Benign accuracy as eval::score_answer scores an exact-answer item: the trimmed answer equals the expected one.
bool matches_expected(const std::string& answer, const std::string& expected);

}  // namespace icet::rl
