"""minirm/scoring/queries.py: how a policy's query becomes what a reward model scores."""

from __future__ import annotations

import pytest

from minirm.text.formats import ChatTurn, pygmalion_text
from minirm.scoring.queries import SplitError, query_sample, split_query, strip_edge_markers, template_turns, transcript

# One conversation (a system message, two user turns, one assistant turn, then the reply being
# scored) written with each template as its published chat template renders it.
CONVERSATION = [ChatTurn("system", "Be brief."), ChatTurn("user", "Hi there"), ChatTurn("bot", "Hello!"),
                ChatTurn("user", "How are you?")]
RENDERED = {
    "chatml": ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
               "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
               "<|im_start|>assistant\n", "Fine, thanks.<|im_end|>\n"),
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "Fine, thanks.<|eot_id|>"),
    "llama2": ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s><s>[INST] How are you? [/INST]",
               " Fine, thanks. </s>"),
    "gemma": ("<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
              "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n", "Fine, thanks.<end_of_turn>\n"),
}
TRANSCRIPT = "Human: Hi there\n\nAssistant: Hello!\n\nHuman: How are you?"


@pytest.mark.parametrize("template", sorted(RENDERED))
def test_multi_turn_prompts_become_a_transcript_for_pair_models(template):
    prompt, reply = RENDERED[template]
    sample, rule = query_sample(prompt + reply, prompt, True, template)
    assert rule == "exact" and sample.response == "Fine, thanks."
    # Gemma has no system role: its template folds the system message into the first user turn
    expected = ("Human: Be brief.\n\nHi there\n\nAssistant: Hello!\n\nHuman: How are you?" if template == "gemma"
                else "Be brief.\n\n" + TRANSCRIPT)
    assert sample.prompt == expected


@pytest.mark.parametrize("template", sorted(RENDERED))
def test_multi_turn_prompts_go_into_the_chat_format_of_a_single_text_model(template):
    prompt, reply = RENDERED[template]
    sample, _ = query_sample(prompt + reply, prompt, False, template)
    talk = [t for t in template_turns(prompt, template) if t.speaker != "system"]
    assert [t.speaker for t in talk] == ["user", "bot", "user"]
    assert pygmalion_text(sample.history, sample.response).endswith("Bot: Hello!\nUser: How are you?\nBot: Fine, thanks.")


@pytest.mark.parametrize("template", sorted(RENDERED))
def test_without_a_prompt_the_query_splits_at_its_last_assistant_marker(template):
    prompt, reply = RENDERED[template]
    split = split_query(prompt + reply, None)
    assert split.rule == "template" and strip_edge_markers(split.response).strip() == "Fine, thanks."


def test_one_user_turn_stays_the_bare_prompt():
    assert transcript([ChatTurn("user", "How do I bake bread?")]) == "How do I bake bread?"
    prompt = "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    sample, _ = query_sample(prompt + "Knead it.<|im_end|>", prompt, True, "chatml")
    assert (sample.prompt, sample.response) == ("How do I bake bread?", "Knead it.")


def test_end_of_turn_and_padding_are_not_the_response():
    sample, rule = query_sample("Q? A long answer.<|im_end|><|endoftext|><|endoftext|>", "Q?", True, None)
    assert (sample.prompt, sample.response, rule) == ("Q?", " A long answer.", "exact")
    single, rule = query_sample("<pad><pad>Q? A.</s>", None, False, None)
    assert (single.prompt, single.response, rule) == (None, "Q? A.", "whole")


def test_a_short_accidental_overlap_is_not_a_truncated_prompt():
    with pytest.raises(SplitError, match="does not start with its prompt"):
        split_query("the answer is yes", "What is the answer")
