"""Llama, Mistral and Qwen2 reward models: one decoder (decoder.py), three registry entries.

The three transformers classes (Llama-, Mistral-, Qwen2ForSequenceClassification) hold the same
layers under the same key names and differ only in their configs:

- Llama: attention_bias (q, k, v and o) and mlp_bias, both off by default; RoPE scaling llama3
  (Llama 3.1 and 3.2), linear or dynamic.
- Mistral: sliding_window on every layer, 4096 when config.json does not say (Mistral-7B-v0.1);
  null turns it off (v0.2 and later). The window is computed, not refused.
- Qwen2: biases on q, k and v (never on o or the MLP); a window only with use_sliding_window, on
  the layers from max_window_layers up (or as layer_types says).

The score is the `score` head (Linear, no bias) at each sequence's last real token. transformers
reads it at the rightmost token that is not pad_token_id instead (or the last position when there
is no pad token, and then it refuses batches of more than one). The two agree on every input that
does not end in the pad token; on one that does (a Qwen text ending in "<|endoftext|>", Qwen's pad
token, or any checkpoint whose pad token is its end-of-turn token), transformers reads the score
one token early (or earlier, past a run of them) and minirm at the text's real end.
"""

from __future__ import annotations

from .decoder import (
    ATTENTION_KEYS, IGNORE, RENAMES, DecoderRewardModel, check_decoder, decoder_fields, decoder_options,
    decoder_positions, layer_windows, weight_map, with_defaults,
)
from .registry import Alias, Family

LAYER_KEYS = {**ATTENTION_KEYS, "post_attention_layernorm": "mlp_norm"}

# transformers 5.25's defaults of each config class, by config.json key
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048,
                      rms_norm_eps=1e-6, pad_token_id=None, attention_dropout=0.0, head_dim=None)
MISTRAL_DEFAULTS = {**LLAMA_DEFAULTS, "intermediate_size": 14336, "num_key_value_heads": 8,
                    "max_position_embeddings": 4096 * 32, "sliding_window": 4096}
QWEN2_DEFAULTS = {**LLAMA_DEFAULTS, "vocab_size": 151936, "intermediate_size": 22016, "num_key_value_heads": 32,
                  "max_position_embeddings": 32768, "use_sliding_window": False, "sliding_window": 4096,
                  "max_window_layers": 28}


def llama_options(raw: dict):
    c = with_defaults(raw, LLAMA_DEFAULTS)
    return decoder_options(c, windows=[None] * c["num_hidden_layers"])


def mistral_options(raw: dict):
    c = with_defaults(raw, MISTRAL_DEFAULTS)
    n = c["num_hidden_layers"]
    return decoder_options(c, qkv_bias=False, o_bias=False, mlp_bias=False, windows=[c["sliding_window"]] * n)


def qwen_windows(c: dict) -> tuple:
    """Qwen2 and Qwen3: a window only with use_sliding_window, on the layers layer_types names, or
    else from max_window_layers up."""
    window = c["sliding_window"] if c.get("use_sliding_window") else None
    return layer_windows(c, c["num_hidden_layers"], window, lambda i: i >= c["max_window_layers"])


def qwen2_options(raw: dict):
    c = with_defaults(raw, QWEN2_DEFAULTS)
    return decoder_options(c, qkv_bias=True, o_bias=False, mlp_bias=False, windows=qwen_windows(c))


class LlamaRewardModel(DecoderRewardModel):
    """Llama, Mistral and Qwen2 (the options decide the differences: decoder.DecoderOptions)."""


def _entry(name: str, architecture: str, defaults: dict, options, aliases=()) -> Family:
    return Family(
        name=name,
        model=LlamaRewardModel,
        architecture=architecture,
        model_type=name,
        config=decoder_fields(defaults),
        weight_map=weight_map(LAYER_KEYS),
        ignore=IGNORE,
        renames=RENAMES,
        options=options,
        check=check_decoder,
        pair_input=False,  # one text, its score read at the last token
        truncation_side="left",  # the end is kept, where the score is read (tokenizer.py)
        chat_template=True,  # a conversation rendered by the tokenizer's chat template
        bf16_when_published=True,  # scored in bf16 when the checkpoint is, as the cards load them
        usable_positions=decoder_positions,
        default_max_length=None,  # the model's whole context
        aliases=aliases,
    )


LLAMA = _entry("llama", "LlamaForSequenceClassification", LLAMA_DEFAULTS, llama_options, aliases=(
    Alias("skywork-v2-llama-1b", "Skywork/Skywork-Reward-V2-Llama-3.2-1B",
          "Skywork-Reward-V2, Llama 3.2 1B, 1 label; score = logit of the chat-formatted conversation"),
    Alias("skywork-v2-llama-3b", "Skywork/Skywork-Reward-V2-Llama-3.2-3B",
          "Skywork-Reward-V2, Llama 3.2 3B, 1 label; score = logit of the chat-formatted conversation"),
    Alias("skywork-v2-llama-8b", "Skywork/Skywork-Reward-V2-Llama-3.1-8B",
          "Skywork-Reward-V2, Llama 3.1 8B, 1 label; score = logit of the chat-formatted conversation"),
    Alias("skywork-llama-8b-v0.2", "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
          "Skywork-Reward v0.2, Llama 3.1 8B, 1 label; score = logit of the chat-formatted conversation"),
))
MISTRAL = _entry("mistral", "MistralForSequenceClassification", MISTRAL_DEFAULTS, mistral_options)
QWEN2 = _entry("qwen2", "Qwen2ForSequenceClassification", QWEN2_DEFAULTS, qwen2_options)
