#include "core/base/json_util.h"

#include <cmath>
#include <limits>

#include "core/base/atomic_file.h"
#include "core/base/error.h"

namespace icet::json_util {
namespace {

constexpr const char* kInt64Range = " from -2^63 to 2^63 - 1";

// The value as int64_t when it is exactly one (an integer, or a float without a fraction) and
// in range; nullopt otherwise. The range is checked before converting: a double at or past
// 2^63 cast to int64_t is undefined behaviour, and an unsigned above 2^63 - 1 would wrap.
std::optional<int64_t> exact_int64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    constexpr double kTwo63 = 9223372036854775808.0;
    const double d = v.get<double>();
    if (d >= -kTwo63 && d < kTwo63 && d == std::trunc(d)) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

}  // namespace


void check_depth(int depth, const std::string& where) {
  if (depth > kMaxDepth) {
    throw InputError(describe(where, "JSON nested at most " + std::to_string(kMaxDepth) + " levels deep",
                              "deeper nesting", "The file is damaged or not what it claims to be."));
  }
}

nlohmann::json parse(std::string_view text, const std::string& where) {
  const auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if (event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) {
      check_depth(depth, where);
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for a number past double's range ("1e999": 406).
    throw InputError(describe(where, "valid JSON", std::string("a parse error (") + e.what() + ")"));
  }
}

nlohmann::json read_file(const std::filesystem::path& file, std::uint64_t max_bytes) {
  if (!std::filesystem::exists(file)) {
    throw InputError(file.string() + ": cannot open the file (it does not exist)");
  }
  return parse(read_file_limited(file, max_bytes, "a JSON file"), file.string());
}

std::string type_name(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "a list";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    case nlohmann::json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

namespace {
const nlohmann::json& empty_object() {
  static const nlohmann::json empty = nlohmann::json::object();
  return empty;
}
}  // namespace

Reader::Reader(const nlohmann::json& object, std::string file, std::string prefix)
    : object_(object.is_object() ? &object : &empty_object()),
      file_(std::move(file)),
      prefix_(std::move(prefix)) {
  if (!object.is_object() && !object.is_null()) {
    throw InputError(describe(file_ + (prefix_.empty() ? std::string() : ": key '" + prefix_.substr(0, prefix_.size() - 1) + "'"),
                              "a JSON object", type_name(object)));
  }
}

std::string Reader::where(const char* key) const {
  return file_ + ": key '" + key_path(key) + "'";
}

const nlohmann::json* Reader::find(const char* key) const {
  auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) {
    return nullptr;
  }
  return &*it;
}

bool Reader::has(const char* key) const { return find(key) != nullptr; }

void Reader::type_error(const char* key, const char* expected) const {
  const nlohmann::json* v = find(key);
  throw InputError(describe(where(key), expected, v != nullptr ? type_name(*v) : "nothing (the key is missing)",
                            v != nullptr ? std::string() : "Add it to the file, or use an unmodified Hugging Face snapshot."));
}

int64_t Reader::integer(const char* key, std::optional<int64_t> fallback) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    type_error(key, "an integer");
  }
  if (const auto i = exact_int64(*v)) {
    return *i;
  }
  if (v->is_number()) {
    throw InputError(describe(where(key), std::string("an integer") + kInt64Range, v->dump()));
  }
  type_error(key, "an integer");
}

double Reader::number(const char* key, std::optional<double> fallback) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    type_error(key, "a number");
  }
  if (!v->is_number()) {
    type_error(key, "a number");
  }
  return v->get<double>();
}

bool Reader::boolean(const char* key, std::optional<bool> fallback) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    type_error(key, "true or false");
  }
  if (!v->is_boolean()) {
    type_error(key, "true or false");
  }
  return v->get<bool>();
}

std::string Reader::string(const char* key, std::optional<std::string> fallback) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    type_error(key, "a string");
  }
  if (!v->is_string()) {
    type_error(key, "a string");
  }
  return v->get<std::string>();
}

std::vector<int64_t> Reader::integers(const char* key, std::optional<std::vector<int64_t>> fallback) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    type_error(key, "a list of integers");
  }
  if (!v->is_array()) {
    type_error(key, "a list of integers");
  }
  std::vector<int64_t> out;
  for (const auto& item : *v) {
    if (!item.is_number_integer() && !item.is_number_unsigned()) {
      type_error(key, "a list of integers");
    }
    const auto i = exact_int64(item);
    if (!i) {
      throw InputError(describe(where(key), std::string("a list of integers") + kInt64Range, item.dump()));
    }
    out.push_back(*i);
  }
  return out;
}

std::vector<double> Reader::numbers(const char* key, std::optional<std::vector<double>> fallback) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    type_error(key, "a list of numbers");
  }
  if (!v->is_array()) {
    type_error(key, "a list of numbers");
  }
  std::vector<double> out;
  for (const auto& item : *v) {
    if (!item.is_number()) {
      type_error(key, "a list of numbers");
    }
    out.push_back(item.get<double>());
  }
  return out;
}

std::vector<int64_t> Reader::integer_or_list(const char* key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    return {};
  }
  if (v->is_array()) {
    return integers(key);
  }
  return {integer(key)};
}

Reader Reader::child(const char* key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    return Reader(empty_object(), file_, prefix_ + key + ".");
  }
  if (!v->is_object()) {
    type_error(key, "an object");
  }
  return Reader(*v, file_, prefix_ + key + ".");
}

}  // namespace icet::json_util
