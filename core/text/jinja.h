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
// Provenance: strings taken from the context keys listed in `data_keys` (the conversation), and
// dict keys there, stay marked as data through every operation that builds text from them
// (concatenation, join, replace, trim, slicing, split, tojson, str() of lists and dicts), so a
// caller can tokenize them as plain text while the template's own text may hold special tokens.

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
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

// Bounds on one render, so that a hostile or broken template fails with an InputError that
// names the limit instead of hanging, exhausting memory or overflowing the stack. The defaults
// are far above what real chat templates need: rendering 1,000 messages of 2 KB each (some
// 500K tokens, past any model's context) takes at most a sixth of max_steps and an eighth of
// max_output_bytes, while a template that runs into max_steps stops within 0.5 s (0.2-0.4 s
// measured on one x86 core).
struct RenderLimits {
  // Work: one step per expression evaluated, statement rendered, loop iteration, list item built
  // or compared, and per 64 bytes of text or values built, copied or searched (this also bounds
  // memory).
  uint64_t max_steps = 2'000'000;
  // Bytes of rendered output; no string value may be longer either.
  uint64_t max_output_bytes = 16u << 20;
  // Nesting of blocks and brackets, length of operator/filter/attribute chains, nesting of
  // lists and dicts, and filter calls inside filter calls: parsing, rendering and freeing
  // recurse that deep (at 256, well under 512 KB of stack). CPython itself stops at 200
  // nested brackets, so no template jinja2 renders comes near.
  int max_depth = 256;
};

struct Node;

class Template {
 public:
  // Parses `source`; `name` (e.g. "tokenizer_config.json chat_template") prefixes every error.
  // Throws icet::InputError for a syntax error, an unsupported construct or nesting deeper
  // than limits.max_depth; render() keeps to `limits`.
  Template(const std::string& source, std::string name, RenderLimits limits = {});
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `context` (a JSON object: messages, bos_token, add_generation_prompt, ...;
  // ordered, because templates iterate dicts in insertion order).
  // Strings under the top-level keys in `data_keys` are marked as data in the output.
  // raise_exception() in the template and runtime errors (undefined attribute access, bad
  // operand types, integer overflow, a limit of RenderLimits) throw icet::InputError naming the
  // template and line.
  std::vector<Span> render(const nlohmann::ordered_json& context, const std::set<std::string>& data_keys = {"messages"}) const;
  // The concatenated text of render().
  std::string render_text(const nlohmann::ordered_json& context) const;

  const std::string& name() const { return name_; }
  const RenderLimits& limits() const { return limits_; }

 private:
  std::string name_;
  RenderLimits limits_;
  std::shared_ptr<const Node> root_;
};

}  // namespace icet::text::jinja
