"""An RL policy's query -> the sample a reward model scores.

OpenRLHF's remote reward protocol sends `query`, the policy's prompt followed by its response,
as one string, and (from 0.6 on) the `prompts`. A pair model (BERT, RoBERTa, DeBERTa) needs the
two apart, and real clients rarely send a query that starts with its prompt to the letter:

* 0.6 and 0.7 decode left-padded token tensors with skip_special_tokens=False, so the query
  starts with "<|endoftext|><|endoftext|>..." and may end with end-of-sequence and padding too;
* 0.11 cuts over-long prompts from the left (prompt_token_ids[-max_prompt_length:]);
* a tokenizer's decode may move spaces (Llama 3 under transformers <= 5.3: "word 'social' , is
  it rude ?" comes back as "word'social', is it rude?");
* 0.5 sends no prompts at all.

So the split is found by the first rule that holds, and its name says which:

    exact      the query starts with the prompt
    markers    it does after special-token markers at the query's start (decoded padding)
    spacing    the prompt's non-space characters start the query's (spaces moved by decoding)
    truncated  a tail of the prompt, at least MIN_TAIL non-space characters long, starts the
               query's non-space characters (the client cut the prompt from the left); the
               prompt scored is the client's, whole
    template   after the last assistant marker of a known chat template (no prompt given, or
               none of the above held)

A query none of them splits is an error that names it.

Special-token markers at the two ends of a query (MARKER: "<|endoftext|>", "<|im_end|>", "</s>",
"<pad>", ...) are the client's padding and the policy's end of turn, not words of the response:
they are removed from the response's end, and from both ends of a text scored whole.

`--strip-template NAME` then reads the conversation in the prompt by that template's markers
and writes it as the reward model's card does: a pair model gets the last user turn alone
when it is the only turn, and otherwise the turns as a transcript, "Human: ...\n\nAssistant:
...\n\nHuman: ..." (the hh-rlhf layout minirm reads training and evaluation data in), with a
system message as the opening paragraph; a chat model (CHAI's GPT-2) gets the turns in its
Pygmalion format.

A model that reads conversations through its own chat template (Llama, Qwen, Gemma) scores a
query the policy rendered with a template whole, and renders a plain-text one as a conversation
once it is split (chat_query_sample).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..text.formats import ChatTurn
from ..text.records import Sample
from ..text.templates import conversation

# One special-token marker as tokenizers decode them: GPT-2/Qwen/Llama 3 "<|...|>", SentencePiece
# "<s>" "</s>", Gemma and T5 "<pad>" "<eos>" "<bos>" "<unk>" "<end_of_turn>", BERT "[PAD]" "[SEP]" ...
MARKER = (r"(?:<\|[A-Za-z0-9_.:-]{1,64}\|>|</?s>|<(?:pad|eos|bos|unk|mask|end_of_turn)>"
          r"|\[(?:PAD|CLS|SEP|UNK|MASK)\])")
_LEADING_MARKERS = re.compile(rf"^(?:\s*{MARKER})+")
_TRAILING_MARKERS = re.compile(rf"(?:{MARKER}\s*)+$")
_PADDING = re.compile(rf"(?:\s*{MARKER})+\s*")
# The pad tokens policies are decoded with (GPT-2/Qwen, Llama 3 base and instruct, Gemma, BERT,
# SentencePiece): no chat template writes them, so around a rendered query they are padding.
PAD_MARKERS = r"<\|endoftext\|>|<\|end_of_text\|>|<\|finetune_right_pad_id\|>|<pad>|\[PAD\]|<unk>"
_LEADING_PADS = re.compile(rf"^(?:{PAD_MARKERS})+")  # the pads alone: a space or newline beside them is
_TRAILING_PADS = re.compile(rf"(?:{PAD_MARKERS})+$")  # the text's (Qwen's template ends "<|im_end|>\n")
MIN_TAIL = 32  # non-space characters of a prompt's tail that must start the query to call it truncated

# Per chat template: the markers --strip-template removes, and how to read the turns of a conversation.
# turn: a regex matched repeatedly over the prompt, with groups (role, content), or (llama2, whose
# turns come in [INST] user [/INST] reply blocks) named groups system, user and bot.
# assistant: where the assistant's reply begins (the generation prompt), for the "template" rule.
TEMPLATES = {
    "chatml": dict(
        markers=[r"<\|im_start\|>(system|user|assistant)\n?", r"<\|im_end\|>\n?", r"<\|endoftext\|>"],
        turn=r"<\|im_start\|>(system|user|assistant)\n?(.*?)(?:<\|im_end\|>|$)",
        assistant=r"<\|im_start\|>assistant\n?"),
    "llama3": dict(
        markers=[r"<\|begin_of_text\|>", r"<\|start_header_id\|>\w+<\|end_header_id\|>\n*", r"<\|eot_id\|>",
                 r"<\|end_of_text\|>"],
        turn=r"<\|start_header_id\|>(system|user|assistant)<\|end_header_id\|>\n*(.*?)(?:<\|eot_id\|>|$)",
        assistant=r"<\|start_header_id\|>assistant<\|end_header_id\|>\n*"),
    "llama2": dict(
        markers=[r"<s>", r"</s>", r"\[INST\]\s*", r"\s*\[/INST\]\s*", r"<<SYS>>\n?", r"\n?<</SYS>>\n*"],
        # <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s><s>[INST] user [/INST]
        turn=r"\[INST\]\s*(?:<<SYS>>\n?(?P<system>.*?)\n?<</SYS>>\s*)?(?P<user>.*?)\s*\[/INST\]"
             r"(?P<bot>.*?)(?=</s>|<s>|\[INST\]|$)",
        assistant=r"\[/INST\]\s*"),
    "gemma": dict(
        markers=[r"<bos>", r"<start_of_turn>(user|model)\n?", r"<end_of_turn>\n?", r"<eos>"],
        turn=r"<start_of_turn>(user|model)\n?(.*?)(?:<end_of_turn>|$)",
        assistant=r"<start_of_turn>model\n?"),
}
SPLIT_RULES = ("exact", "markers", "spacing", "truncated", "template")
_TEMPLATE_MARKERS = {name: re.compile("|".join(f"(?:{p})" for p in spec["markers"])) for name, spec in TEMPLATES.items()}
_SPEAKER = {"assistant": "bot", "model": "bot"}  # a template's role -> ChatTurn's speaker


class SplitError(ValueError):
    """A query that no rule splits: the message says why, for a 400 that names the query."""


@dataclass
class Split:
    prompt: str
    response: str
    rule: str  # one of SPLIT_RULES


def strip_edge_markers(text: str) -> str:
    """The text without the special-token markers (and the spaces between them) at its two ends."""
    return _TRAILING_MARKERS.sub("", _LEADING_MARKERS.sub("", text))


def _longest_tail_starting(prompt: str, query: str) -> int:
    """The length k of the longest tail of `prompt` that `query` starts with (prefix function)."""
    joined = query + "\0" + prompt
    border = [0] * len(joined)
    for i in range(1, len(joined)):
        k = border[i - 1]
        while k and joined[i] != joined[k]:
            k = border[k - 1]
        border[i] = k + (joined[i] == joined[k])
    return min(border[-1], len(prompt), len(query)) if joined else 0


def _assistant_marker_end(query: str) -> int | None:
    """Where the response begins after the last assistant marker of any known template."""
    ends = [match.end() for spec in TEMPLATES.values() for match in re.finditer(spec["assistant"], query)]
    return max(ends) if ends else None


def split_query(query: str, prompt: str | None) -> Split:
    """The (prompt, response) of one query by the first rule that holds (see the module doc)."""
    if prompt is not None:
        if query.startswith(prompt):
            return Split(prompt, query[len(prompt):], "exact")
        at = query.find(prompt)
        if at > 0 and _PADDING.fullmatch(query[:at]):
            return Split(prompt, query[at + len(prompt):], "markers")
        # the alignments below compare non-space characters, after any markers at the start of each
        body = _LEADING_MARKERS.sub("", query)
        kept = [i for i, ch in enumerate(body) if not ch.isspace()]
        prompt_chars = "".join(ch for ch in _LEADING_MARKERS.sub("", prompt) if not ch.isspace())
        k = _longest_tail_starting(prompt_chars, "".join(body[i] for i in kept))
        if k and (k == len(prompt_chars) or k >= MIN_TAIL):
            response = body[kept[k - 1] + 1:]
            # the whitespace the prompt ends with ("...assistant\n") is the prompt's, not the response's
            trailing = len(prompt) - len(prompt.rstrip())
            response = response[min(trailing, len(response) - len(response.lstrip())):]
            # truncated: the client's prompt, whole (the reward model reads all of it, and cuts as it must)
            return Split(prompt, response, "spacing" if k == len(prompt_chars) else "truncated")
    end = _assistant_marker_end(query)
    if end is not None:
        return Split(query[:end], query[end:], "template")
    if prompt is None:
        raise SplitError("no prompt to split it at and no chat template's assistant marker in it; send 'prompts'")
    raise SplitError("it does not start with its prompt (not even after special tokens, with spaces ignored or "
                     f"with the prompt cut from the left by {MIN_TAIL}+ characters), and holds no chat template's "
                     "assistant marker")


def template_turns(text: str, template: str) -> list[ChatTurn]:
    """The conversation in a prompt written with `template`'s markers, as (speaker, message) turns;
    a prompt without them is one user turn. Speakers: "system", "user" or "bot"."""
    spec = TEMPLATES[template]
    turns = []
    for match in re.finditer(spec["turn"], text, flags=re.DOTALL):
        named = match.groupdict()
        found = list(named.items()) if named else [(match.group(1), match.group(2))]
        for role, content in found:
            content = strip_markers(content or "", template)
            if content:
                turns.append(ChatTurn(_SPEAKER.get(role, role), content))
    return turns or [ChatTurn("user", strip_markers(text, template))]


def strip_markers(text: str, template: str) -> str:
    return _TEMPLATE_MARKERS[template].sub("", text).strip()


def transcript(turns: list[ChatTurn]) -> str:
    """A pair model's prompt: the one user turn as it is, else the hh-rlhf transcript layout."""
    system = [t.message for t in turns if t.speaker == "system"]
    talk = [t for t in turns if t.speaker != "system"]
    if len(talk) == 1 and talk[0].speaker == "user":
        body = talk[0].message
    else:
        body = "\n\n".join(f"{'Assistant' if t.speaker == 'bot' else 'Human'}: {t.message}" for t in talk)
    return "\n\n".join(system + [body])


def strip_padding(query: str) -> str:
    """The query without the padding a client decoded around it (runs of PAD_MARKERS at its two
    ends). A chat template's markers stay: they are part of the text a chat model was trained on,
    and the policy's pad token is none of them (a reward model's own pad token may be: Llama 3
    models often pad with <|eot_id|>, which ends each turn, so it is not used here)."""
    return _TRAILING_PADS.sub("", _LEADING_PADS.sub("", query))


def chat_query_sample(query: str, prompt: str | None, template: str | None) -> tuple[Sample, str]:
    """For a model that reads conversations through its own chat template (the LLM families).

    * A query the policy rendered with a chat template (it holds an assistant marker of one) is
      scored whole, as rendered, once the padding around it is removed (strip_padding): a policy
      and reward model of one family share the template, and OpenRLHF's own reward server scores
      such queries whole too. Its BOS, if it starts with one, is not doubled (tokenizer.py).
    * A plain-text query (the template's markers were decoded away, or the policy has none) is
      split at its prompt (split_query's rules) and the pair rendered by the reward model's
      template as a user turn and the assistant's reply: scoring the bare text would read it
      outside the format the model was trained on.
    * With --strip-template naming the policy's template, a query that splits is taken apart
      into its turns (template_turns) and rendered by the reward model's template, so that a
      policy and a reward model with different templates still agree.

    A plain query that does not split is a SplitError (a 400 naming it)."""
    query = strip_padding(query)
    rendered = _assistant_marker_end(query) is not None
    if rendered and template is None:
        return Sample(None, query), "whole"
    try:
        split = split_query(query, prompt)
    except SplitError:
        if rendered:
            return Sample(None, query), "whole"
        raise
    if template is None:
        turns = [ChatTurn("user", split.prompt)]
        response = strip_edge_markers(split.response)
    else:
        turns = template_turns(split.prompt, template)
        response = strip_markers(strip_edge_markers(split.response), template)
    return Sample.conversation(conversation(turns, response)), split.rule


def query_sample(query: str, prompt: str | None, pair_input: bool, template: str | None,
                 chat: bool = False) -> tuple[Sample, str]:
    """One query (and its prompt, if sent) -> (the sample to score, the split rule or "whole").

    A single-text model (CHAI's GPT-2) scores the query whole, unless a template is named and the
    query splits: then the conversation goes into its chat format. A pair model needs the split.
    A chat-template model (`chat`): chat_query_sample."""
    if chat:
        return chat_query_sample(query, prompt, template)
    if not pair_input:
        if template is None:
            return Sample(None, strip_edge_markers(query)), "whole"
        try:
            split = split_query(query, prompt)
        except SplitError:
            return Sample(None, strip_markers(strip_edge_markers(query), template)), "whole"
    else:
        split = split_query(query, prompt)
    response = strip_edge_markers(split.response)
    if template is None:
        return Sample.pair(split.prompt, response), split.rule
    turns = template_turns(split.prompt, template)
    response = strip_markers(response, template)
    if pair_input:
        return Sample.pair(transcript(turns), response), split.rule
    return Sample(transcript(turns), response, history=[t for t in turns if t.speaker != "system"]), split.rule
