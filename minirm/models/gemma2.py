"""Gemma 2 reward models: the decoder of decoder.py with Gemma's differences, as transformers 5.25
computes them.

- The token embeddings are multiplied by sqrt(hidden_size), a number first rounded to the
  embeddings' dtype (in bf16, sqrt(4608) = 67.88 becomes 68.0), as transformers does.
- RMSNorm stores its weight as an offset from one: x / rms(x) * (1 + w), all in float32, cast last.
- Four norms per layer: before and after the attention, before and after the MLP, each sublayer's
  output normalised before it is added to the residual.
- The MLP is GeGLU: down(gelu_tanh(gate(x)) * up(x)) (hidden_activation, gelu_pytorch_tanh).
- The softmax scale is query_pre_attn_scalar ** -0.5, not head_dim ** -0.5; the attention logits
  are soft-capped, cap * tanh(logits / cap), with attn_logit_softcapping (50), before the mask.
- Sliding-window attention (sliding_window, 4096) on the layers layer_types names; without
  layer_types, on every other layer starting with the first (layers 0, 2, 4, ...).
- final_logit_softcapping is not applied: transformers caps the language-model logits with it
  (Gemma2ForCausalLM), never the sequence classifier's score.
- use_bidirectional_attention (a flag for embedding models) is refused: these reward models are
  causal.

The score is the `score` head (Linear, no bias) at each sequence's last real token. transformers
reads it at the rightmost token that is not pad_token_id (Gemma's "<pad>", id 0); a text ending in
"<pad>" would be read early there and at its real end here. On every other input the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import MinirmError
from .decoder import (
    ATTENTION_KEYS, IGNORE, RENAMES, Context, DecoderAttention, DecoderRewardModel, GatedMLP, GemmaRMSNorm,
    check_decoder, decoder_fields, decoder_options, decoder_positions, layer_windows, weight_map, with_defaults,
)
from .registry import Alias, Family

if TYPE_CHECKING:
    from ..config import ModelConfig

# transformers 5.25's Gemma2Config defaults, by config.json key
GEMMA2_DEFAULTS = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                       hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192, rms_norm_eps=1e-6,
                       pad_token_id=0, attention_bias=False, attention_dropout=0.0, query_pre_attn_scalar=256,
                       sliding_window=4096, attn_logit_softcapping=50.0, tie_word_embeddings=True)
LAYER_KEYS = {**ATTENTION_KEYS, "post_attention_layernorm": "post_attn_norm",
              "pre_feedforward_layernorm": "mlp_norm", "post_feedforward_layernorm": "post_mlp_norm"}


def gemma2_options(raw: dict):
    c = with_defaults(raw, GEMMA2_DEFAULTS)
    if c.get("use_bidirectional_attention"):
        raise MinirmError("config.json: use_bidirectional_attention is set; minirm's Gemma 2 reward models are "
                          "causal (the flag is for embedding models)")
    windows = layer_windows(c, c["num_hidden_layers"], c["sliding_window"], lambda i: i % 2 == 0)
    scalar = c["query_pre_attn_scalar"]
    return decoder_options(c, mlp_bias=False, windows=windows, softmax_scale=scalar ** -0.5,
                           attn_softcap=c["attn_logit_softcapping"] or None)


class Gemma2Layer(torch.nn.Module):
    """x + post_attn_norm(attn(attn_norm(x))), then x + post_mlp_norm(mlp(mlp_norm(x)))."""

    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        C, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.attn_norm = GemmaRMSNorm(C, eps)
        self.attn = DecoderAttention(cfg, window, norm=GemmaRMSNorm)
        self.post_attn_norm = GemmaRMSNorm(C, eps)
        self.mlp_norm = GemmaRMSNorm(C, eps)
        self.mlp = GatedMLP(cfg, bias=False)
        self.post_mlp_norm = GemmaRMSNorm(C, eps)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        x = x + self.post_attn_norm(self.attn(self.attn_norm(x), ctx))
        return x + self.post_mlp_norm(self.mlp(self.mlp_norm(x)))


class Gemma2RewardModel(DecoderRewardModel):
    supports_triton = False  # the varlen kernel has neither soft-capping nor sliding windows
    layer_type = Gemma2Layer
    norm_type = GemmaRMSNorm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        weight = self.tokens.weight
        scale = torch.tensor(self.cfg.hidden_size ** 0.5, device=weight.device).to(weight.dtype)
        return self.tokens(input_ids) * scale


GEMMA2 = Family(
    name="gemma2",
    model=Gemma2RewardModel,
    architecture="Gemma2ForSequenceClassification",
    model_type="gemma2",
    config=decoder_fields(GEMMA2_DEFAULTS, act_key="hidden_activation"),
    weight_map=weight_map(LAYER_KEYS),
    ignore=IGNORE,
    renames=RENAMES,
    options=gemma2_options,
    check=check_decoder,
    pair_input=False,  # one text, its score read at the last token
    truncation_side="left",  # the end is kept, where the score is read (tokenizer.py)
    chat_template=True,  # a conversation rendered by the tokenizer's chat template
    bf16_when_published=True,  # scored in bf16 when the checkpoint is, as the cards load them
    usable_positions=decoder_positions,
    default_max_length=None,  # the model's whole context
    aliases=(Alias("skywork-gemma2-27b-v0.2", "Skywork/Skywork-Reward-Gemma-2-27B-v0.2",
                   "Skywork-Reward v0.2, Gemma 2 27B, 1 label; score = logit of the chat-formatted conversation"),),
)
