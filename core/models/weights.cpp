#include "core/models/weights.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <sstream>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/io/safetensors.h"
#include "core/runtime/device.h"

namespace icet::models {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    out << (i ? ", " : "") << shape[i];
  }
  out << "]";
  return out.str();
}

bool is_floating(io::DType d) {
  return d == io::DType::F32 || d == io::DType::F16 || d == io::DType::BF16;
}

}  // namespace

LoadOptions load_options(const std::string& device, const std::string& dtype) {
  LoadOptions o;
  o.device = runtime::parse_device(device);
  o.dtype = runtime::parse_dtype(dtype, o.device);
  return o;
}

WeightLoader::WeightLoader(const io::TensorStore& store, LoadOptions options, std::string source,
                           LoadProgress progress)
    : store_(&store),
      options_(options),
      source_(std::move(source)),
      progress_(std::move(progress)),
      total_(store.names().size()) {}

WeightLoader::WeightLoader(LoadOptions options) : store_(nullptr), options_(options), source_("schema") {}

WeightLoader WeightLoader::schema(LoadOptions options) { return WeightLoader(options); }

bool WeightLoader::contains(const std::string& name) const { return store_ != nullptr && store_->contains(name); }

void WeightLoader::problem(std::string text) {
  // Only the first few are shown: a config typo that mis-sizes every tensor of a large model
  // must not build a message per tensor.
  if (problems_.size() < 12) problems_.push_back(std::move(text));
  ++problem_count_;
}

void WeightLoader::tick() {
  if (progress_ && !progress_(taken_.size(), total_)) {
    throw Cancelled();
  }
}

at::Tensor WeightLoader::take(const std::string& name, std::vector<int64_t> shape) {
  const auto opts = at::TensorOptions().dtype(options_.dtype).device(options_.device);
  // A problem's stand-in is one zero broadcast to the config's shape: no memory in that shape is
  // allocated, so a config.json typo (hidden_size 40960) reports every mismatch instead of
  // exhausting memory first. The model is never run: finish() throws.
  auto placeholder = [&] { return at::zeros({}, opts).expand(shape); };
  if (store_ == nullptr) {
    recorded_.push_back({name, shape});
    return at::zeros(shape, opts);
  }
  if (!store_->contains(name)) {
    problem("missing tensor '" + name + "' " + shape_string(shape));
    return placeholder();
  }
  taken_.insert(name);
  const io::TensorInfo& info = store_->info(name);
  if (info.shape != shape) {
    problem("tensor '" + name + "' in " + store_->file_of(name).filename().string() +
                        ": expected shape " + shape_string(shape) + " (from config.json), found " +
                        shape_string(info.shape));
    return placeholder();
  }
  if (!is_floating(info.dtype)) {
    problem("tensor '" + name + "': expected a floating-point dtype (F32, F16, BF16), found " +
                        std::string(io::dtype_name(info.dtype)));
    return placeholder();
  }
  at::Tensor t = store_->get(name, options_.dtype, options_.device);
  if (options_.trainable) {
    // A copy: the store's tensors alias a read-only-by-contract mapping shared by readers.
    t = t.clone().set_requires_grad(true);
    parameters_.emplace_back(name, t);
  }
  tick();
  return t;
}

void WeightLoader::skip(const std::string& name, std::vector<int64_t> shape) {
  if (store_ == nullptr) {
    recorded_.push_back({name, std::move(shape)});
  } else if (store_->contains(name)) {
    taken_.insert(name);
  }
}

void WeightLoader::finish(const std::vector<std::string>& ignore_prefixes) {
  if (store_ == nullptr) {
    return;
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : store_->names()) {
    if (taken_.count(name) != 0) {
      continue;
    }
    bool ignored = false;
    for (const auto& prefix : ignore_prefixes) {
      ignored = ignored || name.rfind(prefix, 0) == 0;
    }
    if (!ignored) {
      unexpected.push_back(name);
    }
  }
  if (problem_count_ == 0 && unexpected.empty()) {
    log::get("models")->debug("{}: all {} tensors loaded", source_, taken_.size());
    return;
  }
  std::ostringstream msg;
  msg << source_ << ": the weights do not match config.json (" << problem_count_ << " problem(s), "
      << unexpected.size() << " unexpected tensor(s); expected tensors found: " << taken_.size() << " of "
      << total_ << ")";
  const size_t shown = 12;
  for (size_t i = 0; i < problems_.size() && i < shown; ++i) {
    msg << "\n  - " << problems_[i];
  }
  if (problem_count_ > shown) {
    msg << "\n  - ... and " << problem_count_ - shown << " more";
  }
  for (size_t i = 0; i < unexpected.size() && i < shown; ++i) {
    msg << "\n  - unexpected tensor '" << unexpected[i] << "'";
  }
  if (unexpected.size() > shown) {
    msg << "\n  - ... and " << unexpected.size() - shown << " more unexpected";
  }
  for (const auto& d : assumed_defaults_) {
    msg << "\nconfig.json has no " << d << ", so transformers' default was assumed.";
  }
  msg << "\nCheck that config.json belongs to these weights (same model and size).";
  throw InputError(msg.str());
}

}  // namespace icet::models
