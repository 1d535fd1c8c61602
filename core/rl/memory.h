#pragma once

// Memory a training run will need, estimated before it starts (no weights are loaded: shapes
// come from config.json and the safetensors headers), and the check that refuses a run that
// will not fit, with the numbers. Torch-free header.

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace icet::rl {

struct LppoConfig;

struct MemoryEstimate {
  std::string device;        // "cpu", "cuda:0"
  std::string dtype;         // of the frozen weights
  double weights_gib = 0;    // VLM + reward model + judge, in `dtype`
  double adapters_gib = 0;   // LoRA + value head: parameters, gradients, AdamW moments, the update snapshot (float32)
  double activations_gib = 0;  // the update's autograd graph for one minibatch (less with gradient checkpointing)
  double logits_gib = 0;     // float32 [b, R, V] logits, log-softmax and reference logits of one minibatch
  double kv_cache_gib = 0;   // rollouts: the batch's KV cache
  double total_gib = 0;
  double available_gib = 0;  // the budget: memory_budget_gib, else the device's memory (CPU: MemAvailable)
  bool fits() const { return total_gib <= available_gib; }
};

// InputError naming the file and key when the model's config or weights cannot be read.
MemoryEstimate estimate_training_memory(const LppoConfig& config);
nlohmann::json to_json(const MemoryEstimate& e);
// "needs about 21.4 GiB (weights 13.5, adapters 0.3, activations 5.1, logits 2.0, KV cache 0.5) of 79.1 GiB on cuda:0"
std::string memory_summary(const MemoryEstimate& e);
// InputError with memory_summary() and what to change (batch size, minibatches, gradient
// checkpointing, bfloat16, max_new_tokens) when it does not fit.
void require_fits(const MemoryEstimate& e);

}  // namespace icet::rl
