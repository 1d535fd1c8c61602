#pragma once

// A strong random LoRA adapter (PEFT layout) for a llava snapshot: its greedy tokens differ from
// the base model's, so tests can tell which model answered.

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>

#include "core/generate/sampling.h"
#include "core/models/llava.h"
#include "core/models/lora.h"

namespace icet::test {

inline void write_random_adapter(const std::filesystem::path& model, const std::filesystem::path& out, uint64_t seed = 5) {
  auto llava = icet::models::load_llava(model, icet::models::LoadOptions{});
  icet::models::LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.targets = {"q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  auto gen = icet::generate::make_generator(seed);
  auto set = icet::models::LoraSet::create(llava->language_model(), c, gen);
  at::NoGradGuard no_grad;
  for (auto& p : set.parameters()) {
    p.normal_(0.0, 0.3, gen);
    p.mul_(3.0);
  }
  icet::models::save_peft_adapter(set, out, "language_model.");
}

}  // namespace icet::test
