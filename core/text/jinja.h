#pragma once

// The subset of Jinja2 that Hugging Face chat templates use, rendered as transformers'
// apply_chat_template renders them: ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks, the loopcontrols extension, raise_exception(), strftime_now() and
// transformers' tojson (json.dumps with ensure_ascii=False).
//
// Supported: {{ }}, {% %}, {# #} with "-" / "+" whitespace control; if/elif/else, for (tuple
// targets, loop.* variables, inline "if" filter, else), set (names and namespace attributes),
// break/continue, generation blocks (rendered through); literals, lists, dicts, tuples,
// attribute/subscript/slice access, arithmetic, comparison, in/not in, and/or/not, the
// "x if c else y" expression, "~" concatenation; the filters and tests chat templates use
// (length, trim, upper, lower, join, selectattr, map, tojson, defined, string, mapping, ...)
// and the string/dict methods (strip, split, startswith, items, get, ...). Anything else is an
// InputError that names the template and line, so an unsupported template fails loudly
// instead of rendering a wrong prompt.
//
// Provenance: strings taken from the context keys listed in `data_keys` (the conversation) stay
// marked as data through concatenation, trim and slicing, so a caller can tokenize them as
// plain text while the template's own text may hold special tokens.

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace icet::text::jinja {

// One piece of rendered output: template text, or text that came from the caller's data.
struct Span {
  std::string text;
  bool data = false;
};

struct Node;

class Template {
 public:
  // Parses `source`; `name` (e.g. "tokenizer_config.json chat_template") prefixes every error.
  // Throws icet::InputError for a syntax error or an unsupported construct.
  Template(const std::string& source, std::string name);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `context` (a JSON object: messages, bos_token, add_generation_prompt, ...;
  // ordered, because templates iterate dicts in insertion order).
  // Strings under the top-level keys in `data_keys` are marked as data in the output.
  // raise_exception() in the template and runtime errors (undefined attribute access, bad
  // operand types) throw icet::InputError naming the template and line.
  std::vector<Span> render(const nlohmann::ordered_json& context, const std::set<std::string>& data_keys = {"messages"}) const;
  // The concatenated text of render().
  std::string render_text(const nlohmann::ordered_json& context) const;

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::shared_ptr<const Node> root_;
};

}  // namespace icet::text::jinja
