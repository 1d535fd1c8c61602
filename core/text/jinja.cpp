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

// ---- values -----------------------------------------------------------------------------

// A string plus the byte ranges [begin, end) of it that came from the caller's data.
struct Str {
  std::string text;
  std::vector<std::pair<size_t, size_t>> data;

  void append(const Str& other) {
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
  // Bytes [b, e) with the data ranges that fall inside them.
  Str substr(size_t b, size_t e) const {
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

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Object };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  Str s;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  bool is_namespace = false;  // namespace(): the only object a template may mutate
  bool is_tuple = false;      // a List that Python would hold as a tuple (prints as one)
  std::string name;           // Undefined: the name that was looked up, for errors

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
    v.list = std::make_shared<List>(std::move(x));
    return v;
  }
  static Value of_dict(std::shared_ptr<Dict> d) {
    Value v = make(Kind::Object);
    v.dict = std::move(d);
    return v;
  }

  bool is(Kind k) const { return kind == k; }
  bool number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  double as_double() const { return kind == Kind::Float ? f : static_cast<double>(kind == Kind::Bool ? b : i); }

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
  const Value* find(const std::string& key) const {
    for (const auto& [k, v] : items) {
      if (k == key) return &v;
    }
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
};

// Errors carry the template line; Template wraps them into an InputError with its name.
struct RenderError {
  std::string message;
  int line;
};
[[noreturn]] void fail(int line, const std::string& message) { throw RenderError{message, line}; }

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

std::string format_float(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);  // shortest round-trip, as repr()
  std::string s(buf, end);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string py_repr(const Value& v);

std::string quote_repr(const std::string& s) {
  // Python's repr of a str: single quotes unless the text has one and no double quote.
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out += c;
    }
  }
  return out + q;
}

// str(v) as Python prints it; strings keep their data ranges.
Str to_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::None: return {"None", {}};
    case Value::Kind::Bool: return {v.b ? "True" : "False", {}};
    case Value::Kind::Int: return {std::to_string(v.i), {}};
    case Value::Kind::Float: return {format_float(v.f), {}};
    case Value::Kind::String: return v.s;
    default: return {py_repr(v), {}};
  }
}

std::string py_repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::String: return quote_repr(v.s.text);
    case Value::Kind::Array: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) out += (k ? ", " : "") + py_repr((*v.list)[k]);
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Value::Kind::Object: {
      if (v.is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        out += (first ? "" : ", ") + quote_repr(k) + ": " + py_repr(x);
        first = false;
      }
      return out + "}";
    }
    default: return to_str(v).text;
  }
}

// json.dumps(v, ensure_ascii=False, indent=indent) as transformers' tojson filter.
void dump_json(const Value& v, std::optional<int64_t> indent, int depth, std::string& out, int line) {
  auto newline = [&](int d) {
    if (indent) out += "\n" + std::string(static_cast<size_t>(*indent * d), ' ');
  };
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.b ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.i); return;
    case Value::Kind::Float:
      out += std::isfinite(v.f) ? format_float(v.f) : (std::isnan(v.f) ? "NaN" : (v.f > 0 ? "Infinity" : "-Infinity"));
      return;
    case Value::Kind::String: {
      // nlohmann escapes exactly the characters json.dumps(ensure_ascii=False) escapes,
      // except DEL, which neither escapes.
      out += nlohmann::json(v.s.text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return;
    }
    case Value::Kind::Array: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += indent ? "," : ", ";
        newline(depth + 1);
        dump_json((*v.list)[k], indent, depth + 1, out, line);
      }
      newline(depth);
      out += "]";
      return;
    }
    case Value::Kind::Object: {
      if (v.is_namespace) fail(line, "tojson: a namespace is not JSON serializable");
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      out += "{";
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        if (!first) out += indent ? "," : ", ";
        first = false;
        newline(depth + 1);
        out += nlohmann::json(k).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ": ";
        dump_json(x, indent, depth + 1, out, line);
      }
      newline(depth);
      out += "}";
      return;
    }
  }
}

Value from_json(const nlohmann::ordered_json& j, bool data) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float: return Value::real(j.get<double>());
    case nlohmann::ordered_json::value_t::string: {
      std::string s = j.get<std::string>();
      Str str{s, {}};
      if (data && !s.empty()) str.data.emplace_back(0, s.size());
      return Value::string(std::move(str));
    }
    case nlohmann::ordered_json::value_t::array: {
      List l;
      for (const auto& x : j) l.push_back(from_json(x, data));
      return Value::of_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto d = std::make_shared<Dict>();
      for (const auto& [k, x] : j.items()) d->set(k, from_json(x, data));
      return Value::of_dict(std::move(d));
    }
    default: return Value::none();
  }
}

// ---- UTF-8 helpers (Python indexes and measures strings in code points) -----------------

std::vector<size_t> char_starts(const std::string& s) {
  std::vector<size_t> starts;
  for (size_t k = 0; k < s.size(); ++k) {
    if ((static_cast<unsigned char>(s[k]) & 0xC0) != 0x80) starts.push_back(k);
  }
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

Str strip(const Str& s, bool left, bool right, const std::optional<std::string>& chars) {
  const std::string& t = s.text;
  const std::vector<size_t> starts = char_starts(t);
  auto strip_cp = [&](size_t idx) {
    size_t len = 0;
    const uint32_t cp = decode_at(t, starts[idx], &len);
    if (!chars) return py_space(cp);
    return chars->find(t.substr(starts[idx], len)) != std::string::npos;
  };
  size_t lo = 0, hi = starts.size();
  if (left) {
    while (lo < hi && strip_cp(lo)) ++lo;
  }
  if (right) {
    while (hi > lo && strip_cp(hi - 1)) --hi;
  }
  const size_t b = lo < starts.size() ? starts[lo] : t.size();
  const size_t e = hi < starts.size() ? starts[hi] : t.size();
  return s.substr(b, std::max(b, e));
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
          while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
        }
      }
      std::string text = src_.substr(p, e - p);
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      Token t{is_float ? Tok::Float : Tok::Int, text, line};
      if (is_float) {
        t.f = std::stod(text);
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

struct Expr {
  int line = 0;
  virtual ~Expr() = default;
  virtual Value eval(Scope& s) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

}  // namespace

enum class Flow { Normal, Break, Continue };

struct Node {
  int line = 0;
  virtual ~Node() = default;
  virtual Flow render(Scope& s, Str& out) const = 0;
};

namespace {

using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Scope {
  std::vector<std::map<std::string, Value>> frames;
  const std::string* template_name = nullptr;

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

// Calls carry positional and keyword arguments.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;

  const Value* get(size_t index, const std::string& key) const {
    if (index < pos.size()) return &pos[index];
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
  if (a.number() && b.number()) return a.as_double() == b.as_double();
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::String: return a.s.text == b.s.text;
    case Value::Kind::Array:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    case Value::Kind::Object:
      if (a.dict == b.dict) return true;
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
  if (a.number() && b.number()) return a.as_double() < b.as_double();
  if (a.is(Value::Kind::String) && b.is(Value::Kind::String)) return a.s.text < b.s.text;
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
    case Value::Kind::Array: return *v.list;
    case Value::Kind::Object: {
      if (v.is_namespace) fail(line, "a namespace is not iterable");
      List keys;
      for (const auto& [k, x] : v.dict->items) keys.push_back(Value::string(k));
      return keys;
    }
    case Value::Kind::String: {
      List chars;
      const std::vector<size_t> starts = char_starts(v.s.text);
      for (size_t k = 0; k < starts.size(); ++k) {
        const size_t e = k + 1 < starts.size() ? starts[k + 1] : v.s.text.size();
        chars.push_back(Value::string(v.s.substr(starts[k], e)));
      }
      return chars;
    }
    default: fail(line, kind_name(v) + " is not iterable");
  }
}

bool contains(const Value& container, const Value& item, int line) {
  switch (container.kind) {
    case Value::Kind::String:
      return container.s.text.find(want_string(item, line, "'in' on a string").text) != std::string::npos;
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
                   py_repr(key));
  }
  if (obj.is(Value::Kind::Object)) {
    if (!key.is(Value::Kind::String)) return Value::undefined();
    const Value* v = obj.dict->find(key.s.text);
    return v != nullptr ? *v : Value::undefined(key.s.text);
  }
  if (obj.is(Value::Kind::Array) || obj.is(Value::Kind::String)) {
    if (!key.is(Value::Kind::Int)) return Value::undefined();
    const List items = obj.is(Value::Kind::Array) ? List() : iterate(obj, line);
    const List& seq = obj.is(Value::Kind::Array) ? *obj.list : items;
    int64_t k = key.i;
    const auto n = static_cast<int64_t>(seq.size());
    if (k < 0) k += n;
    if (k < 0 || k >= n) return Value::undefined();
    return seq[static_cast<size_t>(k)];
  }
  return Value::undefined();
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
  if (name == "divisibleby") return want_int(v, line, "test 'divisibleby'") % want_int(arg(0), line, "test 'divisibleby'") == 0;
  if (name == "lower") {
    const std::string& t = want_string(v, line, "test 'lower'").text;
    return std::none_of(t.begin(), t.end(), [](char c) { return std::isupper(static_cast<unsigned char>(c)); });
  }
  if (name == "upper") {
    const std::string& t = want_string(v, line, "test 'upper'").text;
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
    Value key = Value::string(part);
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      key = Value::integer(std::stoll(part));
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

Value apply_filter(const std::string& name, const Value& v, const Args& args, int line) {
  const std::string what = "filter '" + name + "'";
  if (name == "length" || name == "count") {
    if (v.is(Value::Kind::String)) return Value::integer(static_cast<int64_t>(char_starts(v.s.text).size()));
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
      Value pair = Value::of_list({Value::string(k), x});
      pair.is_tuple = true;
      out.push_back(std::move(pair));
    }
    return Value::of_list(std::move(out));
  }
  if (name == "int") {
    if (v.is(Value::Kind::Float)) return Value::integer(static_cast<int64_t>(v.f));
    if (v.is(Value::Kind::Int) || v.is(Value::Kind::Bool)) return Value::integer(want_int(v, line, what));
    if (v.is(Value::Kind::String)) {
      int64_t x = 0;
      const std::string t = strip(v.s, true, true, std::nullopt).text;
      auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), x);
      if (ec == std::errc() && p == t.data() + t.size()) return Value::integer(x);
    }
    const Value* d = args.get(0, "default");
    return d != nullptr ? *d : Value::integer(0);
  }
  if (name == "float") {
    if (v.number()) return Value::real(v.as_double());
    if (v.is(Value::Kind::String)) {
      try {
        size_t used = 0;
        const double x = std::stod(v.s.text, &used);
        if (used == v.s.text.size()) return Value::real(x);
      } catch (const std::exception&) {
      }
    }
    const Value* d = args.get(0, "default");
    return d != nullptr ? *d : Value::real(0.0);
  }
  if (name == "abs") {
    if (v.is(Value::Kind::Int)) return Value::integer(v.i < 0 ? -v.i : v.i);
    if (v.is(Value::Kind::Float)) return Value::real(std::fabs(v.f));
    fail(line, what + ": expected a number, found " + kind_name(v));
  }
  if (name == "tojson") {
    std::optional<int64_t> indent;
    if (const Value* i = args.get(0, "indent"); i != nullptr && !i->is(Value::Kind::None)) indent = want_int(*i, line, what);
    std::string out;
    dump_json(v, indent, 0, out, line);
    return Value::string(out);
  }
  if (name == "selectattr") return select(v, args, true, true, line);
  if (name == "rejectattr") return select(v, args, true, false, line);
  if (name == "select") return select(v, args, false, true, line);
  if (name == "reject") return select(v, args, false, false, line);
  if (name == "map") {
    List out;
    const Value* attr = args.get(99, "attribute");
    for (const Value& item : iterate(v, line)) {
      if (attr != nullptr) {
        Value x = attribute_of(item, want_string(*attr, line, what).text, line);
        if (x.is(Value::Kind::Undefined)) {
          if (const Value* d = args.get(99, "default"); d != nullptr) x = *d;
        }
        out.push_back(x);
      } else {
        if (args.pos.empty()) fail(line, what + " needs a filter name or attribute=");
        Args rest;
        rest.pos.assign(args.pos.begin() + 1, args.pos.end());
        out.push_back(apply_filter(want_string(args.pos[0], line, what).text, item, rest, line));
      }
    }
    return Value::of_list(std::move(out));
  }
  if (name == "replace") {
    const Str& s = want_string(v, line, what);
    const std::string from = to_str(args.pos.size() > 0 ? args.pos[0] : Value::string(std::string())).text;
    const std::string to = to_str(args.pos.size() > 1 ? args.pos[1] : Value::string(std::string())).text;
    if (args.pos.size() < 2) fail(line, what + " needs (old, new)");
    int64_t count = args.pos.size() > 2 ? want_int(args.pos[2], line, what) : -1;
    std::string out;
    size_t p = 0;
    if (from.empty()) {
      out = s.text;  // Python inserts `to` between characters; no chat template does that
    } else {
      size_t f;
      while (count != 0 && (f = s.text.find(from, p)) != std::string::npos) {
        out += s.text.substr(p, f - p) + to;
        p = f + from.size();
        --count;
      }
      out += s.text.substr(p);
    }
    Str r{out, {}};
    if (s.has_data() && !out.empty()) r.data.emplace_back(0, out.size());  // conservatively all data
    return Value::string(r);
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
          out.push_back(Value::string(s.substr(p, e)));
          if (max_split > 0) --max_split;
          p = e;
          if (max_split == 0 && p < t.size()) max_split = 0;
        }
      } else {
        const std::string& d = want_string(*sep, line, what).text;
        if (d.empty()) fail(line, what + ": empty separator");
        size_t p = 0, f;
        while (max_split != 0 && (f = s.text.find(d, p)) != std::string::npos) {
          out.push_back(Value::string(s.substr(p, f)));
          p = f + d.size();
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
  Value eval(Scope&) const override { return value; }
};

struct NameRef final : Expr {
  std::string name;
  Value eval(Scope& s) const override {
    const Value* v = s.lookup(name);
    return v != nullptr ? *v : Value::undefined(name);
  }
};

struct ListExpr final : Expr {
  std::vector<ExprPtr> items;
  bool tuple = false;
  Value eval(Scope& s) const override {
    List out;
    for (const auto& e : items) out.push_back(e->eval(s));
    Value v = Value::of_list(std::move(out));
    v.is_tuple = tuple;
    return v;
  }
};

struct DictExpr final : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(Scope& s) const override {
    auto d = std::make_shared<Dict>();
    for (const auto& [k, v] : items) d->set(to_str(k->eval(s)).text, v->eval(s));
    return Value::of_dict(std::move(d));
  }
};

struct Attr final : Expr {
  ExprPtr obj;
  std::string name;
  Value eval(Scope& s) const override {
    const Value o = obj->eval(s);
    if (o.is(Value::Kind::Undefined)) {
      fail(line, (o.name.empty() ? std::string("a value") : "'" + o.name + "'") + " is undefined, so it has no attribute '" + name + "'");
    }
    return get_item(o, Value::string(name), line);
  }
};

struct Subscript final : Expr {
  ExprPtr obj, index;
  Value eval(Scope& s) const override { return get_item(obj->eval(s), index->eval(s), line); }
};

struct Slice final : Expr {
  ExprPtr obj, start, stop, step;
  Value eval(Scope& s) const override {
    const Value o = obj->eval(s);
    const bool is_str = o.is(Value::Kind::String);
    if (!is_str && !o.is(Value::Kind::Array)) fail(line, "cannot slice " + kind_name(o));
    const List items = is_str ? iterate(o, line) : *o.list;
    const auto n = static_cast<int64_t>(items.size());
    auto opt = [&](const ExprPtr& e) -> std::optional<int64_t> {
      if (!e) return std::nullopt;
      const Value v = e->eval(s);
      if (v.is(Value::Kind::None)) return std::nullopt;
      return want_int(v, line, "slice index");
    };
    const int64_t st = opt(step).value_or(1);
    if (st == 0) fail(line, "slice step cannot be zero");
    auto clamp = [&](std::optional<int64_t> x, int64_t def) {
      if (!x) return def;
      int64_t k = *x < 0 ? *x + n : *x;
      return st > 0 ? std::clamp<int64_t>(k, 0, n) : std::clamp<int64_t>(k, -1, n - 1);
    };
    const int64_t b = clamp(opt(start), st > 0 ? 0 : n - 1);
    const int64_t e = clamp(opt(stop), st > 0 ? n : -1);
    List out;
    for (int64_t k = b; st > 0 ? k < e : k > e; k += st) out.push_back(items[static_cast<size_t>(k)]);
    if (!is_str) return Value::of_list(std::move(out));
    Str r;
    for (const Value& c : out) r.append(c.s);
    return Value::string(r);
  }
};

struct Unary final : Expr {
  std::string op;
  ExprPtr operand;
  Value eval(Scope& s) const override {
    const Value v = operand->eval(s);
    if (op == "not") return Value::boolean(!truthy(v));
    if (v.is(Value::Kind::Int)) return Value::integer(op == "-" ? -v.i : v.i);
    if (v.is(Value::Kind::Float)) return Value::real(op == "-" ? -v.f : v.f);
    fail(line, "unary " + op + " needs a number, found " + kind_name(v));
  }
};

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

struct Binary final : Expr {
  std::string op;
  ExprPtr lhs, rhs;
  Value eval(Scope& s) const override {
    if (op == "and") {
      Value a = lhs->eval(s);
      return truthy(a) ? rhs->eval(s) : a;
    }
    if (op == "or") {
      Value a = lhs->eval(s);
      return truthy(a) ? a : rhs->eval(s);
    }
    const Value a = lhs->eval(s);
    const Value b = rhs->eval(s);
    if (op == "==") return Value::boolean(equal(a, b));
    if (op == "!=") return Value::boolean(!equal(a, b));
    if (op == "<") return Value::boolean(less(a, b, line));
    if (op == ">") return Value::boolean(less(b, a, line));
    if (op == "<=") return Value::boolean(!less(b, a, line));
    if (op == ">=") return Value::boolean(!less(a, b, line));
    if (op == "in") return Value::boolean(contains(b, a, line));
    if (op == "not in") return Value::boolean(!contains(b, a, line));
    if (op == "~") {
      Str r = to_str(a);
      r.append(to_str(b));
      return Value::string(r);
    }
    if (op == "+") {
      if (a.is(Value::Kind::String) && b.is(Value::Kind::String)) {
        Str r = a.s;
        r.append(b.s);
        return Value::string(r);
      }
      if (a.is(Value::Kind::Array) && b.is(Value::Kind::Array)) {
        List r = *a.list;
        r.insert(r.end(), b.list->begin(), b.list->end());
        return Value::of_list(std::move(r));
      }
    }
    if (op == "*" && (a.is(Value::Kind::String) || a.is(Value::Kind::Array)) && b.is(Value::Kind::Int)) {
      if (a.is(Value::Kind::String)) {
        Str r;
        for (int64_t k = 0; k < b.i; ++k) r.append(a.s);
        return Value::string(r);
      }
      List r;
      for (int64_t k = 0; k < b.i; ++k) r.insert(r.end(), a.list->begin(), a.list->end());
      return Value::of_list(std::move(r));
    }
    if (!a.number() || !b.number()) {
      fail(line, "unsupported operand types for " + op + ": " + kind_name(a) +
                     (a.is(Value::Kind::Undefined) && !a.name.empty() ? " ('" + a.name + "')" : "") + " and " + kind_name(b) +
                     (b.is(Value::Kind::Undefined) && !b.name.empty() ? " ('" + b.name + "')" : ""));
    }
    const bool ints = !a.is(Value::Kind::Float) && !b.is(Value::Kind::Float);
    const int64_t ai = ints ? want_int(a, line, op) : 0, bi = ints ? want_int(b, line, op) : 0;
    const double af = a.as_double(), bf = b.as_double();
    if (op == "+") return ints ? Value::integer(ai + bi) : Value::real(af + bf);
    if (op == "-") return ints ? Value::integer(ai - bi) : Value::real(af - bf);
    if (op == "*") return ints ? Value::integer(ai * bi) : Value::real(af * bf);
    if (op == "/") {
      if (bf == 0.0) fail(line, "division by zero");
      return Value::real(af / bf);
    }
    if (op == "//" || op == "%") {
      if (bf == 0.0) fail(line, op == "%" ? "modulo by zero" : "division by zero");
      if (ints) return Value::integer(op == "//" ? floor_div(ai, bi) : ai - floor_div(ai, bi) * bi);
      const double q = std::floor(af / bf);
      return Value::real(op == "//" ? q : af - q * bf);
    }
    if (op == "**") {
      if (ints && bi >= 0) {
        int64_t r = 1;
        for (int64_t k = 0; k < bi; ++k) r *= ai;
        return Value::integer(r);
      }
      return Value::real(std::pow(af, bf));
    }
    fail(line, "unsupported operator " + op);
  }
};

struct Conditional final : Expr {
  ExprPtr cond, then, otherwise;  // otherwise may be null: undefined
  Value eval(Scope& s) const override {
    if (truthy(cond->eval(s))) return then->eval(s);
    return otherwise ? otherwise->eval(s) : Value::undefined();
  }
};

struct FilterExpr final : Expr {
  ExprPtr operand;
  std::string name;
  ArgExprs args;
  Value eval(Scope& s) const override { return apply_filter(name, operand->eval(s), args.eval(s), line); }
};

struct TestExpr final : Expr {
  ExprPtr operand;
  std::string name;
  ArgExprs args;
  bool negated = false;
  Value eval(Scope& s) const override { return Value::boolean(run_test(name, operand->eval(s), args.eval(s), line) != negated); }
};

struct Call final : Expr {
  ExprPtr callee;  // NameRef (a global function) or Attr (a method)
  ArgExprs args;
  Value eval(Scope& s) const override {
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
        for (const auto& [k, v] : p.dict->items) d->set(k, v);
      }
      for (const auto& [k, v] : a.kw) d->set(k, v);
      Value ns = Value::of_dict(std::move(d));
      ns.is_namespace = true;
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
      List out;
      for (int64_t k = b; st > 0 ? k < e : k > e; k += st) {
        out.push_back(Value::integer(k));
        if (out.size() > 100000) fail(line, "range() is too long for a chat template");
      }
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
  std::string text;
  Flow render(Scope&, Str& out) const override {
    out.text += text;
    return Flow::Normal;
  }
};

struct OutputNode final : Node {
  ExprPtr expr;
  Flow render(Scope& s, Str& out) const override {
    out.append(to_str(expr->eval(s)));
    return Flow::Normal;
  }
};

struct IfNode final : Node {
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body otherwise;
  Flow render(Scope& s, Str& out) const override {
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

  Flow render(Scope& s, Str& out) const override {
    const List all = iterate(iterable->eval(s), line);
    List items;
    if (filter) {
      for (const Value& item : all) {
        s.frames.emplace_back();
        bind(s, item);
        const bool keep = truthy(filter->eval(s));
        s.frames.pop_back();
        if (keep) items.push_back(item);
      }
    } else {
      items = all;
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      // Each iteration is a scope of its own, as in Jinja: a set inside the body is gone at the
      // next iteration and after the loop (hence namespace()).
      s.frames.emplace_back();
      auto loop = std::make_shared<Dict>();
      loop->set("index", Value::integer(k + 1));
      loop->set("index0", Value::integer(k));
      loop->set("revindex", Value::integer(n - k));
      loop->set("revindex0", Value::integer(n - k - 1));
      loop->set("first", Value::boolean(k == 0));
      loop->set("last", Value::boolean(k == n - 1));
      loop->set("length", Value::integer(n));
      loop->set("previtem", k > 0 ? items[static_cast<size_t>(k - 1)] : Value::undefined("loop.previtem"));
      loop->set("nextitem", k + 1 < n ? items[static_cast<size_t>(k + 1)] : Value::undefined("loop.nextitem"));
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
  Flow render(Scope& s, Str&) const override {
    Value v;
    if (value) {
      v = value->eval(s);
    } else {
      Str captured;
      render_body(block, s, captured);
      v = Value::string(captured);
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
  Flow render(Scope&, Str&) const override { return flow; }
};

struct BlockNode final : Node {  // generation blocks: rendered through
  Body body;
  Flow render(Scope& s, Str& out) const override { return render_body(body, s, out); }
};

// ---- parser -----------------------------------------------------------------------------

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

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
        next();
        c->otherwise = parse_or_condition(true);
      }
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
      auto u = std::make_unique<Unary>();
      u->line = line;
      u->op = "not";
      u->operand = parse_not();
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
      auto u = std::make_unique<Unary>();
      u->line = t.line;
      u->op = t.text;
      u->operand = parse_unary(false);
      e = std::move(u);
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filters ? parse_filters(std::move(e)) : std::move(e);
  }

  ArgExprs parse_call_args() {
    ArgExprs a;
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
          e = std::move(s);
          continue;
        }
        a->name = name_token("an attribute name");
        e = std::move(a);
      } else if (at_op("[")) {
        next();
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
          e = std::move(sl);
        } else {
          expect_op("]");
          auto s = std::make_unique<Subscript>();
          s->line = line;
          s->obj = std::move(e);
          s->index = std::move(start);
          e = std::move(s);
        }
      } else if (at_op("(")) {
        auto c = std::make_unique<Call>();
        c->line = line;
        c->callee = std::move(e);
        c->args = parse_call_args();
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
      next();
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
        e = std::move(l);
      }
      expect_op(")");
      return e;
    }
    if (at_op("[")) {
      next();
      auto l = std::make_unique<ListExpr>();
      l->line = line;
      while (!at_op("]")) {
        l->items.push_back(parse_expr());
        if (!at_op(",")) break;
        next();
      }
      expect_op("]");
      return l;
    }
    if (at_op("{")) {
      next();
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
      return d;
    }
    fail(line, "expected an expression, found " + describe_token(t));
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
};

struct Root final : Node {
  Body body;
  Flow render(Scope& s, Str& out) const override { return render_body(body, s, out); }
};

std::string where(const std::string& name, int line) { return name + ", line " + std::to_string(line); }

}  // namespace

Template::Template(const std::string& source, std::string name) : name_(std::move(name)) {
  try {
    auto root = std::make_shared<Root>();
    // Jinja drops a single trailing newline of the template (keep_trailing_newline=False).
    std::string text = source;
    if (!text.empty() && text.back() == '\n') {
      text.pop_back();
      if (!text.empty() && text.back() == '\r') text.pop_back();
    }
    root->body = Parser(Lexer(text).run()).parse_template();
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
  Scope scope;
  scope.template_name = &name_;
  scope.frames.emplace_back();
  if (context.is_object()) {
    for (const auto& [k, v] : context.items()) scope.set(k, from_json(v, data_keys.count(k) != 0));
  }
  scope.frames.emplace_back();  // the template's own top-level sets
  Str out;
  try {
    root_->render(scope, out);
  } catch (const RenderError& e) {
    throw InputError(where(name_, e.line) + ": " + e.message);
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
