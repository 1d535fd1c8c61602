#include <QTest>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/safety/llama_guard.h"
#include "core/text/jinja.h"
#include "support/errors.h"
#include "support/timing.h"

using icet::text::jinja::RenderLimits;
using icet::text::jinja::Span;
using icet::text::jinja::Template;

namespace {

const std::filesystem::path kTemplates = std::filesystem::path(ICET_FIXTURES) / "chat_templates";

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string joined(const std::vector<Span>& spans, bool data) {
  std::string out;
  for (const Span& s : spans) {
    if (s.data == data) out += s.text;
  }
  return out;
}

// The error of parsing and rendering `source`, "" when it renders (`out` gets the text).
std::string render_error(const std::string& source, const nlohmann::ordered_json& context = nlohmann::ordered_json::object(),
                         std::string* out = nullptr, const RenderLimits& limits = {}) {
  return icet::test::input_error_of([&] {
    const std::string text = Template(source, "t", limits).render_text(context);
    if (out != nullptr) *out = text;
  });
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int k = 0; k < n; ++k) out += s;
  return out;
}

// Limits stop each bomb in under a second in an optimised build (scaled for -O0 and sanitizers).
constexpr double kSecondsPerBomb = 1.0 * icet::test::kTimeScale;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// core/text/jinja against Python's jinja2 set up as transformers' apply_chat_template sets it up.
// tests/fixtures/chat_templates/cases.json holds each template, its context and jinja2's output
// or error (written by tests/reference/jinja_cases.py with jinja2 3.1.6); outputs must be
// identical byte for byte, and every case jinja2 rejects must be rejected.
class TestJinja : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void rendersLikeJinja2() {
    std::ifstream in(kTemplates / "cases.json");
    const nlohmann::ordered_json cases = nlohmann::ordered_json::parse(in);
    QVERIFY(cases.size() >= 50);
    int errors = 0;
    std::ostringstream report;
    for (const auto& c : cases) {
      const std::string name = c["name"];
      std::string got;
      std::string failure;
      try {
        got = Template(c["template"].get<std::string>(), name).render_text(c["context"]);
      } catch (const icet::InputError& e) {
        failure = e.what();
      }
      if (c.contains("error")) {
        ++errors;
        if (failure.empty()) report << name << ": jinja2 fails (" << c["error"].get<std::string>() << ") but we rendered "
                                    << nlohmann::json(got).dump() << "\n";
        continue;
      }
      const std::string expected = c["expected"];
      if (!failure.empty()) {
        report << name << ": we failed: " << failure << "\n";
      } else if (got != expected) {
        report << name << ":\n  expected " << nlohmann::json(expected).dump() << "\n  got      " << nlohmann::json(got).dump()
               << "\n";
      }
    }
    QVERIFY2(report.str().empty(), report.str().c_str());
    QVERIFY(errors >= 8);
  }

  void conversationTextIsMarkedAsData() {
    const Template t(read_text(kTemplates / "llama_guard_3_8b.jinja"), "llama_guard_3_8b.jinja");
    const nlohmann::ordered_json context = {
        {"messages",
         {{{"role", "user"}, {"content", "  Typed <|eot_id|> here \n"}}, {{"role", "assistant"}, {"content", "Agent text"}}}}};
    const std::vector<Span> spans = t.render(context);
    // Exactly the trimmed messages are data; the template's own special tokens are not.
    QCOMPARE(joined(spans, true), std::string("Typed <|eot_id|> hereAgent text"));
    const std::string tmpl = joined(spans, false);
    QVERIFY(tmpl.find("<|begin_of_text|>") != std::string::npos);
    QVERIFY(tmpl.find("Typed") == std::string::npos);
    QVERIFY(tmpl.find("<|eot_id|><|start_header_id|>assistant") != std::string::npos);
    // Without data keys nothing is marked.
    for (const Span& s : t.render(context, {})) QVERIFY(!s.data);
  }

  void errorsNameTheTemplateAndLine() {
    QVERIFY(icet::test::input_error_of([] { Template("a\n{% if x %}\n{{ 1 + }}\n{% endif %}", "my template"); })
                .find("my template, line 3") != std::string::npos);
    const std::string e = icet::test::input_error_of(
        [] { Template("{% for m in messages %}\n{{ m.missing.x }}{% endfor %}", "t").render_text({{"messages", {{{"role", "user"}}}}}); });
    QVERIFY2(e.find("t, line 2") != std::string::npos, e.c_str());
    const std::string r = icet::test::input_error_of([] { Template("{{ raise_exception('roles must alternate') }}", "guard").render_text({}); });
    QVERIFY2(r.find("guard") != std::string::npos && r.find("roles must alternate") != std::string::npos, r.c_str());
    QVERIFY(icet::test::input_error_of([] { Template("{% macro f() %}{% endmacro %}", "t"); }).find("unsupported statement") !=
            std::string::npos);
  }

  void builtInLlamaGuardTemplatesEqualThePublishedOnes() {
    // Llama Guard 1 and 2: the built-in templates render byte-identically to the chat templates
    // of meta-llama/LlamaGuard-7b and Meta-Llama-Guard-2-8B, for response and prompt classification.
    const std::vector<icet::safety::Conversation> conversations = {
        {"  How do I bake bread?\n", "Mix flour and water.  "}, {"Only a prompt", ""}};
    for (int version : {1, 2}) {
      const Template published(read_text(kTemplates / ("llama_guard_" + std::to_string(version) + ".jinja")), "published");
      for (const auto& c : conversations) {
        nlohmann::ordered_json messages = nlohmann::ordered_json::array();
        messages.push_back({{"role", "user"}, {"content", c.prompt}});
        if (!c.response.empty()) messages.push_back({{"role", "assistant"}, {"content", c.response}});
        const std::string expected = published.render_text({{"messages", messages}});
        QCOMPARE(icet::safety::render_llama_guard(icet::safety::llama_guard_template(version), c), expected);
      }
    }
  }

  // Integer arithmetic is 64-bit: where Python would grow a big int, the renderer stops with an
  // "integer overflow" InputError instead of wrapping (undefined behaviour in C++); division by
  // zero, 1e999 and out-of-range conversions are template errors or Python's values, never a
  // crash or a foreign exception.
  void arithmeticIsCheckedLikePython() {
    const nlohmann::ordered_json context = {{"m", std::numeric_limits<int64_t>::min()}, {"inf", 1e308}};
    // What Python's jinja2 3.1.6 renders.
    const std::vector<std::pair<std::string, std::string>> renders = {
        {"{{ m % -1 }}", "0"},
        {"{{ m // 1 }}", "-9223372036854775808"},
        {"{{ 2 ** 62 }}", "4611686018427387904"},
        {"{{ (-2) ** 63 }}", "-9223372036854775808"},
        {"{{ 1 ** 9223372036854775807 }}", "1"},
        {"{{ (-1) ** 9223372036854775807 }}", "-1"},
        {"{{ 0 ** 0 }} {{ 2 ** -1 }} {{ 2.0 ** 3 }}", "1 0.5 8.0"},
        {"{{ 1e999 }} {{ -1e999 }} {{ 1e-999 }} {{ 1_000.5e1_0 }}", "inf -inf 0.0 10005000000000.0"},
        {"{{ '1e999'|float }} {{ ' 2.5 '|float }} {{ 'abc'|float }} {{ 'nan'|float }} {{ '-1E-999'|float }}", "inf 2.5 0.0 nan -0.0"},
        {"{{ (0.0 * 1e999)|int(7) }} {{ '42.9'|int }} {{ ' +42 '|int }} {{ '1e3'|int }} {{ -42.9|int }}", "7 42 42 1000 -42"},
        {"{{ -7 % 3 }} {{ 7 % -3 }} {{ -7.5 % 2 }} {{ 7.5 % -2 }} {{ -7.5 // 2 }}", "2 -2 0.5 -0.5 -4.0"},
        {"{{ [[1]]|map(attribute='99999999999999999999')|first is undefined }}", "True"},
        {"{% for i in range(9223372036854775806, 9223372036854775807, 10) %}{{ i }}{% endfor %}", "9223372036854775806"},
        {"{{ range(m, 9223372036854775807, 9223372036854775807)|list }}", "[-9223372036854775808, -1, 9223372036854775806]"},
        {"{{ [1, 2, 3][1::9223372036854775807] }} {{ 'abc'[1::9223372036854775807] }} {{ [1, 2, 3][::m] }}", "[2] b [3]"},
        {"{{ 6 is divisibleby 3 }} {{ m is divisibleby(-1) }}", "True True"},
        {"{{ 'h\u00e9llo'[::-2] }} {{ 'h\u00e9llo'[1] }} {{ 'h\u00e9llo'[-4:-2] }} [{{ 'h\u00e9llo'[10:2] }}]", "olh \u00e9 \u00e9l []"},
        {"{{ 1e13 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 0.0001 }} {{ -123.456 }} {{ 1e22 }} {{ 0.1 + 0.2 }} {{ 12345678901234567.0 }} {{ -0.0 }}",
         "10000000000000.0 1e+16 1.5e-05 0.0001 -123.456 1e+22 0.30000000000000004 1.2345678901234568e+16 -0.0"},
    };
    const std::vector<std::pair<std::string, std::string>> errors = {
        {"{{ 5 % 0 }}", "modulo by zero"},
        {"{{ 5 // 0 }}", "division or modulo by zero"},
        {"{{ 5.5 % 0.0 }}", "float modulo"},
        {"{{ 1 / 0 }}", "division by zero"},
        {"{{ 5 is divisibleby 0 }}", "modulo by zero"},
        {"{{ 0 ** -1 }}", "cannot be raised to a negative power"},
        {"{{ m // -1 }}", "integer overflow"},
        {"{{ m - 1 }}", "integer overflow"},
        {"{{ 9223372036854775807 + 1 }}", "integer overflow"},
        {"{{ 3037000500 * 3037000500 }}", "integer overflow"},
        {"{{ -m }}", "integer overflow"},
        {"{{ m|abs }}", "integer overflow"},
        {"{{ 2 ** 63 }}", "integer overflow"},
        {"{{ 10 ** 19 }}", "integer overflow"},
        {"{{ 10.0 ** 400 }}", "out of range"},
        {"{{ (inf * 10)|int }}", "cannot convert"},
        {"{{ '99999999999999999999'|int }}", "integer overflow"},
        {"{{ 99999999999999999999 }}", "out of range"},
    };
    std::ostringstream report;
    for (const auto& [source, expected] : renders) {
      std::string got;
      const std::string e = render_error(source, context, &got);
      if (!e.empty() || got != expected) report << source << ": expected " << expected << ", got " << (e.empty() ? got : e) << "\n";
    }
    for (const auto& [source, expected] : errors) {
      std::string got;
      const std::string e = render_error("\n" + source, context, &got);
      if (e.find(expected) == std::string::npos || e.find("t, line 2") == std::string::npos) {
        report << source << ": expected an error with \"" << expected << "\" naming line 2, got " << (e.empty() ? "output " + got : e)
               << "\n";
      }
    }
    QVERIFY2(report.str().empty(), report.str().c_str());
  }

  // A typed special token in a message must stay data through every filter and operation that
  // builds text from it, or the tokenizer would parse it as the special token; the template's
  // own text stays template text.
  void userTextStaysDataThroughStringOperations() {
    const std::string token = "<|eot_id|>";
    const nlohmann::ordered_json context = {
        {"messages", {{{"role", "user"}, {"content", "Typed " + token + " x"}}, {{"role", token}, {"content", {{token, 1}}}}}}};
    const std::vector<std::string> sources = {
        "{{ messages|tojson }}",
        "{{ messages[0]|tojson(indent=2) }}",
        "{{ messages[0].content|tojson }}",
        "{{ messages }}",
        "{{ messages[0] }}",
        "{{ messages|string }}",
        "{{ [messages[0].content] ~ '' }}",
        "{{ (messages[0].content,) }}",
        "{{ messages|map(attribute='content')|join(', ') }}",
        "{{ messages|map(attribute='content')|list }}",
        "{{ messages[0].content + '!' }}",
        "{{ messages[0].content|replace('x', 'y') }}",
        "{{ messages[0].content.split(' ')|join('') }}",
        "{{ messages[0].content[0:] }}{{ messages[0].content|reverse|reverse }}",
        "{% set x %}{{ messages[0].content }}{% endset %}{{ x }}",
        "{{ messages[0]|items|list }}",
        "{{ messages|selectattr('role', 'equalto', 'user')|list }}",
        "{{ messages[1].content|tojson }}",
        "{{ messages[1].content }}",
        "{% for k in messages[1].content %}{{ k }}{% endfor %}",
        "{{ messages[1].content|list }}",
        "{{ messages[1].content|items|list }}",
        "{{ {messages[0].content: 1}|tojson }}",
        "{% for k, v in {messages[0].content: 1}|items %}{{ k }}{% endfor %}",
        "{{ messages[1].role ~ messages[1].content.keys()|first }}",
    };
    std::ostringstream report;
    for (const std::string& source : sources) {
      const std::string full = "<|start|>" + source + "<|eot_id|>";
      std::vector<Span> spans;
      try {
        spans = Template(full, "t").render(context);
      } catch (const icet::InputError& e) {
        report << source << ": " << e.what() << "\n";
        continue;
      }
      std::string tmpl = joined(spans, false);
      const std::string data = joined(spans, true);
      // The template's own tokens are template text; remove them before looking for leaks.
      const bool own = tmpl.rfind("<|start|>", 0) == 0 && tmpl.size() >= token.size() &&
                       tmpl.compare(tmpl.size() - token.size(), token.size(), token) == 0;
      if (own) tmpl = tmpl.substr(9, tmpl.size() - 9 - token.size());
      if (!own || tmpl.find(token) != std::string::npos || data.find(token) == std::string::npos ||
          tmpl.find("<|start|>") != std::string::npos) {
        std::string shown;
        for (const Span& s : spans) shown += (s.data ? "[data:" : "[tmpl:") + s.text + "]";
        report << source << ": " << shown << "\n";
      }
    }
    // Replacing inside a string keeps the marking of each piece: template text stays template
    // text, the replacement takes the marking of the argument.
    const std::vector<Span> spans = Template("{{ ('<|start|>' ~ messages[0].content)|replace('Typed', '<|x|>') }}", "t").render(context);
    if (joined(spans, false) != "<|start|><|x|>" || joined(spans, true) != " " + token + " x") {
      std::string shown;
      for (const Span& s : spans) shown += (s.data ? "[data:" : "[tmpl:") + s.text + "]";
      report << "replace: " << shown << "\n";
    }
    QVERIFY2(report.str().empty(), report.str().c_str());
  }

  // Templates that loop forever, print gigabytes or allocate without end stop fast with an
  // error naming the limit; so does repeated work on big strings.
  void renderLimitsStopBombs() {
    struct Bomb {
      std::string source, limit;
    };
    const std::vector<Bomb> bombs = {
        {"{% for i in range(10**9) %}{% endfor %}", "max_steps"},
        {"{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}", "max_steps"},
        {"{% for i in range(100000) %}{% for j in range(100000) %}" + repeat("x", 1000) + "{% endfor %}{% endfor %}", "max_output_bytes"},
        {"{{ 'x' * 10**9 }}", "max_output_bytes"},
        {"{% set x = 'x' * 10**9 %}", "max_output_bytes"},
        {"{{ ('x' * 1000000) * 1000000 }}", "max_output_bytes"},
        {"{{ [1] * 10**9 }}", "max_steps"},
        {"{{ ['x' * 1000000] * 100000 }}", "max_steps"},
        {"{% set ns = namespace(l=['x' * 1000000]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "max_steps"},
        {"{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "max_output_bytes"},
        {"{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{% if 'y' in s %}{% endif %}{% endfor %}", "max_steps"},
        {"{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{% set t = s %}{% endfor %}", "max_steps"},
        {"{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{{ s|length }}{% endfor %}", "max_steps"},
        {"{{ ('a' * 8000000 ~ 'b') in ('a' * 16000000) }}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
         "max_steps"},
        {"{% set l = range(100000)|list %}{% for i in range(100000) %}{{ l|unique|length }}{% endfor %}", "max_steps"},
        {"{% set ns = namespace(a=['x' * 100000]) %}{% for i in range(40) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}",
         "max_output_bytes"},
        {"{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(60) %}{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}"
         "{{ ns.a == ns.b }}",
         "max_steps"},
    };
    std::ostringstream report;
    for (const Bomb& b : bombs) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::string e = render_error(b.source);
      const double s = seconds_since(t0);
      if (e.find(b.limit) == std::string::npos || s > kSecondsPerBomb) report << b.source.substr(0, 120) << ": " << s << " s, " << e << "\n";
      qInfo("%.3f s  %s  ->  %s", s, b.source.substr(0, 100).c_str(), e.c_str());
    }
    QVERIFY2(report.str().empty(), report.str().c_str());
  }

  // Deep nesting in the template or in the values it builds fails with an error naming
  // max_depth, or renders; the stack never overflows (parsing, rendering and freeing recurse).
  void deepNestingFailsCleanly() {
    const int n = 100000;
    std::string if_blocks, for_blocks;
    for (int k = 0; k < 10000; ++k) if_blocks += "{% if true %}";
    for (int k = 0; k < 10000; ++k) if_blocks += "{% endif %}";
    for (int k = 0; k < 10000; ++k) for_blocks += "{% for x in [1] %}";
    for (int k = 0; k < 10000; ++k) for_blocks += "{% endfor %}";
    std::string map_chain = "{{ ['a']|map(";
    for (int k = 0; k < 2000; ++k) map_chain += "'map', ";  // each level copies the arguments
    map_chain += "'string')|list }}";
    const std::vector<std::string> deep = {
        "{{ " + repeat("(", 10000) + "1" + repeat(")", 10000) + " }}",
        "{{ " + repeat("(", n) + "1" + repeat(")", n) + " }}",
        "{{ " + repeat("[", n) + "1" + repeat("]", n) + " }}",
        "{{ " + repeat("{'a': ", n) + "1" + repeat("}", n) + " }}",
        "{{ " + repeat("f(", n) + "1" + repeat(")", n) + " }}",
        "{{ x" + repeat("[0]", n) + " }}",
        "{{ x" + repeat(".a", n) + " }}",
        "{{ " + repeat("not ", n) + "1 }}",
        "{{ " + repeat("- ", n) + "1 }}",
        "{{ 1" + repeat(" + 1", n) + " }}",
        "{{ 'a'" + repeat(" ~ 'a'", n) + " }}",
        "{{ 1" + repeat(" == 1", n) + " }}",
        "{{ 'a'" + repeat("|trim", n) + " }}",
        "{{ 1" + repeat(" is defined", n) + " }}",
        "{{ 1" + repeat(" if true else 1", n) + " }}",
        "{{ 1" + repeat(" if true", n) + " }}",
        if_blocks,
        for_blocks,
        map_chain,
        "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
        "{% set ns = namespace(x={}) %}{% for i in range(100000) %}{% set ns.x = {'a': ns.x} %}{% endfor %}{{ ns.x|tojson }}",
        "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = dict(a=ns.x) %}{% endfor %}",
    };
    std::ostringstream report;
    for (const std::string& source : deep) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::string e = render_error(source, {{"x", nlohmann::ordered_json::array()}});
      const double s = seconds_since(t0);
      if (e.find("max_depth") == std::string::npos || s > kSecondsPerBomb) report << source.substr(0, 60) << ": " << s << " s, " << e << "\n";
      qInfo("%.3f s  %s  ->  %s", s, source.substr(0, 60).c_str(), e.c_str());
    }
    // Chains that are not nesting: namespaces referring to older ones, and to themselves.
    std::string out;
    std::string e = render_error(
        "{% set ns = namespace(x=none) %}{% for i in range(100000) %}{% set ns.x = namespace(x=ns.x) %}{% endfor %}done", {}, &out);
    if (!e.empty() || out != "done") report << "namespace chain: " << e << out << "\n";
    e = render_error(
        "{% set a = namespace() %}{% set a.s = a %}{% set b = namespace() %}{% set b.s = b %}{{ a == b }}{{ a == a }}{{ [a] == [a] }}", {},
        &out);
    if (!e.empty() || out != "FalseTrueTrue") report << "self-referencing namespaces: " << e << out << "\n";
    // A deep context is refused too.
    nlohmann::ordered_json ctx = 1;
    for (int k = 0; k < 1000; ++k) ctx = nlohmann::ordered_json::array({std::move(ctx)});
    e = render_error("{{ x|length }}", {{"x", ctx}});
    if (e.find("max_depth") == std::string::npos) report << "deep context: " << e << "\n";
    QVERIFY2(report.str().empty(), report.str().c_str());
  }

  // Nesting just inside max_depth renders (run under "ulimit -s 1024" it still does: the stack
  // use at the limit is well below the 8 MB threads get).
  void nestingWithinTheLimitRenders() {
    const int n = RenderLimits().max_depth - 6;
    std::string blocks, chain = "1", values = "{% set ns = namespace(x=1) %}{% for i in range(" + std::to_string(n) + ") %}";
    // Blocks and brackets count together: the parser recurses through both.
    for (int k = 0; k < n / 4; ++k) blocks += "{% for x in [1] %}{% if true %}";
    blocks += "{{ " + repeat("(", n / 2) + "x" + repeat(")", n / 2) + " }}";
    for (int k = 0; k < n / 4; ++k) blocks += "{% endif %}{% endfor %}";
    for (int k = 0; k < n; ++k) chain += k % 2 ? " + 1" : " - -1";
    values += "{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|tojson|length }}{{ ns.x|string|length }}{{ ns.x == ns.x }}";
    std::string map_chain = "{{ ['a']|map(";
    for (int k = 0; k < n; ++k) map_chain += "'map', ";
    map_chain += "'string')|list|length }}";
    std::string out;
    QCOMPARE(render_error(blocks, {}, &out), std::string());
    QCOMPARE(out, std::string("1"));
    QCOMPARE(render_error("{{ " + chain + " }}", {}, &out), std::string());
    QCOMPARE(out, std::to_string(1 + n));
    QCOMPARE(render_error(values, {}, &out), std::string());
    QCOMPARE(out, std::to_string(2 * n + 1) + std::to_string(2 * n + 1) + "True");
    QCOMPARE(render_error(map_chain, {}, &out), std::string());
    QCOMPARE(out, std::string("1"));
  }

  // The limits are the caller's to set; errors name the limit and its value.
  void renderLimitsAreConfigurable() {
    const std::string loop = "{% for i in range(300) %}{{ i }}{% endfor %}";
    QCOMPARE(render_error(loop), std::string());
    RenderLimits steps;
    steps.max_steps = 100;
    const std::string e = render_error(loop, {}, nullptr, steps);
    QVERIFY2(e.find("max_steps = 100") != std::string::npos && e.find("t, line 1") != std::string::npos, e.c_str());
    RenderLimits output;
    output.max_output_bytes = 10;
    const std::string o = render_error("{{ 'x' * 6 }}\n{{ 'y' * 6 }}", {}, nullptr, output);
    QVERIFY2(o.find("max_output_bytes = 10") != std::string::npos && o.find("t, line 2") != std::string::npos, o.c_str());
    RenderLimits depth;
    depth.max_depth = 3;
    QCOMPARE(render_error("{{ ((1)) }}", {}, nullptr, depth), std::string());
    const std::string d = render_error("{{ ((((1)))) }}", {}, nullptr, depth);
    QVERIFY2(d.find("max_depth = 3") != std::string::npos, d.c_str());
    QVERIFY(render_error("{% if 1 %}{% if 1 %}{% if 1 %}{% if 1 %}{% endif %}{% endif %}{% endif %}{% endif %}", {}, nullptr, depth)
                .find("max_depth = 3") != std::string::npos);
    QCOMPARE(Template("x", "t").limits().max_steps, RenderLimits().max_steps);
  }

  // The default limits leave room for every real template: the fixtures' templates, Llama 3
  // and Mistral render a 1,000-message conversation of 2 KB messages.
  void defaultLimitsFitLongConversations() {
    std::ifstream in(kTemplates / "cases.json");
    const nlohmann::ordered_json cases = nlohmann::ordered_json::parse(in);
    std::vector<std::pair<std::string, nlohmann::ordered_json>> templates;
    for (const auto& c : cases) {
      if (c["context"].contains("messages") && !c.contains("error")) templates.emplace_back(c["template"], c["context"]);
    }
    const nlohmann::ordered_json plain = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}};
    templates.emplace_back(  // meta-llama/Meta-Llama-3-8B-Instruct
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
        "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% "
        "endif %}",
        plain);
    templates.emplace_back(  // mistralai/Mistral-7B-Instruct-v0.2
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
        "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == "
        "'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + "
        "eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
        plain);
    const std::string text = repeat("Some words of a long message. ", 70);
    std::ostringstream report;
    for (const auto& [source, context] : templates) {
      nlohmann::ordered_json ctx = context;
      const nlohmann::ordered_json first = context["messages"][0];
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      for (int k = 0; k < 1000; ++k) {
        nlohmann::ordered_json m = first;
        m["role"] = k % 2 == 0 ? "user" : "assistant";
        if (m["content"].is_string()) {
          m["content"] = text;
        } else {
          for (auto& part : m["content"]) {
            if (part.contains("text")) part["text"] = text;
          }
        }
        messages.push_back(std::move(m));
      }
      ctx["messages"] = std::move(messages);
      const auto t0 = std::chrono::steady_clock::now();
      std::string out;
      const std::string e = render_error(source, ctx, &out);
      qInfo("%.3f s, %zu bytes: %s", seconds_since(t0), out.size(), source.substr(0, 50).c_str());
      if (!e.empty() || out.size() < 1000 * text.size()) report << source.substr(0, 80) << ": " << e << "\n";
    }
    QVERIFY2(report.str().empty(), report.str().c_str());
  }
};

QTEST_GUILESS_MAIN(TestJinja)
#include "test_jinja.moc"
