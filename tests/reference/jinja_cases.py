#!/usr/bin/env python3
"""Writes tests/fixtures/chat_templates/cases.json: Jinja templates with contexts and the text
Python's jinja2 renders for them, set up as transformers' apply_chat_template sets it up
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
tojson with ensure_ascii=False). test_jinja renders every case with core/text/jinja and
compares. Regenerate after adding cases:  python3 tests/reference/jinja_cases.py
"""
import json
import os

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
OUT = os.path.join(FIXTURES, "chat_templates", "cases.json")


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def read(path):
    with open(os.path.join(FIXTURES, path), encoding="utf-8") as f:
        return f.read()


def hf_template(folder):
    path = os.path.join(FIXTURES, "hf-reference", folder)
    if os.path.exists(os.path.join(path, "chat_template.json")):
        return json.load(open(os.path.join(path, "chat_template.json")))["chat_template"]
    return json.load(open(os.path.join(path, "tokenizer_config.json")))["chat_template"]


USER = {"role": "user", "content": "  How do I bake bread?\n"}
AGENT = {"role": "assistant", "content": "Mix flour and water.  "}
TRICKY = {"role": "user", "content": "Typed <|eot_id|> and [INST] and {{ not a tag }} \u00e9\U0001F600\t"}
PARTS = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is shown? "}]},
         {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]}]

CASES = [
    # Whitespace control: trim_blocks, lstrip_blocks, "-" and "+".
    ("trim_and_lstrip", "  {% if true %}\n  x\n  {% endif %}\n  {{ 1 }}  \n{# c #}\nend", {}),
    ("minus_strips_both_sides", "a  \n {%- if true -%} \n b \n {%- endif -%}  \n c", {}),
    ("plus_keeps_indent", "  {%+ if true %}x{% endif %}\n", {}),
    ("var_tags_not_trimmed", "{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("crlf_after_block", "{% if true %}\r\nx{% endif %}", {}),
    ("comment_lstrip", "a\n   {# comment #}\nb", {}),
    # Loops and scoping.
    ("loop_vars", "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }};{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("loop_filter_and_else", "{% for x in xs if x > 1 %}{{ x }},{{ loop.length }};{% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}", {"xs": [1, 2, 3]}),
    ("loop_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("loop_scope", "{% set x = 5 %}{% for i in [1, 2] %}{% if i == 1 %}{% set x = 9 %}{% endif %}{{ x }}{% endfor %}{{ x }}", {}),
    ("loop_set_does_not_persist", "{% for i in [1, 2, 3] %}[{{ y }}]{% set y = i %}{% endfor %}{{ y }}", {}),
    ("namespace", "{% set ns = namespace(n=0, seen=false) %}{% for m in msgs %}{% set ns.n = ns.n + 1 %}{% if m == 'b' %}{% set ns.seen = true %}{% endif %}{% endfor %}{{ ns.n }} {{ ns.seen }}", {"msgs": ["a", "b"]}),
    ("tuple_unpacking", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("nested_loops", "{% for a in [1, 2] %}{% for b in ['x', 'y'] %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}", {}),
    ("set_block", "{% set x %}hello {{ name }}{% endset %}[{{ x }}]", {"name": "you"}),
    # Expressions.
    ("arithmetic", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 10 / 4 * 2 }} {{ 3 - -1 }}", {}),
    ("comparisons", "{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ [1, 2] == [1, 2] }} {{ none == none }} {{ 'x' != 'y' }}", {}),
    ("logic_returns_operands", "{{ 0 or 'b' }} {{ 'a' and 'b' }} {{ '' or '' }}|{{ not 0 }} {{ not 'x' }} {{ x or 'dflt' }}", {}),
    ("in_operator", "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }}", {}),
    ("conditional_expr", "{{ 'yes' if flag else 'no' }} {{ 'a' if false }}|{{ 1 if x is defined else 2 }}", {"flag": True}),
    ("concat_tilde", "{{ 1 ~ 'a' ~ none ~ true ~ 2.5 }}", {}),
    ("string_escapes", "{{ 'tab\\there\\nnew \\x41\\u00e9\\U0001F600 \\q \\\\ \\'' }}{{ \"dq \\\"x\\\"\" }}", {}),
    ("adjacent_strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("output_reprs", "{{ [1, 'a', none, true, 2.0] }} {{ {'a': [1], 'b': 'x'} }} {{ none }} {{ false }} {{ 1e3 }} {{ 0.1 + 0.2 }} {{ [\"it's\"] }}", {}),
    ("undefined_prints_empty", "[{{ nothing }}][{{ d.missing }}][{{ xs[5] }}]", {"d": {}, "xs": [1]}),
    ("subscripts_and_slices", "{{ xs[0] }} {{ xs[-1] }} {{ xs[1:] }} {{ xs[:2] }} {{ xs[::-1] }} {{ xs[::2] }} {{ s[1:3] }} {{ s[-2:] }} {{ d['a'] }} {{ d.a }} {{ xs.0 }}", {"xs": [1, 2, 3, 4], "s": "h\u00e9llo", "d": {"a": 7}}),
    # Filters.
    ("filters_text", "[{{ '  a b  ' | trim }}][{{ 'xxhixx' | trim('x') }}][{{ 'Hi' | upper }}][{{ 'Hi' | lower }}][{{ 'hello world' | title }}][{{ 'hELLO' | capitalize }}][{{ 'aXbX' | replace('X', '-') }}]", {}),
    ("filters_lists", "{{ xs | length }} {{ xs | first }} {{ xs | last }} {{ xs | join(', ') }} {{ xs | reverse | list }} {{ xs | sort }} {{ [3, 1, 3] | unique | list }} {{ 'h\u00e9' | length }} {{ d | length }}", {"xs": [3, 1, 2], "d": {"a": 1}}),
    ("filters_default", "{{ x | default('d') }} {{ '' | default('e', true) }} {{ 0 | default(5) }} {{ y | d('short') }}", {"y": None}),
    ("filters_conversion", "{{ '12' | int + 1 }} {{ 'x' | int }} {{ '2.5' | float }} {{ 3 | float }} {{ 4.7 | int }} {{ 5 | string ~ '!' }} {{ -3 | abs }}", {}),
    ("filters_select", "{{ items | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('|') }} {{ items | rejectattr('type', 'equalto', 'text') | list | length }} {{ items | selectattr('text') | list | length }} {{ [0, 1, 2] | select | list }} {{ [1, 2, 3, 4] | select('even') | list }}", {"items": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]}),
    ("filters_map_filter", "{{ ['a', 'B'] | map('upper') | join }} {{ d | items | list }}", {"d": {"k": 1}}),
    ("tojson", "{{ {'a': [1, 2.5, 'x\u00e9\"'], 'b': none, 'c': true} | tojson }}|{{ [1, {'k': 'v'}] | tojson(indent=2) }}|{{ 'line\\nbreak' | tojson }}|{{ [] | tojson }}", {}),
    # Tests.
    ("tests", "{{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 's' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ {} is mapping }} {{ [] is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ x is not none }} {{ 'ab' is lower }} {{ 2 is eq 2 }} {{ true is boolean }}", {"x": 1}),
    # Methods.
    ("string_methods", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxaxx'.strip('x') }}][{{ 'Hi'.upper() }}][{{ 'a,b,,c'.split(',') }}][{{ ' a  b '.split() }}][{{ 'a b c'.split(' ', 1) }}][{{ 'hello'.startswith('he') }}][{{ 'hello'.endswith(('x', 'lo')) }}][{{ ', '.join(['a', 'b']) }}][{{ 'aaa'.replace('a', 'b', 2) }}]", {"s": " \t pad\u00a0 \n"}),
    ("dict_methods", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }}", {"d": {"a": 1, "b": 2}}),
    # Chat templates.
    ("llama_guard_1", read("chat_templates/llama_guard_1.jinja"), {"messages": [USER, AGENT]}),
    ("llama_guard_1_prompt_only", read("chat_templates/llama_guard_1.jinja"), {"messages": [USER]}),
    ("llama_guard_2", read("chat_templates/llama_guard_2.jinja"), {"messages": [USER, AGENT]}),
    ("llama_guard_3_8b", read("chat_templates/llama_guard_3_8b.jinja"), {"messages": [TRICKY, AGENT]}),
    ("llama_guard_3_8b_prompt_only", read("chat_templates/llama_guard_3_8b.jinja"), {"messages": [USER]}),
    ("llama_guard_3_8b_bad_roles", read("chat_templates/llama_guard_3_8b.jinja"), {"messages": [AGENT]}),
    ("llama_guard_3_1b_style", read("chat_templates/llama_guard_3_1b_style.jinja"), {"messages": [{"role": "user", "content": [{"type": "text", "text": " Hi "}]}, {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}]}),
    ("llama_guard_3_1b_style_custom", read("chat_templates/llama_guard_3_1b_style.jinja"), {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}], "categories": {"S1": "My category."}, "excluded_category_keys": []}),
    ("llama_guard_3_1b_style_excluded", read("chat_templates/llama_guard_3_1b_style.jinja"), {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "excluded_category_keys": ["S2", "S13"]}),
    ("fixture_llama_guard", hf_template("llama_guard"), {"messages": [USER, AGENT], "add_generation_prompt": True}),
    ("fixture_llava", hf_template("llava"), {"messages": PARTS + [{"role": "user", "content": [{"type": "text", "text": "And now?"}]}], "add_generation_prompt": True}),
    ("fixture_llava_next", hf_template("llava_next"), {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}] + PARTS, "add_generation_prompt": True}),
    ("fixture_mllama", hf_template("mllama"), {"messages": PARTS + [{"role": "user", "content": "  plain string  "}], "add_generation_prompt": True, "bos_token": "<|begin_of_text|>"}),
    # Errors: the renderer must fail where jinja2 fails.
    ("error_raise_exception", "{{ raise_exception('no system role') }}", {}),
    ("error_undefined_attribute", "{{ missing.attr }}", {}),
    ("error_unclosed_block", "{% if true %}x", {}),
    ("error_unknown_tag", "{% frobnicate %}", {}),
    ("error_unknown_filter", "{{ 'x' | nosuchfilter }}", {}),
    ("error_bad_operands", "{{ 'a' + 1 }}", {}),
    ("error_unclosed_string", "{{ 'abc }}", {}),
    ("error_unclosed_var", "{{ x ", {"x": 1}),
    ("error_set_attr_on_non_namespace", "{% set d = {} %}{% set d.x = 1 %}", {}),
]


def main():
    env = environment()
    out = []
    for name, template, context in CASES:
        case = {"name": name, "template": template, "context": context}
        try:
            case["expected"] = env.from_string(template).render(**context)
        except Exception as e:  # noqa: BLE001 - any jinja2 failure is an expected error
            case["error"] = type(e).__name__ + ": " + str(e)
        out.append(case)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases to %s" % (len(out), os.path.relpath(OUT)))


if __name__ == "__main__":
    main()
