#!/usr/bin/env python3
"""Reference chat-template renderings from Python jinja2, configured as transformers'
apply_chat_template configures it, for chat_template_test.cc.

Usage: chat_template_golden.py IN.json OUT.json

IN.json: {"cases": [{"template": source | {"gguf": path}, "messages": [...],
                     "add_generation_prompt": bool, "bos_token": s, "eos_token": s, "extra": {...}}]}
OUT.json: one entry per case: {"source": the template source, "ok": bool, "text": rendered} or
          {"ok": false, "error": message}.

The environment mirrors transformers (utils/chat_template_utils.py): ImmutableSandboxedEnvironment with
trim_blocks=True, lstrip_blocks=True and the loopcontrols extension; `raise_exception` raises; `tojson`
is json.dumps with ensure_ascii=False; the render receives messages, tools=None, documents=None,
add_generation_prompt and the special tokens.
"""
import functools
import json
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(Exception):
    pass


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@functools.lru_cache(maxsize=None)  # reading a GGUF's metadata takes seconds
def gguf_template(path):
    import gguf
    reader = gguf.GGUFReader(path)
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        sys.exit(f"{path} has no tokenizer.chat_template")
    return field.contents()


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    out = []
    for case in cases:
        source = case["template"]
        if isinstance(source, dict):
            source = gguf_template(source["gguf"])
        entry = {"source": source}
        try:
            text = env.from_string(source).render(
                messages=case["messages"], tools=None, documents=None,
                add_generation_prompt=case.get("add_generation_prompt", False),
                bos_token=case.get("bos_token", ""), eos_token=case.get("eos_token", ""),
                **case.get("extra", {}))
            entry.update(ok=True, text=text)
        except (TemplateError, jinja2.TemplateError) as e:
            entry.update(ok=False, error=str(e))
        out.append(entry)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
