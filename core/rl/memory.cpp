#include "core/rl/memory.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

#include "core/base/error.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/rl/trainer.h"
#include "core/runtime/device.h"
#include "core/runtime/memory.h"

namespace icet::rl {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Parameters of a snapshot's weights, from the safetensors headers (nothing is read).
double parameters_of(const std::filesystem::path& dir) {
  if (dir.empty() || dir == "placeholder" || !std::filesystem::is_directory(dir)) return 0;
  const io::TensorStore store = io::TensorStore::open_dir(dir);
  double n = 0;
  for (const auto& name : store.names()) n += static_cast<double>(store.info(name).numel());
  return n;
}

}  // namespace

MemoryEstimate estimate_training_memory(const LppoConfig& c) {
  MemoryEstimate e;
  const c10::Device device = runtime::parse_device(c.device);
  const c10::ScalarType dtype = runtime::parse_dtype(c.dtype, device);
  e.device = device.str();
  e.dtype = runtime::dtype_name(dtype);
  const auto w = static_cast<double>(c10::elementSize(dtype));
  const models::LlavaConfig cfg = models::load_llava_config(c.model / "config.json");
  const auto& t = cfg.text;
  const double H = static_cast<double>(t.hidden_size), I = static_cast<double>(t.intermediate_size);
  const double L = static_cast<double>(t.num_hidden_layers), V = static_cast<double>(t.vocab_size);
  const double heads = static_cast<double>(t.num_attention_heads);
  // parse() has filled in head_dim and num_key_value_heads.
  const double kv = static_cast<double>(t.num_key_value_heads * t.head_dim);

  e.weights_gib = w * (parameters_of(c.model) + parameters_of(c.reward_model) + parameters_of(c.judge)) / kGiB;

  // LoRA: r x (in + out) per adapted linear per layer; float32 parameter, gradient, two AdamW
  // moments and the snapshot a cancelled update restores (parameter and moments): 7 copies.
  double lora = 0;
  for (const auto& m : c.lora_targets) {
    const double in = m == "down_proj" ? I : H;
    const double out = m == "gate_proj" || m == "up_proj" ? I : m == "k_proj" || m == "v_proj" ? kv : H;
    lora += static_cast<double>(c.lora_r) * (in + out);
  }
  e.adapters_gib = 7.0 * 4.0 * (L * lora + H + 1) / kGiB;

  // One minibatch of the update: b rows of S = prompt (image tokens + ~64 text) + response.
  const double b = std::max<double>(1.0, static_cast<double>(c.batch_size) / static_cast<double>(std::max<int64_t>(1, c.num_minibatches)));
  const double R = static_cast<double>(c.max_new_tokens);
  const double S = static_cast<double>(cfg.image_tokens()) + 64.0 + R;
  // Saved per layer: the norms, q/k/v/o and MLP inputs and outputs (~10 H + 4 I values per
  // position) and the attention scores and probabilities (2 x heads x S per position). With
  // checkpointing only each layer's input is kept, plus one layer's graph during its rerun.
  const double per_layer = b * S * ((10.0 * H + 4.0 * I) + 2.0 * heads * S) * w;
  e.activations_gib = (c.gradient_checkpointing ? L * b * S * H * w + per_layer : L * per_layer) / kGiB;
  // float32 logits, their log-softmax and gradient, and the reference logits: 4 x [b, R, V].
  e.logits_gib = 4.0 * 4.0 * b * R * V / kGiB;
  // Rollouts: keys and values of every layer for the whole batch.
  e.kv_cache_gib = 2.0 * L * static_cast<double>(c.batch_size) * S * kv * w / kGiB;
  e.total_gib = e.weights_gib + e.adapters_gib + e.activations_gib + e.logits_gib + e.kv_cache_gib;

  const runtime::DeviceMemory mem = runtime::device_memory(e.device);
  e.available_gib = c.memory_budget_gib > 0 ? c.memory_budget_gib
                    : device.is_cuda()      ? static_cast<double>(mem.total_bytes) / kGiB
                                            : static_cast<double>(mem.free_bytes) / kGiB;
  return e;
}

nlohmann::json to_json(const MemoryEstimate& e) {
  return {{"device", e.device},           {"dtype", e.dtype},
          {"weights_gib", e.weights_gib}, {"adapters_gib", e.adapters_gib},
          {"activations_gib", e.activations_gib}, {"logits_gib", e.logits_gib},
          {"kv_cache_gib", e.kv_cache_gib}, {"total_gib", e.total_gib},
          {"available_gib", e.available_gib}, {"fits", e.fits()}};
}

std::string memory_summary(const MemoryEstimate& e) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "needs about %.1f GiB (weights %.1f in %s, adapters and optimizer %.2f, activations %.1f, logits %.1f, "
                "KV cache %.1f) of %.1f GiB on %s",
                e.total_gib, e.weights_gib, e.dtype.c_str(), e.adapters_gib, e.activations_gib, e.logits_gib,
                e.kv_cache_gib, e.available_gib, e.device.c_str());
  return buf;
}

void require_fits(const MemoryEstimate& e) {
  if (e.fits() || e.available_gib <= 0) return;  // unknown memory (no NVML): not refused
  throw InputError("this run " + memory_summary(e) +
                   ", so it would run out of memory. Lower batch_size or raise num_minibatches, set "
                   "\"gradient_checkpointing\": true, use \"dtype\": \"bfloat16\", or shorten max_new_tokens "
                   "(memory_budget_gib sets the budget).");
}

}  // namespace icet::rl
