"""Chat templates: a conversation -> the text a chat model reads, rendered as transformers renders it.

A decoder LLM reward model scores a whole conversation formatted by its tokenizer's chat template
(Skywork-Reward's cards: `tokenizer.apply_chat_template(conversation)`). The template is Jinja
code shipped with the tokenizer, found where transformers 5.25 looks for it:
`chat_template.jinja` first, else tokenizer_config.json's "chat_template" (a string, or a list of
named templates of which "default" is used).

It is rendered in Jinja's immutable sandbox, as transformers renders it: trim_blocks and
lstrip_blocks on, loop controls, and the helpers transformers gives templates: `raise_exception`,
the `tojson` filter (json.dumps: non-ASCII kept, HTML not escaped; indent, separators, sort_keys),
`strftime_now`, a namespace that refuses underscore names, `{% generation %}` blocks (rendered
as their content), and as variables `messages`, `add_generation_prompt` (False: the conversation
being scored is complete), `tools` and `documents` (none) and the tokenizer's special tokens
(bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token), as strings.

The BOS rule: templates that write the BOS token themselves (Llama 3, Gemma) would get a second
one if the text were then tokenized with the tokenizer's own special tokens. A rendered text that
starts with the BOS token is therefore tokenized without them (transformers'
apply_chat_template(tokenize=True) adds none ever); one that does not is tokenized with them,
as Skywork-Reward-V2's card tokenizes the rendered text (it strips a leading BOS, then lets the
tokenizer add it). The two agree on the Llama 3, Qwen3 and Gemma 2 templates; they would differ
only on a template that writes no BOS for a tokenizer that adds one, where minirm adds it.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from ..errors import MinirmError, first_line

TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ROLES = {"user": "user", "bot": "assistant"}  # ChatTurn speakers -> chat roles


def read_chat_template(folder: Path, options: dict) -> str | None:
    """The folder's chat template (chat_template.jinja, else tokenizer_config.json's), or None.
    `options` is tokenizer_config.json as read."""
    path = folder / TEMPLATE_FILE
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MinirmError(f"{path}: cannot be read ({first_line(e)})") from None
    template = options.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" not in named:
            raise MinirmError(f"{folder / 'tokenizer_config.json'}: names chat templates "
                              f"{', '.join(map(repr, named))} but no 'default' one; minirm renders the default")
        template = named["default"]
    if template is not None and not isinstance(template, str):
        raise MinirmError(f"{folder / 'tokenizer_config.json'}: chat_template must be text, "
                          f"not {type(template).__name__}")
    return template


def special_tokens(options: dict, folder: Path) -> dict[str, str]:
    """The named special tokens as strings (tokenizer_config.json, else special_tokens_map.json)."""
    found = {}
    legacy = folder / "special_tokens_map.json"
    sources = [options]
    if legacy.is_file():
        try:
            sources.append(json.loads(legacy.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            pass  # transformers keeps it only for old checkpoints; tokenizer_config.json is what counts
    for source in reversed(sources):  # tokenizer_config.json last: it wins
        for name in SPECIAL_TOKENS:
            value = source.get(name)
            if isinstance(value, dict):  # an AddedToken written out
                value = value.get("content")
            if isinstance(value, str):
                found[name] = value
    return found


class ChatTemplate:
    """One compiled template and the special tokens it sees."""

    def __init__(self, source: str, tokens: dict[str, str], where: str):
        self.where = where
        self.tokens = tokens
        self.bos = tokens.get("bos_token")
        try:
            self.template = _environment().from_string(source)
        except Exception as e:  # noqa: BLE001 - Jinja's syntax errors and the sandbox's refusals
            raise MinirmError(f"{where}: the chat template does not compile ({first_line(e)})") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        import jinja2

        try:
            return self.template.render(messages=messages, tools=None, documents=None,
                                        add_generation_prompt=add_generation_prompt, **self.tokens)
        except jinja2.TemplateError as e:  # raise_exception, or the sandbox refusing an operation
            raise TemplateRefused(f"the chat template refuses it: {first_line(e)}") from None

    def starts_with_bos(self, text: str) -> bool:
        return bool(self.bos) and text.startswith(self.bos)


class TemplateRefused(MinirmError):
    """The template refused a conversation (its raise_exception): why, and which sample (when known)."""

    def __init__(self, reason: str, index: int | None = None):
        super().__init__(reason if index is None else f"sample {index}: {reason}")
        self.reason, self.index = reason, index


def conversation(prompt_turns, response: str) -> list[dict]:
    """ChatTurns (speaker "user" / "bot") and the response being scored -> chat messages."""
    return [{"role": ROLES.get(t.speaker, t.speaker), "content": t.message} for t in prompt_turns] + [
        {"role": "assistant", "content": response}]


def _environment():
    """The sandboxed environment, built once (compiling a template is the costly part)."""
    global _ENV
    if _ENV is None:
        _ENV = _build_environment()
    return _ENV


_ENV = None


def _build_environment():
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """{% generation %}...{% endgeneration %} marks the assistant's tokens for training masks in
        transformers; for scoring it is just its content."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_content"), [], [], body).set_lineno(lineno)

        def _content(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """namespace() that refuses underscore names, so no template reaches Python's internals."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for key in attrs:
                Namespace._check(key)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, key, value):
            Namespace._check(key)
            jinja2.utils.Namespace.__setitem__(self, key, value)

        @staticmethod
        def _check(key):
            if isinstance(key, str) and key.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a chat template may not set {key!r} on a namespace")

    class TemplateDict:
        """dict() and dict.fromkeys() for templates, without the type itself (no attribute tricks)."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, namespace=Namespace,
                       dict=TemplateDict())
    return env
