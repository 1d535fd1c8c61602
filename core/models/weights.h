#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace icet::io {
class TensorStore;
}

namespace icet::models {

struct LoadOptions {
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;  // floating weights are converted to this
  // Training (demo recipe, fine-tuning): every taken weight becomes a private copy with
  // requires_grad set, listed by WeightLoader::parameters() under its checkpoint name, so an
  // optimizer can update the model in place and save_safetensors can write it back.
  bool trainable = false;
};

// LoadOptions from the names engine::SessionOptions uses: device "auto", "cpu", "cuda",
// "cuda:N"; dtype "auto", "float32", "bfloat16", "float16" (runtime::parse_device/parse_dtype,
// InputError for another value).
LoadOptions load_options(const std::string& device, const std::string& dtype);

// Progress of a load: tensors taken so far and in all; return false to cancel.
using LoadProgress = std::function<bool(size_t done, size_t total)>;

// Hands out a checkpoint's tensors by their Hugging Face names, checking each name, shape and
// dtype. Problems are collected, not thrown one at a time, so finish() can report every
// missing, mis-shaped and unexpected tensor in one message (llama.cpp-style:
// "expected N tensors, got M").
class WeightLoader {
 public:
  WeightLoader(const io::TensorStore& store, LoadOptions options, std::string source,
               LoadProgress progress = {});

  // Schema mode: no checkpoint; take() returns zeros and records every name and shape, so
  // a model's constructor lists the tensors its checkpoint must hold (used to write
  // synthetic checkpoints for tests and benchmarks).
  static WeightLoader schema(LoadOptions options = {});
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
  };
  const std::vector<Entry>& recorded() const { return recorded_; }

  // A floating-point weight of exactly `shape`, as options.dtype on options.device
  // (zero-copy when the checkpoint already matches). On a problem, records it and returns
  // zeros of the expected shape so construction can go on to find the other problems.
  at::Tensor take(const std::string& name, std::vector<int64_t> shape);
  // Consumed but not used (e.g. CLIP's post_layernorm, which LLaVA never applies).
  void skip(const std::string& name, std::vector<int64_t> shape);
  // Optional tensors: absent is fine.
  bool contains(const std::string& name) const;

  // Throws InputError listing every problem and every unexpected tensor. With
  // `ignore_prefixes`, unexpected tensors under them are tolerated (e.g. buffers old
  // checkpoints carry).
  void finish(const std::vector<std::string>& ignore_prefixes = {});

  // Sections config.json lacked and the family's defaults filled in (e.g. "text_config
  // (Llama-2-7B sizes)"): named in finish()'s error, where they usually explain the mismatch.
  void set_assumed_defaults(std::vector<std::string> sections) { assumed_defaults_ = std::move(sections); }

  const LoadOptions& options() const { return options_; }
  // With options.trainable: the weights taken so far, by checkpoint name, in take() order.
  const std::vector<std::pair<std::string, at::Tensor>>& parameters() const { return parameters_; }

 private:
  void tick();
  void problem(std::string text);

  WeightLoader(LoadOptions options);  // schema mode

  const io::TensorStore* store_;  // null in schema mode
  std::vector<Entry> recorded_;
  LoadOptions options_;
  std::string source_;
  LoadProgress progress_;
  std::set<std::string> taken_;
  std::vector<std::string> problems_;  // the first few, for the message
  size_t problem_count_ = 0;
  std::vector<std::string> assumed_defaults_;
  std::vector<std::pair<std::string, at::Tensor>> parameters_;
  size_t total_ = 0;
};

}  // namespace icet::models
