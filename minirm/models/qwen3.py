"""Qwen3 reward models: the Llama decoder (decoder.py) with an RMSNorm on each head's queries and
keys (q_norm, k_norm: one weight of head_dim, shared by the heads), before RoPE.

Qwen3's config differs from Qwen2's: head_dim is its own field (128 when config.json does not say,
not hidden / heads: Qwen3-0.6B has 16 heads of 128 on a hidden size of 1024), and attention_bias
(off by default) puts biases on q, k, v and o alike. Sliding windows follow Qwen2's rule
(llama.qwen_windows).

The score is the `score` head (Linear, no bias) at each sequence's last real token. transformers
reads it at the rightmost token that is not pad_token_id; Qwen3's pad token is "<|endoftext|>", so
on a text that itself ends in "<|endoftext|>" transformers reads one token early and minirm at the
text's real end. On every other input the two agree.
"""

from __future__ import annotations

from .decoder import (
    ATTENTION_KEYS, IGNORE, RENAMES, DecoderRewardModel, check_decoder, decoder_fields, decoder_options,
    decoder_positions, weight_map, with_defaults,
)
from .llama import QWEN2_DEFAULTS, qwen_windows
from .registry import Alias, Family

# transformers 5.25's Qwen3Config defaults, by config.json key
QWEN3_DEFAULTS = {**QWEN2_DEFAULTS, "head_dim": 128, "attention_bias": False}
LAYER_KEYS = {**ATTENTION_KEYS, "post_attention_layernorm": "mlp_norm",
              "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm"}


def qwen3_options(raw: dict):
    c = with_defaults(raw, QWEN3_DEFAULTS)
    return decoder_options(c, mlp_bias=False, qk_norm=True, windows=qwen_windows(c))


class Qwen3RewardModel(DecoderRewardModel):
    """The Llama decoder; the q/k norms come with the options (DecoderOptions.qk_norm)."""


def _skywork(size: str) -> Alias:
    return Alias(f"skywork-v2-qwen3-{size.lower()}", f"Skywork/Skywork-Reward-V2-Qwen3-{size}",
                 f"Skywork-Reward-V2, Qwen3 {size}, 1 label; score = logit of the chat-formatted conversation")


QWEN3 = Family(
    name="qwen3",
    model=Qwen3RewardModel,
    architecture="Qwen3ForSequenceClassification",
    model_type="qwen3",
    config=decoder_fields(QWEN3_DEFAULTS),
    weight_map=weight_map(LAYER_KEYS),
    ignore=IGNORE,
    renames=RENAMES,
    options=qwen3_options,
    check=check_decoder,
    pair_input=False,  # one text, its score read at the last token
    truncation_side="left",  # the end is kept, where the score is read (tokenizer.py)
    chat_template=True,  # a conversation rendered by the tokenizer's chat template
    bf16_when_published=True,  # scored in bf16 when the checkpoint is, as the cards load them
    usable_positions=decoder_positions,
    default_max_length=None,  # the model's whole context
    aliases=tuple(_skywork(size) for size in ("0.6B", "1.7B", "4B", "8B")),
)
