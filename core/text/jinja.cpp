#include "core/text/jinja.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <utility>

#include "core/base/error.h"

namespace icet::text::jinja {
namespace {

// ---- errors and the render budget -------------------------------------------------------

// Errors carry the template line; Template wraps them into an InputError with its name.
struct RenderError {
  std::string message;
  int line;
};
[[noreturn]] void fail(int line, const std::string& message) { throw RenderError{message, line}; }

// The budget of the render running on this thread; null while parsing. Low-level helpers
// (string copies and appends, comparisons, searches) charge it directly, so that no path can
// build, copy or scan text unaccounted.
struct Budget {
  RenderLimits limits;
  uint64_t steps = 0;
  uint64_t bytes = 0;  // bytes processed and not yet charged as steps
  int calls = 0;       // filter calls nested at run time
  int line = 0;        // the line being evaluated, for errors raised by helpers
};
thread_local Budget* t_budget = nullptr;

constexpr uint64_t kBytesPerStep = 64;

uint64_t saturating_mul(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

[[noreturn]] void over_steps(const Budget& b) {
  fail(b.line, "the template needs more than max_steps = " + std::to_string(b.limits.max_steps) +
                   " (expressions, loop iterations, list items and text processed)");
}

// Fails now when `n` more steps would not fit, before the work is done.
void ensure_steps(uint64_t n) {
  const Budget* b = t_budget;
  if (b != nullptr && n > b->limits.max_steps - b->steps) over_steps(*b);
}

void charge_steps(uint64_t n) {
  Budget* b = t_budget;
  if (b == nullptr) return;
  if (n > b->limits.max_steps - b->steps) over_steps(*b);
  b->steps += n;
}

void charge_bytes(uint64_t n) {
  Budget* b = t_budget;
  if (b == nullptr) return;
  if (n >= kBytesPerStep) {
    charge_steps(n / kBytesPerStep);
    n %= kBytesPerStep;
  }
  b->bytes += n;
  if (b->bytes >= kBytesPerStep) {
    b->bytes -= kBytesPerStep;
    charge_steps(1);
  }
}

// Refuses a string of `size` bytes before it is built.
void check_string_size(uint64_t size) {
  const Budget* b = t_budget;
  if (b != nullptr && size > b->limits.max_output_bytes) {
    fail(b->line, "a string of " + (size == UINT64_MAX ? std::string("over 2^64") : std::to_string(size)) +
                      " bytes would be longer than max_output_bytes = " + std::to_string(b->limits.max_output_bytes));
  }
}

// Values are big (a string, two pointers, ...): building n list items costs their size too.
void charge_items(uint64_t n);

// ---- values -----------------------------------------------------------------------------

// A string plus the byte ranges [begin, end) of it that came from the caller's data.
struct Str {
  std::string text;
  std::vector<std::pair<size_t, size_t>> data;

  Str() = default;
  Str(std::string t, std::vector<std::pair<size_t, size_t>> d = {}) : text(std::move(t)), data(std::move(d)) {}
  // Values are copied by value everywhere; copies are where text multiplies, so they pay.
  Str(const Str& o) : text((charge_bytes(o.text.size()), o.text)), data(o.data) {}
  Str& operator=(const Str& o) {
    if (this != &o) {
      charge_bytes(o.text.size());
      text = o.text;
      data = o.data;
    }
    return *this;
  }
  Str(Str&&) noexcept = default;
  Str& operator=(Str&&) noexcept = default;

  // `t` as data (when `is_data`) or template text.
  static Str marked(std::string t, bool is_data) {
    const size_t n = t.size();
    Str out(std::move(t));
    if (is_data && n > 0) out.data.emplace_back(0, n);
    return out;
  }

  void append(const Str& other) {
    check_string_size(text.size() + other.text.size());
    charge_bytes(other.text.size());
    const size_t shift = text.size();
    text += other.text;
    for (auto [b, e] : other.data) {
      if (!data.empty() && data.back().second == b + shift) {
        data.back().second = e + shift;
      } else {
        data.emplace_back(b + shift, e + shift);
      }
    }
  }
  void append_text(std::string_view t) {
    check_string_size(text.size() + t.size());
    charge_bytes(t.size());
    text += t;
  }
  // Bytes [b, e) with the data ranges that fall inside them.
  Str substr(size_t b, size_t e) const {
    charge_bytes(e - b);
    Str out{text.substr(b, e - b), {}};
    for (auto [rb, re] : data) {
      const size_t lo = std::max(rb, b), hi = std::min(re, e);
      if (lo < hi) out.data.emplace_back(lo - b, hi - b);
    }
    return out;
  }
  bool has_data() const { return !data.empty(); }
};

struct Value;
using List = std::vector<Value>;
struct Dict;

void check_value_depth(int depth);

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Object };
  Kind kind = Kind::Undefined;
  bool b = false;
  bool is_namespace = false;  // namespace(): the only object a template may mutate
  bool is_tuple = false;      // a List that Python would hold as a tuple (prints as one)
  int depth = 0;              // nesting of lists and dicts (0 for scalars, 1 for a namespace)
  int64_t i = 0;
  double f = 0.0;
  Str s;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  std::string name;  // Undefined: the name that was looked up, for errors

  static Value undefined(std::string n = {}) {
    Value v;
    v.name = std::move(n);
    return v;
  }
  static Value none() { return make(Kind::None); }
  static Value boolean(bool x) {
    Value v = make(Kind::Bool);
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v = make(Kind::Int);
    v.i = x;
    return v;
  }
  static Value real(double x) {
    Value v = make(Kind::Float);
    v.f = x;
    return v;
  }
  static Value string(Str x) {
    Value v = make(Kind::String);
    v.s = std::move(x);
    return v;
  }
  static Value string(std::string x) { return string(Str{std::move(x), {}}); }
  static Value of_list(List x) {
    Value v = make(Kind::Array);
    for (const Value& item : x) v.depth = std::max(v.depth, item.depth);
    check_value_depth(++v.depth);
    v.list = std::make_shared<List>(std::move(x));
    return v;
  }
  static Value of_dict(std::shared_ptr<Dict> d);

  bool is(Kind k) const { return kind == k; }
  bool number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool integral() const { return kind == Kind::Int || kind == Kind::Bool; }
  double as_double() const { return kind == Kind::Float ? f : static_cast<double>(kind == Kind::Bool ? b : i); }
  int64_t as_int() const { return kind == Kind::Bool ? (b ? 1 : 0) : i; }

 private:
  static Value make(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
};

// Insertion-ordered, as Python dicts.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool keys_data = false;  // the keys came from the caller's data (or from data strings)

  const Value* find(const std::string& key) const {
    for (size_t k = 0; k < items.size(); ++k) {
      if (items[k].first == key) {
        charge_steps(k / 16);  // lookups in big dicts scan
        return &items[k].second;
      }
    }
    charge_steps(items.size() / 16);
    return nullptr;
  }
  void set(const std::string& key, Value v) {
    for (auto& [k, old] : items) {
      if (k == key) {
        old = std::move(v);
        return;
      }
    }
    items.emplace_back(key, std::move(v));
  }
  // A key as a string value, marked as data when the keys are.
  Str key(const std::string& k) const {
    charge_bytes(k.size());
    return Str::marked(k, keys_data);
  }
};

Value Value::of_dict(std::shared_ptr<Dict> d) {
  Value v = make(Kind::Object);
  for (const auto& item : d->items) v.depth = std::max(v.depth, item.second.depth);
  check_value_depth(++v.depth);
  v.dict = std::move(d);
  return v;
}

void charge_items(uint64_t n) {
  charge_steps(n);
  charge_bytes(saturating_mul(n, sizeof(Value)));
}

// Nested lists and dicts are printed, compared and freed recursively.
void check_value_depth(int depth) {
  const Budget* b = t_budget;
  if (b != nullptr && depth > b->limits.max_depth) {
    fail(b->line, "lists and dicts nested deeper than max_depth = " + std::to_string(b->limits.max_depth));
  }
}

std::string kind_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "undefined";
    case Value::Kind::None: return "none";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "string";
    case Value::Kind::Array: return "list";
    case Value::Kind::Object: return v.is_namespace ? "namespace" : "dict";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return false;
    case Value::Kind::Bool: return v.b;
    case Value::Kind::Int: return v.i != 0;
    case Value::Kind::Float: return v.f != 0.0;
    case Value::Kind::String: return !v.s.text.empty();
    case Value::Kind::Array: return !v.list->empty();
    case Value::Kind::Object: return !v.dict->items.empty();
  }
  return false;
}

// repr(float) as Python writes it: the shortest round-trip digits, positional for decimal
// exponents -4 <= e < 16 and scientific (two exponent digits at least) otherwise.
std::string format_float(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  const std::string sci(buf, end);  // [-]d[.ddd]e(+|-)dd
  const size_t e_pos = sci.find('e');
  const bool negative = sci[0] == '-';
  std::string digits = sci.substr(negative ? 1 : 0, e_pos - (negative ? 1 : 0));
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  int exponent = 0;
  const size_t digits_at = e_pos + (sci[e_pos + 1] == '+' ? 2 : 1);
  std::from_chars(sci.data() + digits_at, sci.data() + sci.size(), exponent);
  const int point = exponent + 1;                          // digits before the decimal point
  const auto n = static_cast<int>(digits.size());
  std::string out = negative ? "-" : "";
  if (point > -4 && point <= 16) {
    if (point <= 0) {
      out += "0." + std::string(static_cast<size_t>(-point), '0') + digits;
    } else if (point >= n) {
      out += digits + std::string(static_cast<size_t>(point - n), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(point)) + "." + digits.substr(static_cast<size_t>(point));
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (n > 1) out += "." + digits.substr(1);
  const int magnitude = std::abs(exponent);
  return out + (exponent < 0 ? "e-" : "e+") + (magnitude < 10 ? "0" : "") + std::to_string(magnitude);
}

bool is_continuation(const std::string& t, size_t k) {
  return k < t.size() && (static_cast<unsigned char>(t[k]) & 0xC0) == 0x80;
}

// Appends `s` escaped by `escape` (plain text -> escaped text), keeping the data ranges: each
// range is widened to whole UTF-8 characters and escaped on its own, so the pieces that came
// from data stay data and the escaped text equals escaping `s` at once.
template <typename Escape>
void append_escaped(const Str& s, const Escape& escape, Str& out) {
  const std::string& t = s.text;
  size_t p = 0;
  for (auto [b, e] : s.data) {
    while (b > p && is_continuation(t, b)) --b;
    while (is_continuation(t, e)) ++e;
    b = std::max(b, p);
    if (e <= b) continue;
    if (b > p) out.append(Str(escape(t.substr(p, b - p))));
    out.append(Str::marked(escape(t.substr(b, e - b)), true));
    p = e;
  }
  if (p < t.size()) out.append(Str(escape(t.substr(p))));
}

void repr_into(const Value& v, Str& out);

// Python's repr of a str: single quotes unless the text has one and no double quote.
void quote_repr_into(const Str& s, Str& out) {
  const bool dq = s.text.find('\'') != std::string::npos && s.text.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  auto escape = [q](const std::string& text) {
    std::string r;
    for (char c : text) {
      if (c == q || c == '\\') {
        r += '\\';
        r += c;
      } else if (c == '\n') {
        r += "\\n";
      } else if (c == '\t') {
        r += "\\t";
      } else if (c == '\r') {
        r += "\\r";
      } else {
        r += c;
      }
    }
    return r;
  };
  out.append_text(std::string_view(&q, 1));
  append_escaped(s, escape, out);
  out.append_text(std::string_view(&q, 1));
}

// str(v) as Python prints it; strings keep their data ranges, and so do the strings inside a
// list or dict.
Str to_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::None: return {"None", {}};
    case Value::Kind::Bool: return {v.b ? "True" : "False", {}};
    case Value::Kind::Int: return {std::to_string(v.i), {}};
    case Value::Kind::Float: return {format_float(v.f), {}};
    case Value::Kind::String: return v.s;
    default: {
      Str out;
      repr_into(v, out);
      return out;
    }
  }
}

void repr_into(const Value& v, Str& out) {
  charge_steps(1);
  switch (v.kind) {
    case Value::Kind::String: quote_repr_into(v.s, out); return;
    case Value::Kind::Array: {
      out.append_text(v.is_tuple ? "(" : "[");
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out.append_text(", ");
        repr_into((*v.list)[k], out);
      }
      if (v.is_tuple && v.list->size() == 1) out.append_text(",");
      out.append_text(v.is_tuple ? ")" : "]");
      return;
    }
    case Value::Kind::Object: {
      if (v.is_namespace) {
        out.append_text("<Namespace>");
        return;
      }
      out.append_text("{");
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        if (!first) out.append_text(", ");
        first = false;
        quote_repr_into(v.dict->key(k), out);
        out.append_text(": ");
        repr_into(x, out);
      }
      out.append_text("}");
      return;
    }
    default: out.append(to_str(v)); return;
  }
}

std::string repr_text(const Value& v) {
  Str out;
  repr_into(v, out);
  return out.text;
}

// A JSON string literal of `s` as json.dumps(ensure_ascii=False) writes it; data stays data.
void json_string_into(const Str& s, Str& out) {
  // nlohmann escapes exactly the characters json.dumps(ensure_ascii=False) escapes, except
  // DEL, which neither escapes.
  auto escape = [](const std::string& text) {
    const std::string quoted = nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return quoted.substr(1, quoted.size() - 2);
  };
  out.append_text("\"");
  append_escaped(s, escape, out);
  out.append_text("\"");
}

// json.dumps(v, ensure_ascii=False, indent=indent) as transformers' tojson filter.
void dump_json(const Value& v, std::optional<int64_t> indent, int depth, Str& out, int line) {
  charge_steps(1);
  auto newline = [&](int d) {
    if (!indent) return;
    // json.dumps treats a negative indent as 0.
    const uint64_t n = saturating_mul(static_cast<uint64_t>(std::max<int64_t>(*indent, 0)), static_cast<uint64_t>(d));
    check_string_size(out.text.size() + n);
    out.append_text("\n" + std::string(n, ' '));
  };
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: out.append_text("null"); return;
    case Value::Kind::Bool: out.append_text(v.b ? "true" : "false"); return;
    case Value::Kind::Int: out.append_text(std::to_string(v.i)); return;
    case Value::Kind::Float:
      out.append_text(std::isfinite(v.f) ? format_float(v.f) : (std::isnan(v.f) ? "NaN" : (v.f > 0 ? "Infinity" : "-Infinity")));
      return;
    case Value::Kind::String: json_string_into(v.s, out); return;
    case Value::Kind::Array: {
      if (v.list->empty()) {
        out.append_text("[]");
        return;
      }
      out.append_text("[");
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out.append_text(indent ? "," : ", ");
        newline(depth + 1);
        dump_json((*v.list)[k], indent, depth + 1, out, line);
      }
      newline(depth);
      out.append_text("]");
      return;
    }
    case Value::Kind::Object: {
      if (v.is_namespace) fail(line, "tojson: a namespace is not JSON serializable");
      if (v.dict->items.empty()) {
        out.append_text("{}");
        return;
      }
      out.append_text("{");
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        if (!first) out.append_text(indent ? "," : ", ");
        first = false;
        newline(depth + 1);
        json_string_into(v.dict->key(k), out);
        out.append_text(": ");
        dump_json(x, indent, depth + 1, out, line);
      }
      newline(depth);
      out.append_text("}");
      return;
    }
  }
}

// The caller's context; `depth` counts the enclosing lists and dicts.
Value from_json(const nlohmann::ordered_json& j, bool data, int depth = 0) {
  charge_steps(1);
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      // Python would hold it exactly; the nearest float beats a wrapped negative number.
      return u > static_cast<uint64_t>(INT64_MAX) ? Value::real(static_cast<double>(u)) : Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::real(j.get<double>());
    case nlohmann::ordered_json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      charge_bytes(s.size());
      return Value::string(Str::marked(s, data));
    }
    case nlohmann::ordered_json::value_t::array: {
      check_value_depth(depth + 1);  // before recursing
      List l;
      l.reserve(j.size());
      for (const auto& x : j) l.push_back(from_json(x, data, depth + 1));
      return Value::of_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      check_value_depth(depth + 1);
      auto d = std::make_shared<Dict>();
      d->keys_data = data;
      d->items.reserve(j.size());
      for (const auto& [k, x] : j.items()) {
        charge_bytes(k.size());
        d->items.emplace_back(k, from_json(x, data, depth + 1));  // JSON object keys are unique
      }
      return Value::of_dict(std::move(d));
    }
    default: return Value::none();
  }
}

// ---- UTF-8 helpers (Python indexes and measures strings in code points) -----------------

// Start of the character after the one at `k` (the next byte that is not a continuation).
size_t next_char(const std::string& s, size_t k) {
  ++k;
  while (is_continuation(s, k)) ++k;
  return k;
}

size_t count_chars(const std::string& s) {
  charge_bytes(s.size());
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// Byte offsets of the characters, and of the end.
std::vector<size_t> char_starts(const std::string& s) {
  charge_bytes(s.size() * (1 + sizeof(size_t)));
  std::vector<size_t> starts;
  for (size_t k = 0; k < s.size(); k = next_char(s, k)) starts.push_back(k);
  starts.push_back(s.size());
  return starts;
}

uint32_t decode_at(const std::string& s, size_t k, size_t* len) {
  const auto c = static_cast<unsigned char>(s[k]);
  int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (k + static_cast<size_t>(n) > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int m = 1; m < n; ++m) cp = (cp << 6) | (static_cast<unsigned char>(s[k + m]) & 0x3F);
  *len = static_cast<size_t>(n);
  return cp;
}

// str.isspace() for the code points str.strip() removes.
bool py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// Scans from both ends only, so stripping a long string costs what it removes.
Str strip(const Str& s, bool left, bool right, const std::optional<std::string>& chars) {
  const std::string& t = s.text;
  auto strip_char = [&](size_t at) {
    size_t len = 0;
    const uint32_t cp = decode_at(t, at, &len);
    if (!chars) return py_space(cp);
    return chars->find(t.substr(at, len)) != std::string::npos;
  };
  size_t lo = 0, hi = t.size();
  if (left) {
    while (lo < hi && strip_char(lo)) lo = next_char(t, lo);
  }
  if (right) {
    while (hi > lo) {
      size_t b = hi - 1;
      while (b > lo && is_continuation(t, b)) --b;
      if (!strip_char(b)) break;
      hi = b;
    }
  }
  charge_bytes(lo + (t.size() - hi));
  return s.substr(lo, std::max(lo, hi));
}

Str map_ascii(const Str& s, int (*f)(int)) {
  Str out = s;
  for (char& c : out.text) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  }
  return out;
}

Str title_case(const Str& s, bool only_first) {
  Str out = s;
  bool start = true;
  for (char& c : out.text) {
    const auto u = static_cast<unsigned char>(c);
    const bool alpha = std::isalpha(u) != 0;
    if (u < 0x80) c = static_cast<char>(start && alpha ? std::toupper(u) : std::tolower(u));
    if (only_first) {
      start = false;
    } else {
      start = !alpha;
    }
  }
  return out;
}

// ---- numbers (locale-independent, and never a foreign exception) ------------------------

// A decimal float without sign or underscores ("1.5e3", "1e999"): out-of-range values become
// inf or 0.0, as Python's float() gives them.
double decimal_to_double(std::string_view t) {
  double x = 0.0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), x, std::chars_format::general);
  if (ec != std::errc::result_out_of_range) return x;
  // Overflow or underflow: the decimal exponent of the first significant digit decides.
  const size_t e_pos = t.find_first_of("eE");
  const std::string_view mantissa = t.substr(0, e_pos);
  int64_t exponent = 0;
  if (e_pos != std::string_view::npos) {
    std::string_view ex = t.substr(e_pos + 1);
    const bool negative = !ex.empty() && ex[0] == '-';
    if (!ex.empty() && (ex[0] == '-' || ex[0] == '+')) ex.remove_prefix(1);
    for (char c : ex) exponent = std::min<int64_t>(exponent * 10 + (c - '0'), 1'000'000'000);
    if (negative) exponent = -exponent;
  }
  const size_t point = std::min(mantissa.find('.'), mantissa.size());
  const size_t first = mantissa.find_first_of("123456789");
  if (first == std::string_view::npos) return 0.0;
  const int64_t magnitude = exponent + static_cast<int64_t>(point) - static_cast<int64_t>(first) - (first > point ? 1 : 0);
  return magnitude > 0 ? HUGE_VAL : 0.0;
}

// Digits with single underscores between them, as Python literals and int()/float() allow.
bool digits_with_underscores(std::string_view t) {
  if (t.empty() || t.front() == '_' || t.back() == '_') return false;
  for (size_t k = 0; k < t.size(); ++k) {
    if (t[k] == '_' ? t[k + 1] == '_' : !std::isdigit(static_cast<unsigned char>(t[k]))) return false;
  }
  return true;
}

std::string without_underscores(std::string_view t) {
  std::string out(t);
  out.erase(std::remove(out.begin(), out.end(), '_'), out.end());
  return out;
}

std::string_view trim_ascii_space(std::string_view t) {
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  return t;
}

bool equals_lower(std::string_view t, std::string_view lower) {
  return t.size() == lower.size() &&
         std::equal(t.begin(), t.end(), lower.begin(), [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
}

// Python's float(text); nullopt where it raises ValueError.
std::optional<double> py_float(std::string_view t) {
  t = trim_ascii_space(t);
  double sign = 1.0;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    sign = t[0] == '-' ? -1.0 : 1.0;
    t.remove_prefix(1);
  }
  if (equals_lower(t, "inf") || equals_lower(t, "infinity")) return sign * HUGE_VAL;
  if (equals_lower(t, "nan")) return std::nan("");
  const size_t e_pos = t.find_first_of("eE");
  std::string_view mantissa = t.substr(0, e_pos);
  const size_t point = mantissa.find('.');
  const std::string_view int_part = mantissa.substr(0, point);
  const std::string_view frac_part = point == std::string_view::npos ? std::string_view() : mantissa.substr(point + 1);
  if (int_part.empty() && frac_part.empty()) return std::nullopt;
  if ((!int_part.empty() && !digits_with_underscores(int_part)) || (!frac_part.empty() && !digits_with_underscores(frac_part))) {
    return std::nullopt;
  }
  if (e_pos != std::string_view::npos) {
    std::string_view ex = t.substr(e_pos + 1);
    if (!ex.empty() && (ex[0] == '+' || ex[0] == '-')) ex.remove_prefix(1);
    if (!digits_with_underscores(ex)) return std::nullopt;
  }
  return sign * decimal_to_double(without_underscores(t));
}

enum class IntParse { Ok, Invalid, Overflow };

// Python's int(text) (base 10) within int64.
IntParse py_int(std::string_view t, int64_t* out) {
  t = trim_ascii_space(t);
  bool negative = false;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    negative = t[0] == '-';
    t.remove_prefix(1);
  }
  if (!digits_with_underscores(t)) return IntParse::Invalid;
  const std::string digits = (negative ? "-" : "") + without_underscores(t);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *out);
  return ec == std::errc() ? IntParse::Ok : IntParse::Overflow;
}

// ---- lexer ------------------------------------------------------------------------------

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End };
struct Token {
  Tok type;
  std::string text;
  int line;
  int64_t i = 0;
  double f = 0.0;
};

class Lexer {
 public:
  explicit Lexer(const std::string& src) : src_(src) {}

  std::vector<Token> run() {
    size_t pos = 0;
    bool strip_next = false;  // the previous tag ended with "-"
    bool trim_newline = false;  // the previous tag was a block or comment (trim_blocks)
    while (pos <= src_.size()) {
      size_t tag = find_tag(pos);
      size_t text_begin = pos;
      if (strip_next) {
        while (text_begin < tag && std::isspace(static_cast<unsigned char>(src_[text_begin]))) ++text_begin;
      } else if (trim_newline) {
        if (src_.compare(text_begin, 2, "\r\n") == 0 && text_begin + 2 <= tag) {
          text_begin += 2;
        } else if (text_begin < tag && src_[text_begin] == '\n') {
          ++text_begin;
        }
      }
      size_t text_end = tag;
      if (tag < src_.size()) {
        const char kind = src_[tag + 1];
        const char mod = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
        if (mod == '-') {
          while (text_end > text_begin && std::isspace(static_cast<unsigned char>(src_[text_end - 1]))) --text_end;
        } else if (kind != '{' && mod != '+') {
          // lstrip_blocks: spaces and tabs from the start of the line up to a block or comment.
          size_t q = text_end;
          while (q > 0 && (src_[q - 1] == ' ' || src_[q - 1] == '\t')) --q;
          if (q == 0 || src_[q - 1] == '\n') text_end = std::max(q, text_begin);
        }
      }
      if (text_end > text_begin) emit(Tok::Text, src_.substr(text_begin, text_end - text_begin), line_at(text_begin));
      if (tag >= src_.size()) break;
      pos = lex_tag(tag, &strip_next, &trim_newline);
    }
    tokens_.push_back({Tok::End, "", line_at(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    size_t p = from;
    while ((p = src_.find('{', p)) != std::string::npos) {
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) return p;
      ++p;
    }
    return src_.size();
  }

  int line_at(size_t pos) {
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_++] == '\n') ++line_;
    }
    return line_;
  }

  void emit(Tok t, std::string text, int line) { tokens_.push_back({t, std::move(text), line}); }

  // Lexes the tag at `tag`; returns the position after it.
  size_t lex_tag(size_t tag, bool* strip_next, bool* trim_newline) {
    const char kind = src_[tag + 1];
    const int line = line_at(tag);
    size_t p = tag + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    if (kind == '#') {
      const size_t end = src_.find("#}", p);
      if (end == std::string::npos) fail(line, "comment {# is never closed with #}");
      *strip_next = end > p && src_[end - 1] == '-';
      *trim_newline = true;
      return end + 2;
    }
    const std::string close = kind == '{' ? "}}" : "%}";
    emit(kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", line);
    while (true) {
      while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
      if (p >= src_.size()) fail(line, std::string(kind == '{' ? "{{" : "{%") + " is never closed with " + close);
      if ((src_[p] == '-' || src_[p] == '+') && src_.compare(p + 1, 2, close) == 0) {
        *strip_next = src_[p] == '-';
        *trim_newline = kind == '%' && src_[p] != '+';
        emit(kind == '{' ? Tok::VarEnd : Tok::BlockEnd, "", line_at(p));
        return p + 3;
      }
      if (src_.compare(p, 2, close) == 0) {
        *strip_next = false;
        *trim_newline = kind == '%';
        emit(kind == '{' ? Tok::VarEnd : Tok::BlockEnd, "", line_at(p));
        return p + 2;
      }
      p = lex_expression_token(p);
    }
  }

  size_t lex_expression_token(size_t p) {
    const int line = line_at(p);
    const char c = src_[p];
    if (c == '\'' || c == '"') return lex_string(p);
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = p;
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      bool is_float = false;
      if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        is_float = true;
        ++e;
        while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      }
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t x = e + 1;
        if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
        if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
          is_float = true;
          e = x;
          while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        }
      }
      std::string text = without_underscores(std::string_view(src_).substr(p, e - p));
      Token t{is_float ? Tok::Float : Tok::Int, text, line};
      if (is_float) {
        t.f = decimal_to_double(text);  // 1e999 is inf, as in Python
      } else {
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), t.i);
        if (ec != std::errc()) fail(line, "integer literal out of range: " + text);
      }
      tokens_.push_back(t);
      return e;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      emit(Tok::Name, src_.substr(p, e - p), line);
      return e;
    }
    static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                       ">",  "=",  "(",  ")",  "[",  "]",  "{", "}", ".", ",", ":", "|"};
    for (const char* op : kOps) {
      const size_t n = std::char_traits<char>::length(op);
      if (src_.compare(p, n, op) == 0) {
        emit(Tok::Op, op, line);
        return p + n;
      }
    }
    fail(line, std::string("unexpected character '") + c + "'");
  }

  // Python string literal escapes, as Jinja decodes them (unicode-escape).
  size_t lex_string(size_t p) {
    const int line = line_at(p);
    const char q = src_[p];
    std::string out;
    size_t k = p + 1;
    auto put_cp = [&](uint32_t cp) {
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    };
    while (true) {
      if (k >= src_.size()) fail(line, "string literal is never closed");
      const char c = src_[k];
      if (c == q) break;
      if (c != '\\' || k + 1 >= src_.size()) {
        out += c;
        ++k;
        continue;
      }
      const char e = src_[k + 1];
      k += 2;
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (k + n > src_.size()) fail(line, std::string("truncated \\") + e + " escape");
          uint32_t cp = 0;
          for (size_t m = 0; m < n; ++m) {
            const char h = src_[k + m];
            if (!std::isxdigit(static_cast<unsigned char>(h))) fail(line, std::string("bad \\") + e + " escape");
            cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          k += n;
          put_cp(cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int m = 0; m < 2 && k < src_.size() && src_[k] >= '0' && src_[k] <= '7'; ++m) cp = cp * 8 + static_cast<uint32_t>(src_[k++] - '0');
            put_cp(cp);
          } else {
            out += '\\';  // unknown escapes stay as written
            out += e;
          }
      }
    }
    emit(Tok::String, out, line);
    return k + 1;
  }

  const std::string& src_;
  std::vector<Token> tokens_;
  size_t line_pos_ = 0;
  int line_ = 1;
};

// ---- syntax tree ------------------------------------------------------------------------

struct Scope;

// One step of the budget, at `line`.
void step(int line) {
  if (Budget* b = t_budget) {
    b->line = line;
    charge_steps(1);
  }
}

struct Expr {
  int line = 0;
  int height = 1;  // of the subtree: evaluating and freeing it recurse this deep
  virtual ~Expr() = default;
  Value eval(Scope& s) const {
    step(line);
    return compute(s);
  }

 private:
  virtual Value compute(Scope& s) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

}  // namespace

enum class Flow { Normal, Break, Continue };

struct Node {
  int line = 0;
  virtual ~Node() = default;
  Flow render(Scope& s, Str& out) const {
    step(line);
    return run(s, out);
  }

 private:
  virtual Flow run(Scope& s, Str& out) const = 0;
};

namespace {

using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Scope {
  std::vector<std::map<std::string, Value>> frames;
  const std::string* template_name = nullptr;
  // Every namespace() made, oldest first. A namespace may hold itself or a chain of older
  // ones; emptying them all at the end frees those without a cycle leaking or a long chain
  // recursing through destructors.
  std::vector<std::shared_ptr<Dict>> namespaces;

  Scope() = default;
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  ~Scope() {
    for (const auto& d : namespaces) d->items.clear();
  }

  const Value* lookup(const std::string& name) const {
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return &f->second;
    }
    return nullptr;
  }
  void set(const std::string& name, Value v) { frames.back()[name] = std::move(v); }
};

Flow render_body(const Body& body, Scope& s, Str& out) {
  for (const auto& n : body) {
    const Flow f = n->render(s, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

// Appends to the rendered text (or a {% set %} block), within max_output_bytes.
void emit(Str& out, const Str& piece) {
  const Budget* b = t_budget;
  if (b != nullptr && out.text.size() + piece.text.size() > b->limits.max_output_bytes) {
    fail(b->line, "the rendered text would exceed max_output_bytes = " + std::to_string(b->limits.max_output_bytes));
  }
  out.append(piece);
}

// Calls carry positional and keyword arguments.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;

  const Value* get(size_t index, const std::string& key) const {
    if (index < pos.size()) return &pos[index];
    return keyword(key);
  }
  const Value* keyword(const std::string& key) const {
    for (const auto& [k, v] : kw) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

struct ArgExprs {
  std::vector<ExprPtr> pos;
  std::vector<std::pair<std::string, ExprPtr>> kw;
  Args eval(Scope& s) const {
    Args a;
    for (const auto& e : pos) a.pos.push_back(e->eval(s));
    for (const auto& [k, e] : kw) a.kw.emplace_back(k, e->eval(s));
    return a;
  }
};

const Str& want_string(const Value& v, int line, const std::string& what) {
  if (!v.is(Value::Kind::String)) fail(line, what + ": expected a string, found " + kind_name(v));
  return v.s;
}

int64_t want_int(const Value& v, int line, const std::string& what) {
  if (v.is(Value::Kind::Int)) return v.i;
  if (v.is(Value::Kind::Bool)) return v.b ? 1 : 0;
  fail(line, what + ": expected an integer, found " + kind_name(v));
}

bool equal(const Value& a, const Value& b) {
  charge_steps(1);
  if (a.integral() && b.integral()) return a.as_int() == b.as_int();
  if (a.number() && b.number()) return a.as_double() == b.as_double();
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::String:
      charge_bytes(std::min(a.s.text.size(), b.s.text.size()));
      return a.s.text == b.s.text;
    case Value::Kind::Array:
      if (a.list == b.list) return true;
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    case Value::Kind::Object:
      // Jinja's Namespace has no __eq__: identity, which also ends self-reference.
      if (a.dict == b.dict || a.is_namespace || b.is_namespace) return a.dict == b.dict;
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* o = b.dict->find(k);
        if (o == nullptr || !equal(v, *o)) return false;
      }
      return true;
    default: return false;
  }
}

// a < b for numbers, strings and lists, as Python orders them.
bool less(const Value& a, const Value& b, int line) {
  charge_steps(1);
  if (a.integral() && b.integral()) return a.as_int() < b.as_int();
  if (a.number() && b.number()) return a.as_double() < b.as_double();
  if (a.is(Value::Kind::String) && b.is(Value::Kind::String)) {
    charge_bytes(std::min(a.s.text.size(), b.s.text.size()));
    return a.s.text < b.s.text;
  }
  if (a.is(Value::Kind::Array) && b.is(Value::Kind::Array)) {
    const size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (less((*a.list)[k], (*b.list)[k], line)) return true;
      if (less((*b.list)[k], (*a.list)[k], line)) return false;
    }
    return a.list->size() < b.list->size();
  }
  fail(line, "cannot compare " + kind_name(a) + " with " + kind_name(b));
}

// Items a for loop or a filter iterates: list items, dict keys, string characters.
List iterate(const Value& v, int line) {
  switch (v.kind) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::Array:
      charge_items(v.list->size());
      return *v.list;
    case Value::Kind::Object: {
      if (v.is_namespace) fail(line, "a namespace is not iterable");
      charge_items(v.dict->items.size());
      List keys;
      keys.reserve(v.dict->items.size());
      for (const auto& [k, x] : v.dict->items) keys.push_back(Value::string(v.dict->key(k)));
      return keys;
    }
    case Value::Kind::String: {
      const std::string& t = v.s.text;
      charge_items(count_chars(t));
      List chars;
      for (size_t k = 0; k < t.size();) {
        const size_t e = next_char(t, k);
        chars.push_back(Value::string(v.s.substr(k, e)));
        k = e;
      }
      return chars;
    }
    default: fail(line, kind_name(v) + " is not iterable");
  }
}

// Substring search in linear time (std::string::find is quadratic on "aaa...ab" inputs).
class Finder {
 public:
  explicit Finder(std::string needle) : needle_(std::move(needle)) {
    if (needle_.size() <= kShort) return;
    charge_bytes(needle_.size() * (1 + sizeof(size_t)));
    prefix_.assign(needle_.size(), 0);  // Knuth-Morris-Pratt failure function
    for (size_t i = 1, k = 0; i < needle_.size(); ++i) {
      while (k > 0 && needle_[i] != needle_[k]) k = prefix_[k - 1];
      if (needle_[i] == needle_[k]) ++k;
      prefix_[i] = k;
    }
  }
  // The first match at or after `from`, or npos.
  size_t find(const std::string& hay, size_t from) const {
    if (from > hay.size()) return std::string::npos;
    if (needle_.size() <= kShort) {  // at most kShort comparisons per byte
      const size_t f = hay.find(needle_, from);
      charge_bytes(saturating_mul((f == std::string::npos ? hay.size() : f) - from, 1 + needle_.size() / 4));
      return f;
    }
    size_t k = 0;
    for (size_t i = from; i < hay.size(); ++i) {
      while (k > 0 && hay[i] != needle_[k]) k = prefix_[k - 1];
      if (hay[i] == needle_[k]) ++k;
      if (k == needle_.size()) {
        charge_bytes(2 * (i + 1 - from));
        return i + 1 - k;
      }
    }
    charge_bytes(2 * (hay.size() - from));
    return std::string::npos;
  }
  const std::string& needle() const { return needle_; }

 private:
  static constexpr size_t kShort = 32;
  std::string needle_;
  std::vector<size_t> prefix_;
};

bool contains(const Value& container, const Value& item, int line) {
  switch (container.kind) {
    case Value::Kind::String:
      return Finder(want_string(item, line, "'in' on a string").text).find(container.s.text, 0) != std::string::npos;
    case Value::Kind::Array:
      return std::any_of(container.list->begin(), container.list->end(), [&](const Value& x) { return equal(x, item); });
    case Value::Kind::Object:
      return item.is(Value::Kind::String) && container.dict->find(item.s.text) != nullptr;
    case Value::Kind::Undefined: fail(line, "'in' on an undefined value" + (container.name.empty() ? "" : " ('" + container.name + "')"));
    default: fail(line, "'in' needs a string, list or dict on the right, found " + kind_name(container));
  }
}

// obj.name / obj[name] for a string key: dict lookup (Jinja's getattr falls back to getitem).
Value get_item(const Value& obj, const Value& key, int line) {
  if (obj.is(Value::Kind::Undefined)) {
    fail(line, (obj.name.empty() ? std::string("a value") : "'" + obj.name + "'") + " is undefined, so it has no item " +
                   repr_text(key));
  }
  if (obj.is(Value::Kind::Object)) {
    if (!key.is(Value::Kind::String)) return Value::undefined();
    const Value* v = obj.dict->find(key.s.text);
    return v != nullptr ? *v : Value::undefined(key.s.text);
  }
  if (!key.is(Value::Kind::Int) || !(obj.is(Value::Kind::Array) || obj.is(Value::Kind::String))) return Value::undefined();
  if (obj.is(Value::Kind::Array)) {
    const auto n = static_cast<int64_t>(obj.list->size());
    const int64_t k = key.i < 0 ? key.i + n : key.i;  // no overflow: n >= 0
    if (k < 0 || k >= n) return Value::undefined();
    return (*obj.list)[static_cast<size_t>(k)];
  }
  const std::string& t = obj.s.text;
  const auto n = static_cast<int64_t>(count_chars(t));
  int64_t k = key.i < 0 ? key.i + n : key.i;
  if (k < 0 || k >= n) return Value::undefined();
  size_t b = 0;
  while (k-- > 0) b = next_char(t, b);
  return Value::string(obj.s.substr(b, next_char(t, b)));
}

// ---- tests and filters ------------------------------------------------------------------

bool run_test(const std::string& name, const Value& v, const Args& args, int line) {
  auto arg = [&](size_t k) -> const Value& {
    if (k >= args.pos.size()) fail(line, "test '" + name + "' needs an argument");
    return args.pos[k];
  };
  if (name == "defined") return !v.is(Value::Kind::Undefined);
  if (name == "undefined") return v.is(Value::Kind::Undefined);
  if (name == "none") return v.is(Value::Kind::None);
  if (name == "string") return v.is(Value::Kind::String);
  if (name == "number") return v.is(Value::Kind::Int) || v.is(Value::Kind::Float);
  if (name == "integer") return v.is(Value::Kind::Int);
  if (name == "float") return v.is(Value::Kind::Float);
  if (name == "boolean") return v.is(Value::Kind::Bool);
  if (name == "true") return v.is(Value::Kind::Bool) && v.b;
  if (name == "false") return v.is(Value::Kind::Bool) && !v.b;
  if (name == "mapping") return v.is(Value::Kind::Object) && !v.is_namespace;
  if (name == "sequence") return v.is(Value::Kind::Array) || v.is(Value::Kind::String) || (v.is(Value::Kind::Object) && !v.is_namespace);
  if (name == "iterable") return v.is(Value::Kind::Array) || v.is(Value::Kind::String) || (v.is(Value::Kind::Object) && !v.is_namespace);
  if (name == "callable") return false;
  if (name == "equalto" || name == "eq" || name == "==" || name == "sameas") return equal(v, arg(0));
  if (name == "ne" || name == "!=") return !equal(v, arg(0));
  if (name == "lt" || name == "lessthan" || name == "<") return less(v, arg(0), line);
  if (name == "gt" || name == "greaterthan" || name == ">") return less(arg(0), v, line);
  if (name == "le" || name == "<=") return !less(arg(0), v, line);
  if (name == "ge" || name == ">=") return !less(v, arg(0), line);
  if (name == "in") return contains(arg(0), v, line);
  if (name == "odd") return want_int(v, line, "test 'odd'") % 2 != 0;
  if (name == "even") return want_int(v, line, "test 'even'") % 2 == 0;
  if (name == "divisibleby") {
    const int64_t a = want_int(v, line, "test 'divisibleby'"), b = want_int(arg(0), line, "test 'divisibleby'");
    if (b == 0) fail(line, "test 'divisibleby': integer modulo by zero");
    return b == -1 || a % b == 0;  // INT64_MIN % -1 traps
  }
  if (name == "lower") {
    const std::string& t = want_string(v, line, "test 'lower'").text;
    charge_bytes(t.size());
    return std::none_of(t.begin(), t.end(), [](char c) { return std::isupper(static_cast<unsigned char>(c)); });
  }
  if (name == "upper") {
    const std::string& t = want_string(v, line, "test 'upper'").text;
    charge_bytes(t.size());
    return std::none_of(t.begin(), t.end(), [](char c) { return std::islower(static_cast<unsigned char>(c)); });
  }
  fail(line, "unsupported test '" + name + "'");
}

Value apply_filter(const std::string& name, const Value& v, const Args& args, int line);

Value attribute_of(const Value& item, const std::string& path, int line) {
  Value cur = item;
  size_t b = 0;
  while (true) {
    const size_t dot = path.find('.', b);
    const std::string part = path.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
    if (cur.is(Value::Kind::Undefined)) return cur;
    charge_steps(1);
    Value key = Value::string(part);
    int64_t index = 0;
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      // Past int64 no list is that long: Python's IndexError, an undefined value.
      if (std::from_chars(part.data(), part.data() + part.size(), index).ec != std::errc()) return Value::undefined(part);
      key = Value::integer(index);
    }
    cur = get_item(cur, key, line);
    if (dot == std::string::npos) return cur;
    b = dot + 1;
  }
}

// selectattr / rejectattr / select / reject.
Value select(const Value& v, const Args& args, bool by_attr, bool keep, int line) {
  size_t k = 0;
  std::string attr;
  if (by_attr) {
    if (args.pos.empty()) fail(line, "selectattr/rejectattr need an attribute name");
    attr = want_string(args.pos[0], line, "selectattr attribute").text;
    k = 1;
  }
  Args test_args;
  std::string test;
  if (k < args.pos.size()) {
    test = want_string(args.pos[k], line, "select test name").text;
    test_args.pos.assign(args.pos.begin() + static_cast<long>(k) + 1, args.pos.end());
  }
  List out;
  for (const Value& item : iterate(v, line)) {
    const Value subject = by_attr ? attribute_of(item, attr, line) : item;
    const bool pass = test.empty() ? truthy(subject) : run_test(test, subject, test_args, line);
    if (pass == keep) out.push_back(item);
  }
  return Value::of_list(std::move(out));
}

// Filters call filters (map('map', ...)) as deep as the arguments go: the one recursion at run
// time that the parser's depth checks do not bound.
class CallDepth {
 public:
  explicit CallDepth(int line) : b_(t_budget) {
    if (b_ == nullptr) return;
    if (b_->calls >= b_->limits.max_depth) {
      fail(line, "filter calls nested deeper than max_depth = " + std::to_string(b_->limits.max_depth));
    }
    ++b_->calls;
  }
  ~CallDepth() {
    if (b_ != nullptr) --b_->calls;
  }
  CallDepth(const CallDepth&) = delete;
  CallDepth& operator=(const CallDepth&) = delete;

 private:
  Budget* b_;
};

// int(x) for a float, within int64 (Python's would be a big int).
int64_t float_to_int(double x, int line, const std::string& what) {
  if (std::isinf(x)) fail(line, what + ": cannot convert float infinity to integer");
  // 2^63 is exact as a double; [-2^63, 2^63) converts without overflow.
  if (!(x >= -9223372036854775808.0 && x < 9223372036854775808.0)) {
    fail(line, what + ": integer overflow: " + format_float(x) + " is out of the renderer's 64-bit range");
  }
  return static_cast<int64_t>(x);
}

Value apply_filter(const std::string& name, const Value& v, const Args& args, int line) {
  const CallDepth depth(line);
  const std::string what = "filter '" + name + "'";
  if (name == "length" || name == "count") {
    if (v.is(Value::Kind::String)) return Value::integer(static_cast<int64_t>(count_chars(v.s.text)));
    if (v.is(Value::Kind::Array)) return Value::integer(static_cast<int64_t>(v.list->size()));
    if (v.is(Value::Kind::Object)) return Value::integer(static_cast<int64_t>(v.dict->items.size()));
    if (v.is(Value::Kind::Undefined)) return Value::integer(0);
    fail(line, what + ": " + kind_name(v) + " has no length");
  }
  if (name == "trim") {
    std::optional<std::string> chars;
    if (const Value* c = args.get(0, "chars"); c != nullptr && !c->is(Value::Kind::None)) chars = want_string(*c, line, what).text;
    return Value::string(strip(to_str(v), true, true, chars));
  }
  if (name == "upper") return Value::string(map_ascii(to_str(v), [](int c) { return std::toupper(c); }));
  if (name == "lower") return Value::string(map_ascii(to_str(v), [](int c) { return std::tolower(c); }));
  if (name == "capitalize") return Value::string(title_case(to_str(v), true));
  if (name == "title") return Value::string(title_case(to_str(v), false));
  if (name == "string") return Value::string(to_str(v));
  if (name == "safe" || name == "e" || name == "escape") {
    if (name != "safe") fail(line, "unsupported filter '" + name + "' (chat templates render without autoescape)");
    return v;
  }
  if (name == "first" || name == "last") {
    const List items = iterate(v, line);
    if (items.empty()) return Value::undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    Str sep;
    if (const Value* s = args.get(0, "d"); s != nullptr) sep = to_str(*s);
    std::optional<std::string> attr;
    if (const Value* a = args.get(1, "attribute"); a != nullptr) attr = want_string(*a, line, what).text;
    Str out;
    bool first = true;
    for (const Value& item : iterate(v, line)) {
      if (!first) out.append(sep);
      first = false;
      out.append(to_str(attr ? attribute_of(item, *attr, line) : item));
    }
    return Value::string(out);
  }
  if (name == "default" || name == "d") {
    const Value* fallback = args.get(0, "default_value");
    const Value* boolean = args.get(1, "boolean");
    const bool use = v.is(Value::Kind::Undefined) || (boolean != nullptr && truthy(*boolean) && !truthy(v));
    return use ? (fallback != nullptr ? *fallback : Value::string(std::string())) : v;
  }
  if (name == "list") return Value::of_list(iterate(v, line));
  if (name == "items") {
    if (!v.is(Value::Kind::Object)) fail(line, what + ": expected a dict, found " + kind_name(v));
    List out;
    for (const auto& [k, x] : v.dict->items) {
      Value pair = Value::of_list({Value::string(v.dict->key(k)), x});
      pair.is_tuple = true;
      out.push_back(std::move(pair));
    }
    return Value::of_list(std::move(out));
  }
  if (name == "int") {
    // Jinja's do_int: int(value), else int(float(value)), else the default; int(inf) raises.
    const Value* d = args.get(0, "default");
    const Value fallback = d != nullptr ? *d : Value::integer(0);
    if (v.integral()) return Value::integer(v.as_int());
    if (v.is(Value::Kind::Float)) return std::isnan(v.f) ? fallback : Value::integer(float_to_int(v.f, line, what));
    if (v.is(Value::Kind::String)) {
      charge_bytes(2 * v.s.text.size());
      int64_t x = 0;
      const IntParse parsed = py_int(v.s.text, &x);
      if (parsed == IntParse::Ok) return Value::integer(x);
      if (parsed == IntParse::Overflow) fail(line, what + ": integer overflow: the renderer's integers are 64-bit");
      const std::optional<double> f = py_float(v.s.text);
      if (f && !std::isnan(*f)) return Value::integer(float_to_int(*f, line, what));
    }
    return fallback;
  }
  if (name == "float") {
    if (v.number()) return Value::real(v.as_double());
    if (v.is(Value::Kind::String)) {
      charge_bytes(v.s.text.size());
      if (const std::optional<double> x = py_float(v.s.text)) return Value::real(*x);
    }
    const Value* d = args.get(0, "default");
    return d != nullptr ? *d : Value::real(0.0);
  }
  if (name == "abs") {
    if (v.is(Value::Kind::Int)) {
      if (v.i == INT64_MIN) fail(line, what + ": integer overflow: the renderer's integers are 64-bit");
      return Value::integer(v.i < 0 ? -v.i : v.i);
    }
    if (v.is(Value::Kind::Float)) return Value::real(std::fabs(v.f));
    fail(line, what + ": expected a number, found " + kind_name(v));
  }
  if (name == "tojson") {
    std::optional<int64_t> indent;
    if (const Value* i = args.get(0, "indent"); i != nullptr && !i->is(Value::Kind::None)) indent = want_int(*i, line, what);
    Str out;
    dump_json(v, indent, 0, out, line);
    return Value::string(std::move(out));
  }
  if (name == "selectattr") return select(v, args, true, true, line);
  if (name == "rejectattr") return select(v, args, true, false, line);
  if (name == "select") return select(v, args, false, true, line);
  if (name == "reject") return select(v, args, false, false, line);
  if (name == "map") {
    List out;
    const Value* attr = args.keyword("attribute");
    for (const Value& item : iterate(v, line)) {
      if (attr != nullptr) {
        Value x = attribute_of(item, want_string(*attr, line, what).text, line);
        if (x.is(Value::Kind::Undefined)) {
          if (const Value* d = args.keyword("default"); d != nullptr) x = *d;
        }
        out.push_back(x);
      } else {
        if (args.pos.empty()) fail(line, what + " needs a filter name or attribute=");
        charge_items(args.pos.size());
        Args rest;
        rest.pos.assign(args.pos.begin() + 1, args.pos.end());
        out.push_back(apply_filter(want_string(args.pos[0], line, what).text, item, rest, line));
      }
    }
    return Value::of_list(std::move(out));
  }
  if (name == "replace") {
    const Str& s = want_string(v, line, what);
    if (args.pos.size() < 2) fail(line, what + " needs (old, new)");
    const Finder from(to_str(args.pos[0]).text);
    const Str to = to_str(args.pos[1]);
    int64_t count = args.pos.size() > 2 ? want_int(args.pos[2], line, what) : -1;
    if (from.needle().empty()) return v;  // Python inserts `to` between characters; no chat template does that
    // Kept pieces keep their marking and the replacement has the marking of `to`.
    Str out;
    size_t p = 0, f;
    while (count != 0 && (f = from.find(s.text, p)) != std::string::npos) {
      out.append(s.substr(p, f));
      out.append(to);
      p = f + from.needle().size();
      --count;
    }
    out.append(s.substr(p, s.text.size()));
    return Value::string(std::move(out));
  }
  if (name == "reverse") {
    if (v.is(Value::Kind::String)) {
      List chars = iterate(v, line);
      Str out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out.append(it->s);
      return Value::string(out);
    }
    List items = iterate(v, line);
    std::reverse(items.begin(), items.end());
    return Value::of_list(std::move(items));
  }
  if (name == "sort") {
    List items = iterate(v, line);
    const Value* rev = args.get(0, "reverse");
    const Value* attr = args.get(2, "attribute");
    auto key = [&](const Value& x) { return attr != nullptr ? attribute_of(x, to_str(*attr).text, line) : x; };
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) { return less(key(a), key(b), line); });
    if (rev != nullptr && truthy(*rev)) std::reverse(items.begin(), items.end());
    return Value::of_list(std::move(items));
  }
  if (name == "unique") {
    List out;
    for (const Value& x : iterate(v, line)) {
      if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return equal(x, y); })) out.push_back(x);
    }
    return Value::of_list(std::move(out));
  }
  fail(line, "unsupported filter '" + name + "'");
}

// ---- method calls (str and dict methods chat templates use) ------------------------------

Value call_method(const Value& obj, const std::string& name, const Args& args, int line) {
  const std::string what = kind_name(obj) + "." + name + "()";
  if (obj.is(Value::Kind::String)) {
    const Str& s = obj.s;
    auto chars_arg = [&]() -> std::optional<std::string> {
      if (args.pos.empty() || args.pos[0].is(Value::Kind::None)) return std::nullopt;
      return want_string(args.pos[0], line, what).text;
    };
    if (name == "strip") return Value::string(strip(s, true, true, chars_arg()));
    if (name == "lstrip") return Value::string(strip(s, true, false, chars_arg()));
    if (name == "rstrip") return Value::string(strip(s, false, true, chars_arg()));
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") return apply_filter(name, obj, {}, line);
    if (name == "startswith" || name == "endswith") {
      if (args.pos.empty()) fail(line, what + " needs an argument");
      List options = args.pos[0].is(Value::Kind::Array) ? *args.pos[0].list : List{args.pos[0]};
      for (const Value& o : options) {
        const std::string& x = want_string(o, line, what).text;
        charge_bytes(x.size());
        const bool hit = name == "startswith" ? s.text.rfind(x, 0) == 0
                                              : s.text.size() >= x.size() && s.text.compare(s.text.size() - x.size(), x.size(), x) == 0;
        if (hit) return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "split") {
      const Value* sep = args.get(0, "sep");
      int64_t max_split = -1;
      if (const Value* m = args.get(1, "maxsplit"); m != nullptr) max_split = want_int(*m, line, what);
      List out;
      if (sep == nullptr || sep->is(Value::Kind::None)) {
        size_t p = 0;
        const std::string& t = s.text;
        charge_bytes(t.size());
        while (true) {
          while (p < t.size() && std::isspace(static_cast<unsigned char>(t[p]))) ++p;
          if (p >= t.size()) break;
          size_t e = p;
          if (max_split == 0) {
            e = t.size();
            while (e > p && std::isspace(static_cast<unsigned char>(t[e - 1]))) --e;
          } else {
            while (e < t.size() && !std::isspace(static_cast<unsigned char>(t[e]))) ++e;
          }
          charge_items(1);
          out.push_back(Value::string(s.substr(p, e)));
          if (max_split > 0) --max_split;
          p = e;
          if (max_split == 0 && p < t.size()) max_split = 0;
        }
      } else {
        const Finder d(want_string(*sep, line, what).text);
        if (d.needle().empty()) fail(line, what + ": empty separator");
        size_t p = 0, f;
        while (max_split != 0 && (f = d.find(s.text, p)) != std::string::npos) {
          charge_items(1);
          out.push_back(Value::string(s.substr(p, f)));
          p = f + d.needle().size();
          if (max_split > 0) --max_split;
        }
        out.push_back(Value::string(s.substr(p, s.text.size())));
      }
      return Value::of_list(std::move(out));
    }
    if (name == "replace") return apply_filter("replace", obj, args, line);
    if (name == "join") {
      Args a;
      a.pos.push_back(obj);
      if (args.pos.empty()) fail(line, what + " needs a list");
      return apply_filter("join", args.pos[0], a, line);
    }
  }
  if (obj.is(Value::Kind::Object) && !obj.is_namespace) {
    if (name == "items") return apply_filter("items", obj, {}, line);
    if (name == "keys") return Value::of_list(iterate(obj, line));
    if (name == "values") {
      List out;
      for (const auto& [k, x] : obj.dict->items) out.push_back(x);
      return Value::of_list(std::move(out));
    }
    if (name == "get") {
      if (args.pos.empty()) fail(line, what + " needs a key");
      Value x = get_item(obj, args.pos[0], line);
      if (x.is(Value::Kind::Undefined)) return args.pos.size() > 1 ? args.pos[1] : Value::none();
      return x;
    }
  }
  if (obj.is(Value::Kind::Undefined)) {
    fail(line, (obj.name.empty() ? std::string("a value") : "'" + obj.name + "'") + " is undefined, so it has no method " + name + "()");
  }
  fail(line, "unsupported method " + what + " (the template sandbox forbids mutation)");
}

// ---- expressions ------------------------------------------------------------------------

struct Literal final : Expr {
  Value value;
  Value compute(Scope&) const override { return value; }
};

struct NameRef final : Expr {
  std::string name;
  Value compute(Scope& s) const override {
    const Value* v = s.lookup(name);
    return v != nullptr ? *v : Value::undefined(name);
  }
};

struct ListExpr final : Expr {
  std::vector<ExprPtr> items;
  bool tuple = false;
  Value compute(Scope& s) const override {
    List out;
    out.reserve(items.size());
    for (const auto& e : items) out.push_back(e->eval(s));
    Value v = Value::of_list(std::move(out));
    v.is_tuple = tuple;
    return v;
  }
};

struct DictExpr final : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value compute(Scope& s) const override {
    auto d = std::make_shared<Dict>();
    for (const auto& [k, v] : items) {
      Str key = to_str(k->eval(s));
      d->keys_data = d->keys_data || key.has_data();
      charge_steps(d->items.size());  // set() scans the keys
      d->set(key.text, v->eval(s));
    }
    return Value::of_dict(std::move(d));
  }
};

struct Attr final : Expr {
  ExprPtr obj;
  std::string name;
  Value compute(Scope& s) const override {
    const Value o = obj->eval(s);
    if (o.is(Value::Kind::Undefined)) {
      fail(line, (o.name.empty() ? std::string("a value") : "'" + o.name + "'") + " is undefined, so it has no attribute '" + name + "'");
    }
    return get_item(o, Value::string(name), line);
  }
};

struct Subscript final : Expr {
  ExprPtr obj, index;
  Value compute(Scope& s) const override {
    const Value o = obj->eval(s);
    return get_item(o, index->eval(s), line);
  }
};

struct Slice final : Expr {
  ExprPtr obj, start, stop, step;
  Value compute(Scope& s) const override {
    const Value o = obj->eval(s);
    const bool is_str = o.is(Value::Kind::String);
    if (!is_str && !o.is(Value::Kind::Array)) fail(line, "cannot slice " + kind_name(o));
    const std::string& t = o.s.text;
    const auto n = static_cast<int64_t>(is_str ? count_chars(t) : o.list->size());
    auto opt = [&](const ExprPtr& e) -> std::optional<int64_t> {
      if (!e) return std::nullopt;
      const Value v = e->eval(s);
      if (v.is(Value::Kind::None)) return std::nullopt;
      return want_int(v, line, "slice index");
    };
    const std::optional<int64_t> start_index = opt(start), stop_index = opt(stop);
    const int64_t st = opt(step).value_or(1);
    if (st == 0) fail(line, "slice step cannot be zero");
    auto clamp = [&](std::optional<int64_t> x, int64_t def) {
      if (!x) return def;
      const int64_t k = *x < 0 ? *x + n : *x;  // no overflow: n >= 0
      return st > 0 ? std::clamp<int64_t>(k, 0, n) : std::clamp<int64_t>(k, -1, n - 1);
    };
    const int64_t b = clamp(start_index, st > 0 ? 0 : n - 1);
    const int64_t e = clamp(stop_index, st > 0 ? n : -1);
    if (is_str && st == 1) {  // the common case: one substring, no table of character offsets
      size_t lo = 0;
      for (int64_t k = 0; k < b; ++k) lo = next_char(t, lo);
      size_t hi = lo;
      for (int64_t k = b; k < e; ++k) hi = next_char(t, hi);
      return Value::string(o.s.substr(lo, hi));
    }
    // Strings are sliced by character: `starts` holds each one's byte offset, and the end.
    const std::vector<size_t> starts = is_str ? char_starts(t) : std::vector<size_t>();
    List out;
    Str r;
    for (int64_t k = b; st > 0 ? k < e : k > e;) {
      charge_items(1);
      const auto at = static_cast<size_t>(k);
      if (is_str) {
        r.append(o.s.substr(starts[at], starts[at + 1]));
      } else {
        out.push_back((*o.list)[at]);
      }
      if (__builtin_add_overflow(k, st, &k)) break;  // a step past int64 leaves the range
    }
    return is_str ? Value::string(std::move(r)) : Value::of_list(std::move(out));
  }
};

[[noreturn]] void int_overflow(int line, const std::string& op) {
  fail(line, "integer overflow in " + op + ": the renderer's integers are 64-bit (Python's are unbounded)");
}

struct Unary final : Expr {
  std::string op;
  ExprPtr operand;
  Value compute(Scope& s) const override {
    const Value v = operand->eval(s);
    if (op == "not") return Value::boolean(!truthy(v));
    if (v.is(Value::Kind::Int)) {
      if (op == "-" && v.i == INT64_MIN) int_overflow(line, "unary -");
      return Value::integer(op == "-" ? -v.i : v.i);
    }
    if (v.is(Value::Kind::Float)) return Value::real(op == "-" ? -v.f : v.f);
    fail(line, "unary " + op + " needs a number, found " + kind_name(v));
  }
};

// Python's int // and % (floor division); b != 0 and not (INT64_MIN, -1).
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t floor_mod(int64_t a, int64_t b) {
  if (b == -1) return 0;  // INT64_MIN % -1 traps
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

// Python's float divmod (Objects/floatobject.c), for // and %; b != 0.
std::pair<double, double> float_divmod(double a, double b) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0) {
    if ((b < 0) != (mod < 0)) {
      mod += b;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, b);
  }
  double floordiv = 0.0;
  if (div != 0.0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, a / b);
  }
  return {floordiv, mod};
}

// base ** exponent by squaring: 64 multiplications at most, each checked.
int64_t int_pow(int64_t base, int64_t exponent, int line) {
  int64_t r = 1;
  for (auto e = static_cast<uint64_t>(exponent);;) {
    if ((e & 1) != 0 && __builtin_mul_overflow(r, base, &r)) int_overflow(line, "**");
    e >>= 1;
    if (e == 0) return r;
    // Squaring only while bits remain: if it overflows, so would the result.
    if (__builtin_mul_overflow(base, base, &base)) int_overflow(line, "**");
  }
}

struct Binary final : Expr {
  std::string op;
  ExprPtr lhs, rhs;
  Value compute(Scope& s) const override {
    if (op == "and") {
      Value a = lhs->eval(s);
      return truthy(a) ? rhs->eval(s) : a;
    }
    if (op == "or") {
      Value a = lhs->eval(s);
      return truthy(a) ? a : rhs->eval(s);
    }
    Value a = lhs->eval(s);
    const Value b = rhs->eval(s);
    if (op == "==") return Value::boolean(equal(a, b));
    if (op == "!=") return Value::boolean(!equal(a, b));
    if (op == "<") return Value::boolean(less(a, b, line));
    if (op == ">") return Value::boolean(less(b, a, line));
    if (op == "<=") return Value::boolean(!less(b, a, line));
    if (op == ">=") return Value::boolean(!less(a, b, line));
    if (op == "in") return Value::boolean(contains(b, a, line));
    if (op == "not in") return Value::boolean(!contains(b, a, line));
    if (op == "~" || (op == "+" && a.is(Value::Kind::String) && b.is(Value::Kind::String))) {
      Str r = a.is(Value::Kind::String) ? std::move(a.s) : to_str(a);
      if (b.is(Value::Kind::String)) {
        r.append(b.s);
      } else {
        r.append(to_str(b));
      }
      return Value::string(std::move(r));
    }
    if (op == "+" && a.is(Value::Kind::Array) && b.is(Value::Kind::Array)) {
      charge_items(a.list->size() + b.list->size());
      List r;
      r.reserve(a.list->size() + b.list->size());
      r.insert(r.end(), a.list->begin(), a.list->end());
      r.insert(r.end(), b.list->begin(), b.list->end());
      return Value::of_list(std::move(r));
    }
    if (op == "*" && (a.is(Value::Kind::String) || a.is(Value::Kind::Array)) && b.is(Value::Kind::Int)) return repeat(a, b.i);
    if (!a.number() || !b.number()) {
      fail(line, "unsupported operand types for " + op + ": " + kind_name(a) +
                     (a.is(Value::Kind::Undefined) && !a.name.empty() ? " ('" + a.name + "')" : "") + " and " + kind_name(b) +
                     (b.is(Value::Kind::Undefined) && !b.name.empty() ? " ('" + b.name + "')" : ""));
    }
    if (a.integral() && b.integral()) return integers(a.as_int(), b.as_int());
    const double af = a.as_double(), bf = b.as_double();
    if (op == "+") return Value::real(af + bf);
    if (op == "-") return Value::real(af - bf);
    if (op == "*") return Value::real(af * bf);
    if (op == "/") {
      if (bf == 0.0) fail(line, "division by zero");
      return Value::real(af / bf);
    }
    if (op == "//" || op == "%") {
      if (bf == 0.0) fail(line, op == "%" ? "float modulo by zero" : "float floor division by zero");
      const auto [q, r] = float_divmod(af, bf);
      return Value::real(op == "//" ? q : r);
    }
    if (op == "**") return power(af, bf);
    fail(line, "unsupported operator " + op);
  }

 private:
  // Checked: where Python would grow a big int, an error.
  Value integers(int64_t a, int64_t b) const {
    int64_t r = 0;
    const bool overflow = op == "+"   ? __builtin_add_overflow(a, b, &r)
                          : op == "-" ? __builtin_sub_overflow(a, b, &r)
                          : op == "*" ? __builtin_mul_overflow(a, b, &r)
                                      : false;
    if (overflow) int_overflow(line, op);
    if (op == "+" || op == "-" || op == "*") return Value::integer(r);
    if (op == "/") {
      if (b == 0) fail(line, "division by zero");
      return Value::real(static_cast<double>(a) / static_cast<double>(b));
    }
    if (op == "//") {
      if (b == 0) fail(line, "integer division or modulo by zero");
      if (a == INT64_MIN && b == -1) int_overflow(line, op);
      return Value::integer(floor_div(a, b));
    }
    if (op == "%") {
      if (b == 0) fail(line, "integer modulo by zero");
      return Value::integer(floor_mod(a, b));
    }
    if (op == "**") return b >= 0 ? Value::integer(int_pow(a, b, line)) : power(static_cast<double>(a), static_cast<double>(b));
    fail(line, "unsupported operator " + op);
  }

  Value power(double a, double b) const {
    if (a == 0.0 && b < 0.0) fail(line, "0.0 cannot be raised to a negative power");
    if (a < 0.0 && std::isfinite(b) && b != std::floor(b)) fail(line, "a negative number to a fractional power is complex");
    const double r = std::pow(a, b);
    if (std::isinf(r) && std::isfinite(a) && std::isfinite(b)) fail(line, "** result out of range (a float overflow)");
    return Value::real(r);
  }

  // str * n and list * n, refused before the result is built when it would not fit.
  Value repeat(const Value& a, int64_t n) const {
    if (n <= 0 || (a.is(Value::Kind::Array) && a.list->empty())) return a.is(Value::Kind::String) ? Value::string(std::string()) : Value::of_list({});
    const auto times = static_cast<uint64_t>(n);
    if (a.is(Value::Kind::String)) {
      check_string_size(saturating_mul(a.s.text.size(), times));
      Str r;
      r.text.reserve(a.s.text.size() * times);
      for (uint64_t k = 0; k < times && !a.s.text.empty(); ++k) r.append(a.s);
      return Value::string(std::move(r));
    }
    uint64_t bytes = 0;
    for (const Value& x : *a.list) bytes += x.s.text.size();
    ensure_steps(saturating_mul(times, a.list->size() * (1 + sizeof(Value) / kBytesPerStep) + bytes / kBytesPerStep));
    charge_items(times * a.list->size());
    List r;
    r.reserve(times * a.list->size());
    for (uint64_t k = 0; k < times; ++k) r.insert(r.end(), a.list->begin(), a.list->end());
    return Value::of_list(std::move(r));
  }
};

struct Conditional final : Expr {
  ExprPtr cond, then, otherwise;  // otherwise may be null: undefined
  Value compute(Scope& s) const override {
    if (truthy(cond->eval(s))) return then->eval(s);
    return otherwise ? otherwise->eval(s) : Value::undefined();
  }
};

struct FilterExpr final : Expr {
  ExprPtr operand;
  std::string name;
  ArgExprs args;
  Value compute(Scope& s) const override {
    const Value v = operand->eval(s);
    return apply_filter(name, v, args.eval(s), line);
  }
};

struct TestExpr final : Expr {
  ExprPtr operand;
  std::string name;
  ArgExprs args;
  bool negated = false;
  Value compute(Scope& s) const override {
    const Value v = operand->eval(s);
    return Value::boolean(run_test(name, v, args.eval(s), line) != negated);
  }
};

// The length of range(b, e, st), st != 0 (at most 2^64 - 1, so it fits).
uint64_t range_length(int64_t b, int64_t e, int64_t st) {
  if (st > 0 ? b >= e : b <= e) return 0;
  // Unsigned differences wrap into the right values for any int64 pair.
  const uint64_t span = st > 0 ? static_cast<uint64_t>(e) - static_cast<uint64_t>(b) : static_cast<uint64_t>(b) - static_cast<uint64_t>(e);
  const uint64_t stride = st > 0 ? static_cast<uint64_t>(st) : 0 - static_cast<uint64_t>(st);
  return span / stride + (span % stride != 0 ? 1 : 0);
}

struct Call final : Expr {
  ExprPtr callee;  // NameRef (a global function) or Attr (a method)
  ArgExprs args;
  Value compute(Scope& s) const override {
    const Args a = args.eval(s);
    if (const auto* attr = dynamic_cast<const Attr*>(callee.get())) return call_method(attr->obj->eval(s), attr->name, a, line);
    const auto* ref = dynamic_cast<const NameRef*>(callee.get());
    if (ref == nullptr) fail(line, "only functions and methods can be called");
    const std::string& fn = ref->name;
    if (fn == "raise_exception") {
      const std::string msg = a.pos.empty() ? std::string() : to_str(a.pos[0]).text;
      throw InputError((s.template_name ? *s.template_name : std::string("chat template")) + ": the template refused the input: " + msg);
    }
    if (fn == "namespace") {
      auto d = std::make_shared<Dict>();
      for (const Value& p : a.pos) {
        if (!p.is(Value::Kind::Object)) fail(line, "namespace() takes keyword arguments or a dict");
        d->keys_data = d->keys_data || p.dict->keys_data;
        charge_steps(saturating_mul(p.dict->items.size(), d->items.size() + p.dict->items.size()));  // set() scans the keys
        for (const auto& [k, v] : p.dict->items) d->set(k, v);
      }
      for (const auto& [k, v] : a.kw) d->set(k, v);
      Value ns = Value::of_dict(d);
      ns.is_namespace = true;
      ns.depth = 1;  // nothing recurses into a namespace (printing, tojson and == do not)
      s.namespaces.push_back(std::move(d));
      return ns;
    }
    if (fn == "dict") {
      auto d = std::make_shared<Dict>();
      for (const auto& [k, v] : a.kw) d->set(k, v);
      return Value::of_dict(std::move(d));
    }
    if (fn == "range") {
      if (a.pos.empty() || a.pos.size() > 3) fail(line, "range() takes 1 to 3 integers");
      int64_t b = 0, e = 0, st = 1;
      if (a.pos.size() == 1) {
        e = want_int(a.pos[0], line, "range()");
      } else {
        b = want_int(a.pos[0], line, "range()");
        e = want_int(a.pos[1], line, "range()");
        if (a.pos.size() == 3) st = want_int(a.pos[2], line, "range()");
      }
      if (st == 0) fail(line, "range() step cannot be zero");
      const uint64_t n = range_length(b, e, st);
      charge_items(n);  // before allocating
      List out;
      out.reserve(n);
      for (uint64_t k = 0; k < n; ++k) out.push_back(Value::integer(static_cast<int64_t>(static_cast<uint64_t>(b) + k * static_cast<uint64_t>(st))));
      return Value::of_list(std::move(out));
    }
    if (fn == "strftime_now") {
      if (a.pos.empty()) fail(line, "strftime_now() needs a format");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, want_string(a.pos[0], line, "strftime_now()").text.c_str(), &tm);
      return Value::string(std::string(buf, n));
    }
    const Value* v = s.lookup(fn);
    fail(line, v == nullptr ? "'" + fn + "' is undefined" : "'" + fn + "' is not a function this renderer supports");
  }
};

// ---- statements -------------------------------------------------------------------------

struct TextNode final : Node {
  Str text;
  Flow run(Scope&, Str& out) const override {
    emit(out, text);
    return Flow::Normal;
  }
};

struct OutputNode final : Node {
  ExprPtr expr;
  Flow run(Scope& s, Str& out) const override {
    const Value v = expr->eval(s);
    if (v.is(Value::Kind::String)) {
      emit(out, v.s);
    } else {
      emit(out, to_str(v));
    }
    return Flow::Normal;
  }
};

struct IfNode final : Node {
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body otherwise;
  Flow run(Scope& s, Str& out) const override {
    for (const auto& [cond, body] : branches) {
      if (truthy(cond->eval(s))) return render_body(body, s, out);
    }
    return render_body(otherwise, s, out);
  }
};

struct ForNode final : Node {
  std::vector<std::string> targets;
  ExprPtr iterable, filter;
  Body body, otherwise;

  void bind(Scope& s, const Value& item) const {
    if (targets.size() == 1) {
      s.set(targets[0], item);
      return;
    }
    const List parts = iterate(item, line);
    if (parts.size() != targets.size()) {
      fail(line, "cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(targets.size()) + " loop variables");
    }
    for (size_t k = 0; k < targets.size(); ++k) s.set(targets[k], parts[k]);
  }

  Flow run(Scope& s, Str& out) const override {
    List items = iterate(iterable->eval(s), line);
    if (filter) {
      List kept;
      for (const Value& item : items) {
        s.frames.emplace_back();
        bind(s, item);
        const bool keep = truthy(filter->eval(s));
        s.frames.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      step(line);  // an iteration, even of an empty body
      // Each iteration is a scope of its own, as in Jinja: a set inside the body is gone at the
      // next iteration and after the loop (hence namespace()).
      s.frames.emplace_back();
      auto loop = std::make_shared<Dict>();
      loop->items.reserve(9);
      loop->items.emplace_back("index", Value::integer(k + 1));
      loop->items.emplace_back("index0", Value::integer(k));
      loop->items.emplace_back("revindex", Value::integer(n - k));
      loop->items.emplace_back("revindex0", Value::integer(n - k - 1));
      loop->items.emplace_back("first", Value::boolean(k == 0));
      loop->items.emplace_back("last", Value::boolean(k == n - 1));
      loop->items.emplace_back("length", Value::integer(n));
      loop->items.emplace_back("previtem", k > 0 ? items[static_cast<size_t>(k - 1)] : Value::undefined("loop.previtem"));
      loop->items.emplace_back("nextitem", k + 1 < n ? items[static_cast<size_t>(k + 1)] : Value::undefined("loop.nextitem"));
      s.set("loop", Value::of_dict(loop));
      bind(s, items[static_cast<size_t>(k)]);
      const Flow f = render_body(body, s, out);
      s.frames.pop_back();
      if (f == Flow::Break) break;
    }
    if (n == 0) return render_body(otherwise, s, out);
    return Flow::Normal;
  }
};

struct SetNode final : Node {
  std::string target, attribute;  // attribute: set ns.attr = ...
  ExprPtr value;
  Body block;  // {% set x %}...{% endset %}
  Flow run(Scope& s, Str&) const override {
    Value v;
    if (value) {
      v = value->eval(s);
    } else {
      Str captured;
      render_body(block, s, captured);
      v = Value::string(std::move(captured));
    }
    if (attribute.empty()) {
      s.set(target, std::move(v));
      return Flow::Normal;
    }
    const Value* ns = s.lookup(target);
    if (ns == nullptr || !ns->is_namespace) fail(line, "cannot set '" + target + "." + attribute + "': '" + target + "' is not a namespace()");
    ns->dict->set(attribute, std::move(v));
    return Flow::Normal;
  }
};

struct FlowNode final : Node {
  Flow flow;
  Flow run(Scope&, Str&) const override { return flow; }
};

struct BlockNode final : Node {  // generation blocks: rendered through
  Body body;
  Flow run(Scope& s, Str& out) const override { return render_body(body, s, out); }
};

// ---- parser -----------------------------------------------------------------------------

class Parser {
 public:
  Parser(std::vector<Token> tokens, int max_depth) : t_(std::move(tokens)), max_depth_(max_depth) {}

  Body parse_template() {
    std::string end;
    Body body = parse_body({}, &end);
    return body;
  }

 private:
  const Token& peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(pos_++, t_.size() - 1)]; }
  bool at_op(const char* op) const { return peek().type == Tok::Op && peek().text == op; }
  bool at_name(const char* n) const { return peek().type == Tok::Name && peek().text == n; }
  void expect_op(const char* op) {
    if (!at_op(op)) fail(peek().line, std::string("expected '") + op + "', found " + describe_token(peek()));
    ++pos_;
  }
  void expect(Tok type, const char* what) {
    if (peek().type != type) fail(peek().line, std::string("expected ") + what + ", found " + describe_token(peek()));
    ++pos_;
  }
  static std::string describe_token(const Token& t) {
    switch (t.type) {
      case Tok::End: return "the end of the template";
      case Tok::VarEnd: return "'}}'";
      case Tok::BlockEnd: return "'%}'";
      case Tok::Text: return "text";
      case Tok::String: return "a string";
      default: return "'" + t.text + "'";
    }
  }
  // Counts a level of the parser's recursion (blocks, brackets, unary operators, "else"
  // chains) for as long as it lives.
  class Nest {
   public:
    Nest(Parser& p, int line) : p_(p) {
      if (p_.depth_ >= p_.max_depth_) {
        fail(line, "blocks and brackets nested deeper than max_depth = " + std::to_string(p_.max_depth_));
      }
      ++p_.depth_;
    }
    ~Nest() { --p_.depth_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    Parser& p_;
  };

  // Sets `e`'s height from its children's: loops build chains (a + b + c ..., x.a.b ...,
  // x | f | g ...) whose evaluation and destruction recurse along them without the parser
  // recursing.
  void grow(Expr& e, std::initializer_list<const Expr*> children, const ArgExprs* args = nullptr) {
    int h = 0;
    for (const Expr* c : children) {
      if (c != nullptr) h = std::max(h, c->height);
    }
    if (args != nullptr) {
      for (const auto& a : args->pos) h = std::max(h, a->height);
      for (const auto& [k, a] : args->kw) h = std::max(h, a->height);
    }
    set_height(e, h + 1);
  }
  void set_height(Expr& e, int height) {
    e.height = height;
    if (height > max_depth_) {
      fail(e.line, "an expression nested deeper than max_depth = " + std::to_string(max_depth_) +
                       " (brackets, or a chain of operators, filters, tests or attributes)");
    }
  }
  template <typename Items, typename Height>
  void grow_over(Expr& e, const Items& items, Height height) {
    int h = 0;
    for (const auto& item : items) h = std::max(h, height(item));
    set_height(e, h + 1);
  }

  std::string name_token(const char* what) {
    if (peek().type != Tok::Name) fail(peek().line, std::string("expected ") + what + ", found " + describe_token(peek()));
    return next().text;
  }

  // Parses nodes until a block tag named in `ends`; that tag's name goes to *end (its
  // BlockBegin and name are consumed, the rest of the tag is left to the caller).
  Body parse_body(const std::vector<std::string>& ends, std::string* end) {
    Body body;
    while (true) {
      const Token& tok = peek();
      if (tok.type == Tok::End) {
        if (!ends.empty()) fail(tok.line, "missing {% " + ends.back() + " %}: the template ends inside a block");
        return body;
      }
      if (tok.type == Tok::Text) {
        auto n = std::make_unique<TextNode>();
        n->line = tok.line;
        n->text = next().text;
        body.push_back(std::move(n));
        continue;
      }
      if (tok.type == Tok::VarBegin) {
        next();
        auto n = std::make_unique<OutputNode>();
        n->line = tok.line;
        n->expr = parse_expr();
        expect(Tok::VarEnd, "'}}'");
        body.push_back(std::move(n));
        continue;
      }
      if (tok.type != Tok::BlockBegin) fail(tok.line, "unexpected " + describe_token(tok));
      const std::string keyword = peek(1).type == Tok::Name ? peek(1).text : std::string();
      if (std::find(ends.begin(), ends.end(), keyword) != ends.end()) {
        pos_ += 2;
        *end = keyword;
        return body;
      }
      body.push_back(parse_statement());
    }
  }

  NodePtr parse_statement() {
    const int line = next().line;  // BlockBegin
    const Nest nest(*this, line);
    const std::string kw = name_token("a statement");
    if (kw == "if") {
      auto n = std::make_unique<IfNode>();
      n->line = line;
      ExprPtr cond = parse_expr();
      while (true) {
        expect(Tok::BlockEnd, "'%}'");
        std::string end;
        Body body = parse_body({"elif", "else", "endif"}, &end);
        n->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") {
          cond = parse_expr();
          continue;
        }
        if (end == "else") {
          expect(Tok::BlockEnd, "'%}'");
          std::string end2;
          n->otherwise = parse_body({"endif"}, &end2);
        }
        expect(Tok::BlockEnd, "'%}'");
        return n;
      }
    }
    if (kw == "for") {
      auto n = std::make_unique<ForNode>();
      n->line = line;
      n->targets.push_back(name_token("a loop variable"));
      while (at_op(",")) {
        next();
        n->targets.push_back(name_token("a loop variable"));
      }
      if (!at_name("in")) fail(peek().line, "expected 'in' in the for statement, found " + describe_token(peek()));
      next();
      n->iterable = parse_or_condition(false);
      if (at_name("if")) {
        next();
        n->filter = parse_or_condition(true);
      }
      if (at_name("recursive")) fail(peek().line, "recursive loops are not supported");
      expect(Tok::BlockEnd, "'%}'");
      std::string end;
      n->body = parse_body({"else", "endfor"}, &end);
      if (end == "else") {
        expect(Tok::BlockEnd, "'%}'");
        std::string end2;
        n->otherwise = parse_body({"endfor"}, &end2);
      }
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (kw == "set") {
      auto n = std::make_unique<SetNode>();
      n->line = line;
      n->target = name_token("a variable name");
      if (at_op(".")) {
        next();
        n->attribute = name_token("an attribute name");
      }
      if (at_op(",")) fail(peek().line, "tuple assignment in set is not supported");
      if (at_op("=")) {
        next();
        n->value = parse_expr();
        expect(Tok::BlockEnd, "'%}'");
      } else {
        expect(Tok::BlockEnd, "'=' or '%}'");
        std::string end;
        n->block = parse_body({"endset"}, &end);
        expect(Tok::BlockEnd, "'%}'");
      }
      return n;
    }
    if (kw == "break" || kw == "continue") {
      auto n = std::make_unique<FlowNode>();
      n->line = line;
      n->flow = kw == "break" ? Flow::Break : Flow::Continue;
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (kw == "generation") {
      auto n = std::make_unique<BlockNode>();
      n->line = line;
      expect(Tok::BlockEnd, "'%}'");
      std::string end;
      n->body = parse_body({"endgeneration"}, &end);
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    fail(line, "unsupported statement '{% " + kw + " %}'");
  }

  // ---- expressions, lowest precedence first ----
  ExprPtr parse_expr() { return parse_or_condition(true); }

  // or_expr ["if" or_expr ["else" expr]]; loops parse their iterable without the conditional
  // so that "for x in xs if cond" reads as a loop filter.
  ExprPtr parse_or_condition(bool allow_conditional) {
    ExprPtr e = parse_or();
    while (allow_conditional && at_name("if")) {
      const int line = next().line;
      auto c = std::make_unique<Conditional>();
      c->line = line;
      c->then = std::move(e);
      c->cond = parse_or();
      if (at_name("else")) {
        const Nest nest(*this, next().line);
        c->otherwise = parse_or_condition(true);
      }
      grow(*c, {c->then.get(), c->cond.get(), c->otherwise.get()});
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(std::string op, ExprPtr l, ExprPtr r, int line) {
    auto b = std::make_unique<Binary>();
    b->line = line;
    b->op = std::move(op);
    b->lhs = std::move(l);
    b->rhs = std::move(r);
    grow(*b, {b->lhs.get(), b->rhs.get()});
    return b;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (at_name("or")) {
      const int line = next().line;
      e = binary("or", std::move(e), parse_and(), line);
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (at_name("and")) {
      const int line = next().line;
      e = binary("and", std::move(e), parse_not(), line);
    }
    return e;
  }
  ExprPtr parse_not() {
    if (at_name("not")) {
      const int line = next().line;
      const Nest nest(*this, line);
      auto u = std::make_unique<Unary>();
      u->line = line;
      u->op = "not";
      u->operand = parse_not();
      grow(*u, {u->operand.get()});
      return u;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    while (true) {
      const int line = peek().line;
      if (peek().type == Tok::Op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                     peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        const std::string op = next().text;
        e = binary(op, std::move(e), parse_math1(), line);
      } else if (at_name("in")) {
        next();
        e = binary("in", std::move(e), parse_math1(), line);
      } else if (at_name("not") && peek(1).type == Tok::Name && peek(1).text == "in") {
        pos_ += 2;
        e = binary("not in", std::move(e), parse_math1(), line);
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (at_op("+") || at_op("-")) {
      const Token& t = next();
      e = binary(t.text, std::move(e), parse_concat(), t.line);
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (at_op("~")) {
      const int line = next().line;
      e = binary("~", std::move(e), parse_math2(), line);
    }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token& t = next();
      e = binary(t.text, std::move(e), parse_pow(), t.line);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary();
    while (at_op("**")) {
      const int line = next().line;
      e = binary("**", std::move(e), parse_unary(), line);
    }
    return e;
  }
  // Unary minus binds tighter than filters: "-3 | abs" is 3, as in Jinja.
  ExprPtr parse_unary(bool with_filters = true) {
    ExprPtr e;
    if (at_op("-") || at_op("+")) {
      const Token& t = next();
      const Nest nest(*this, t.line);
      auto u = std::make_unique<Unary>();
      u->line = t.line;
      u->op = t.text;
      u->operand = parse_unary(false);
      grow(*u, {u->operand.get()});
      e = std::move(u);
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filters ? parse_filters(std::move(e)) : std::move(e);
  }

  ArgExprs parse_call_args() {
    ArgExprs a;
    const Nest nest(*this, peek().line);
    expect_op("(");
    while (!at_op(")")) {
      if (peek().type == Tok::Name && peek(1).type == Tok::Op && peek(1).text == "=") {
        std::string key = next().text;
        next();
        a.kw.emplace_back(std::move(key), parse_expr());
      } else {
        a.pos.push_back(parse_expr());
      }
      if (!at_op(",")) break;
      next();
    }
    expect_op(")");
    return a;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const int line = peek().line;
      if (at_op(".")) {
        next();
        auto a = std::make_unique<Attr>();
        a->line = line;
        a->obj = std::move(e);
        if (peek().type == Tok::Int) {
          auto s = std::make_unique<Subscript>();
          s->line = line;
          s->obj = std::move(a->obj);
          auto lit = std::make_unique<Literal>();
          lit->value = Value::integer(next().i);
          s->index = std::move(lit);
          grow(*s, {s->obj.get()});
          e = std::move(s);
          continue;
        }
        a->name = name_token("an attribute name");
        grow(*a, {a->obj.get()});
        e = std::move(a);
      } else if (at_op("[")) {
        const Nest nest(*this, next().line);
        ExprPtr start, stop, step;
        if (!at_op(":")) start = parse_expr();
        if (at_op(":")) {
          next();
          auto sl = std::make_unique<Slice>();
          sl->line = line;
          if (!at_op("]") && !at_op(":")) stop = parse_expr();
          if (at_op(":")) {
            next();
            if (!at_op("]")) step = parse_expr();
          }
          expect_op("]");
          sl->obj = std::move(e);
          sl->start = std::move(start);
          sl->stop = std::move(stop);
          sl->step = std::move(step);
          grow(*sl, {sl->obj.get(), sl->start.get(), sl->stop.get(), sl->step.get()});
          e = std::move(sl);
        } else {
          expect_op("]");
          auto s = std::make_unique<Subscript>();
          s->line = line;
          s->obj = std::move(e);
          s->index = std::move(start);
          grow(*s, {s->obj.get(), s->index.get()});
          e = std::move(s);
        }
      } else if (at_op("(")) {
        auto c = std::make_unique<Call>();
        c->line = line;
        c->callee = std::move(e);
        c->args = parse_call_args();
        grow(*c, {c->callee.get()}, &c->args);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      const int line = peek().line;
      if (at_op("|")) {
        next();
        auto f = std::make_unique<FilterExpr>();
        f->line = line;
        f->operand = std::move(e);
        f->name = name_token("a filter name");
        if (at_op("(")) f->args = parse_call_args();
        grow(*f, {f->operand.get()}, &f->args);
        e = std::move(f);
      } else if (at_name("is")) {
        next();
        auto t = std::make_unique<TestExpr>();
        t->line = line;
        t->operand = std::move(e);
        if (at_name("not")) {
          next();
          t->negated = true;
        }
        if (peek().type == Tok::Name) {
          t->name = next().text;
        } else if (peek().type == Tok::Op && (at_op("==") || at_op("!=") || at_op("<") || at_op(">") || at_op("<=") || at_op(">="))) {
          t->name = next().text;
        } else {
          fail(peek().line, "expected a test name after 'is', found " + describe_token(peek()));
        }
        if (at_op("(")) {
          t->args = parse_call_args();
        } else if (peek().type == Tok::String || peek().type == Tok::Int || peek().type == Tok::Float ||
                   (peek().type == Tok::Name && peek().text != "and" && peek().text != "or" && peek().text != "else" &&
                    peek().text != "if" && peek().text != "in" && peek().text != "not" && peek().text != "is")) {
          t->args.pos.push_back(parse_primary());  // "x is divisibleby 3", "x is sameas none"
        }
        grow(*t, {t->operand.get()}, &t->args);
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    const int line = t.line;
    auto literal = [&](Value v) {
      auto l = std::make_unique<Literal>();
      l->line = line;
      l->value = std::move(v);
      return l;
    };
    if (t.type == Tok::String) {
      std::string s = next().text;
      while (peek().type == Tok::String) s += next().text;  // adjacent literals concatenate
      return literal(Value::string(std::move(s)));
    }
    if (t.type == Tok::Int) return literal(Value::integer(next().i));
    if (t.type == Tok::Float) return literal(Value::real(next().f));
    if (t.type == Tok::Name) {
      const std::string n = next().text;
      if (n == "true" || n == "True") return literal(Value::boolean(true));
      if (n == "false" || n == "False") return literal(Value::boolean(false));
      if (n == "none" || n == "None") return literal(Value::none());
      auto r = std::make_unique<NameRef>();
      r->line = line;
      r->name = n;
      return r;
    }
    if (at_op("(")) {
      const Nest nest(*this, next().line);
      if (at_op(")")) {
        next();
        auto l = std::make_unique<ListExpr>();
        l->line = line;
        l->tuple = true;
        return l;
      }
      ExprPtr e = parse_expr();
      if (at_op(",")) {  // a tuple: a list here
        auto l = std::make_unique<ListExpr>();
        l->line = line;
        l->items.push_back(std::move(e));
        while (at_op(",")) {
          next();
          if (at_op(")")) break;
          l->items.push_back(parse_expr());
        }
        l->tuple = true;
        grow_over(*l, l->items, [](const ExprPtr& x) { return x->height; });
        e = std::move(l);
      }
      expect_op(")");
      return e;
    }
    if (at_op("[")) {
      const Nest nest(*this, next().line);
      auto l = std::make_unique<ListExpr>();
      l->line = line;
      while (!at_op("]")) {
        l->items.push_back(parse_expr());
        if (!at_op(",")) break;
        next();
      }
      expect_op("]");
      grow_over(*l, l->items, [](const ExprPtr& x) { return x->height; });
      return l;
    }
    if (at_op("{")) {
      const Nest nest(*this, next().line);
      auto d = std::make_unique<DictExpr>();
      d->line = line;
      while (!at_op("}")) {
        ExprPtr k = parse_expr();
        expect_op(":");
        d->items.emplace_back(std::move(k), parse_expr());
        if (!at_op(",")) break;
        next();
      }
      expect_op("}");
      grow_over(*d, d->items, [](const auto& kv) { return std::max(kv.first->height, kv.second->height); });
      return d;
    }
    fail(line, "expected an expression, found " + describe_token(t));
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int max_depth_;
  int depth_ = 0;
};

struct Root final : Node {
  Body body;
  Flow run(Scope& s, Str& out) const override { return render_body(body, s, out); }
};

// Makes `b` the budget of this thread's render for as long as it lives.
class ActiveBudget {
 public:
  explicit ActiveBudget(Budget* b) : saved_(t_budget) { t_budget = b; }
  ~ActiveBudget() { t_budget = saved_; }
  ActiveBudget(const ActiveBudget&) = delete;
  ActiveBudget& operator=(const ActiveBudget&) = delete;

 private:
  Budget* saved_;
};

std::string where(const std::string& name, int line) { return name + ", line " + std::to_string(line); }

}  // namespace

Template::Template(const std::string& source, std::string name, RenderLimits limits) : name_(std::move(name)), limits_(limits) {
  try {
    auto root = std::make_shared<Root>();
    // Jinja drops a single trailing newline of the template (keep_trailing_newline=False).
    std::string text = source;
    if (!text.empty() && text.back() == '\n') {
      text.pop_back();
      if (!text.empty() && text.back() == '\r') text.pop_back();
    }
    root->body = Parser(Lexer(text).run(), limits_.max_depth).parse_template();
    root_ = std::move(root);
  } catch (const RenderError& e) {
    throw InputError(where(name_, e.line) + ": " + e.message);
  }
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::vector<Span> Template::render(const nlohmann::ordered_json& context, const std::set<std::string>& data_keys) const {
  if (!context.is_object() && !context.is_null()) throw InputError(name_ + ": the render context must be a JSON object");
  Budget budget;
  budget.limits = limits_;
  const ActiveBudget active(&budget);
  Str out;
  try {
    Scope scope;
    scope.template_name = &name_;
    scope.frames.emplace_back();
    if (context.is_object()) {
      for (const auto& [k, v] : context.items()) scope.set(k, from_json(v, data_keys.count(k) != 0));
    }
    scope.frames.emplace_back();  // the template's own top-level sets
    root_->render(scope, out);
  } catch (const RenderError& e) {
    // Line 0: converting the context, before the template runs.
    throw InputError((e.line > 0 ? where(name_, e.line) : name_ + ", render context") + ": " + e.message);
  }
  std::vector<Span> spans;
  size_t p = 0;
  for (auto [b, e] : out.data) {
    if (b > p) spans.push_back({out.text.substr(p, b - p), false});
    spans.push_back({out.text.substr(b, e - b), true});
    p = e;
  }
  if (p < out.text.size()) spans.push_back({out.text.substr(p), false});
  return spans;
}

std::string Template::render_text(const nlohmann::ordered_json& context) const {
  std::string out;
  for (const Span& s : render(context, {})) out += s.text;
  return out;
}

}  // namespace icet::text::jinja
