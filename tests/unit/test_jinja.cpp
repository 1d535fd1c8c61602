#include <QTest>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/base/error.h"
#include "core/safety/llama_guard.h"
#include "core/text/jinja.h"
#include "support/errors.h"

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
};

QTEST_GUILESS_MAIN(TestJinja)
#include "test_jinja.moc"
