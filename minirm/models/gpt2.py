"""GPT-2 with its sequence-classification head, top to bottom.

GPT-2 is pre-LayerNorm (normalise, then the sublayer, then add) and causal. Its reward
head is a bias-free `score` Linear read at the last real token of each sequence.

That last point is where GPT-2 reward models commonly go wrong. transformers finds the
rightmost token that is not pad_token_id; CHAI-style models use pad = eos = 50256, so a
text that itself ends in <|endoftext|> would be read one token early. minirm knows each
sequence's length and reads at length - 1, which agrees with transformers on every input
that does not end in the pad token, and is right on those that do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..attention import AttentionBatch
from .common import MultiHeadAttention, RewardModel, activation, gather_tokens, run_layer
from .registry import INT, NUMBER, POSITIVE_INT, STRING, Alias, ConfigFields, Family

if TYPE_CHECKING:
    from ..config import ModelConfig


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.hidden_size
        self.attn_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.attn = MultiHeadAttention(C, cfg.num_heads, fused_qkv=True, dropout=cfg.attention_dropout)
        self.mlp_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.up = nn.Linear(C, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)
        self.down = nn.Linear(cfg.intermediate_size, C)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), batch))
        return x + self.dropout(self.down(self.act(self.up(self.mlp_norm(x)))))


class GPT2RewardModel(RewardModel):
    causal = True
    supports_triton = True
    head_modules = ("final_norm", "score")  # the last LayerNorm runs on the gathered tokens only

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.positions = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.score = nn.Linear(cfg.hidden_size, cfg.num_labels, bias=False)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """(B, T) right-padded ids, (B,) lengths -> (B, num_labels) logits at each sequence's last token."""
        T = input_ids.size(1)
        batch = self.attention_batch(lengths, T, backend)
        # right padding keeps every real token at its true position 0..len-1
        positions = torch.arange(T, device=input_ids.device)
        x = self.dropout(self.tokens(input_ids) + self.positions(positions))  # (B, T, C)
        if batch.packed:
            x = batch.pack(x)  # (N, C)
        for layer in self.layers:
            x = run_layer(layer, x, batch, checkpointing=self.gradient_checkpointing)
        last = gather_tokens(x, batch.lengths - 1, batch)  # (B, C)
        return self.score(self.final_norm(last))


# --- registry entry --------------------------------------------------------------------------

def _inner_size(fields: dict) -> None:
    fields["intermediate_size"] = fields["intermediate_size"] or 4 * fields["hidden_size"]  # n_inner null: 4 x n_embd


def _pad_with_eos(raw: dict) -> None:
    """GPT-2 has no pad token: reward models pad with eos (50256), so transformers reads the score
    at the last real token."""
    if raw.get("pad_token_id") is None:
        raw["pad_token_id"] = raw.get("eos_token_id", 50256)


GPT2 = Family(
    name="gpt2",
    model=GPT2RewardModel,
    architecture="GPT2ForSequenceClassification",
    model_type="gpt2",
    # GPT2Config's names and defaults
    config=ConfigFields(
        names=dict(vocab_size="vocab_size", hidden_size="n_embd", num_layers="n_layer", num_heads="n_head",
                   intermediate_size="n_inner", max_positions="n_positions", hidden_act="activation_function",
                   layer_norm_eps="layer_norm_epsilon", dropout="resid_pdrop", attention_dropout="attn_pdrop",
                   classifier_dropout="summary_first_dropout", pad_token_id="pad_token_id"),
        defaults=dict(vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=None,
                      max_positions=1024, type_vocab_size=0, hidden_act="gelu_new", layer_norm_eps=1e-5,
                      dropout=0.1, attention_dropout=0.1, classifier_dropout=None, pad_token_id=None),
        types={**dict.fromkeys(("vocab_size", "n_embd", "n_layer", "n_head", "n_positions"), POSITIVE_INT),
               "n_inner": INT,
               **dict.fromkeys(("layer_norm_epsilon", "resid_pdrop", "attn_pdrop", "summary_first_dropout"), NUMBER),
               "activation_function": STRING},
        derive=_inner_size,
    ),
    weight_map={
        "transformer.wte": "tokens",
        "transformer.wpe": "positions",
        "transformer.h.{}.ln_1": "layers.{}.attn_norm",
        "transformer.h.{}.attn.c_attn": ("layers.{}.attn.qkv", True),
        "transformer.h.{}.attn.c_proj": ("layers.{}.attn.o", True),
        "transformer.h.{}.ln_2": "layers.{}.mlp_norm",
        "transformer.h.{}.mlp.c_fc": ("layers.{}.up", True),
        "transformer.h.{}.mlp.c_proj": ("layers.{}.down", True),
        "transformer.ln_f": "final_norm",
        "score": "score",
    },
    ignore=(r".*\.attn\.bias", r".*\.attn\.masked_bias", r"lm_head\..*"),
    # the Hub's gpt2 base checkpoint was saved from GPT2Model: its keys have no "transformer." prefix
    renames={p: "transformer." + p for p in ("h.", "wte.", "wpe.", "ln_f.")},
    pair_input=False,  # one formatted text (the Pygmalion chat format), its score read at the last token
    truncation_side="left",  # keep the end of the conversation
    base_tokenizer="openai-community/gpt2",  # the CHAI card loads "gpt2"'s tokenizer; its repo ships none
    reward_fields=_pad_with_eos,
    aliases=(Alias("chai-gpt2", "Jellywibble/CHAI_alignment_reward_model",
                   "GPT-2, 2 labels, Pygmalion chat format; score = P(label 1 = appropriate)"),),
)
