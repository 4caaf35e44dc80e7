#!/usr/bin/python3
"""Hugging Face's chat-template renderer, as the reference our Jinja engine is checked against:
python3-jinja2 in the environment transformers compiles chat templates in
(transformers.utils.chat_template_utils._compile_jinja_template), with strftime_now on a fixed
clock. As a program it renders one job from stdin for the JavaScript end-to-end tests:

  echo '{"template": "...", "context": {...}}' | jinja_reference.py  ->  {"ok": true, "text": ...}
"""

import datetime
import json
import sys
import warnings

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = 1752148800  # 2025-07-10 12:00 UTC, for strftime_now


class RaisedByTemplate(Exception):
    pass


class GenerationTracker(Extension):
    """transformers' AssistantTracker: {% generation %} ... {% endgeneration %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def reference_environment():
    """transformers.utils.chat_template_utils._compile_jinja_template's environment."""
    def raise_exception(message):
        raise RaisedByTemplate(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.fromtimestamp(NOW, tz=datetime.timezone.utc).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = reference_environment()
COMPILED = {}
# jinja2's compiler warns about subscripts of constants the random expressions contain.
warnings.filterwarnings("ignore", category=SyntaxWarning)


def reference_render(template, context):
    try:
        if template not in COMPILED:
            COMPILED[template] = ENV.from_string(template)
        return {"ok": True, "text": COMPILED[template].render(**context)}
    except RaisedByTemplate as e:
        return {"ok": False, "raised": True, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - any failure of jinja2 is a failure we must match
        return {"ok": False, "raised": False, "error": f"{type(e).__name__}: {e}"}




def main():
    job = json.load(sys.stdin)
    json.dump(reference_render(job["template"], job["context"]), sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
