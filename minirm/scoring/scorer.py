"""Scoring: samples -> format -> tokenize -> batch by length -> model -> score.

Batches are formed from sequences of similar length (sorted, then cut into batches), so
little compute goes to padding; scores are put back in input order. A sequence's score
does not depend on what it is batched with: padding is masked out of attention and the
head reads each sequence's own token.

How a score is made from the logits (each family's entry names its rule, `Family.score`):
- 1 label:                  the raw logit (Aira, Aux, OpenAssistant)
- the Aira regression head: head output x alpha (--alpha, default 1, as the published forward)
- 2 labels:                 P(label 1) = softmax(logits)[1] (CHAI: label 1 is "appropriate")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attention import check_backend, choose_backend
from ..batching import length_batches, pad_batch
from ..checkpoint import check_reward_checkpoint, load_model
from ..config import ModelConfig
from ..console import Progress
from ..cpu import can_prepack
from ..devices import check_device
from ..errors import MinirmError, check_number
from ..hub import resolve_model
from ..text.records import Sample, has_lone_surrogate
from ..text.templates import TemplateRefused
from ..text.tokenizer import RewardTokenizer, find_tokenizer, load_tokenizer
from .openassistant import oa_empty_response, oa_rank_pair_scores, split_oa_text

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Scorer:
    model: torch.nn.Module
    cfg: ModelConfig
    tokenizer: RewardTokenizer
    device: torch.device
    batch_size: int = 32
    attention: str = "packed"  # from_pretrained picks: packed on CPU, triton (or sdpa) on CUDA
    alpha: float = 1.0
    oa_rank: bool = False  # apply OpenAssistant's rank_model_fn conventions (see openassistant.py)
    # (rank, world) under torchrun: each process runs every world-th batch of the one batch plan
    # that a single process would run, so the scores are the single process's, bit for bit
    shard: tuple[int, int] = (0, 1)
    # what the caller named (an alias, a repo id or a directory) and the directory it resolved to:
    # the model a summary reports, never config.json's _name_or_path (the base of every fine-tune)
    name: str | None = None
    path: Path | None = None

    @classmethod
    def from_pretrained(cls, name: str, revision: str | None = None, device: str | None = None,
                        dtype: str | None = None, max_length: int | None = None, truncation_side: str | None = None,
                        tokenizer: str | None = None, attention: str | None = None, batch_size: int = 32,
                        alpha: float | None = None, chat_names: dict | None = None,
                        prepack: bool | None = None) -> "Scorer":
        """Everything the caller can get wrong is checked before the weights load: the options,
        then the config and the tokenizer against them.

        `dtype` None: float32, or bfloat16 for a family published in bf16 (the LLMs) whose
        checkpoint is bf16 (default_dtype). `prepack` lays bf16 linear weights out for oneDNN on
        CPU (cpu.py); None: where the CPU multiplies bf16 natively (AMX or AVX-512 BF16)."""
        device = check_device(device)
        if dtype is not None and dtype not in DTYPES:
            raise MinirmError(f"unknown --dtype {dtype!r}; choose float32, bfloat16 or float16")
        check_number("batch_size", batch_size, integer=True, low=1)
        check_number("max_length", max_length, integer=True, low=1, optional=True)
        check_number("alpha", alpha, optional=True)
        if attention is not None:
            check_backend(attention, device)
        model_dir = resolve_model(name, revision)
        cfg = ModelConfig.from_file(model_dir / "config.json")
        check_reward_checkpoint(model_dir, cfg)
        dtype = dtype or default_dtype(cfg)
        if cfg.num_labels not in (1, 2):
            raise MinirmError(f"{name}: {cfg.num_labels} labels; a reward score needs a 1- or 2-label head")
        if alpha is not None and not cfg.spec.takes_alpha:
            raise MinirmError(f"--alpha applies only to the Aira regression model (model_type bert-reward); "
                              f"drop it for this {cfg.family} model")
        attention = choose_backend(attention, device, cfg.head_dim, DTYPES[dtype], cfg.spec.supports_triton)
        tok = load_tokenizer(find_tokenizer(tokenizer, model_dir, cfg), cfg, max_length, truncation_side, chat_names)
        # bf16 on CPU: each linear weight laid out for oneDNN as it loads (cpu.py), one copy at a time
        prepack = can_prepack(DTYPES[dtype], device) if prepack is None else prepack
        model, cfg = load_model(model_dir, DTYPES[dtype], device, config=cfg, prepack=prepack)
        if DTYPES[dtype] != torch.float32:
            model.float_head()  # scores in float32: no ties made by rounding
        return cls(model, cfg, tok, device, batch_size, attention, 1.0 if alpha is None else alpha,
                   name=str(name), path=model_dir)

    # --- public API ---------------------------------------------------------------------
    def score_pairs(self, prompts: list[str], responses: list[str], progress: bool = False) -> list[float]:
        prompts, responses = _strings("prompts", prompts), _strings("responses", responses)
        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses differ in length ({len(prompts)} and {len(responses)})")
        return self.score_samples([Sample.pair(p, r) for p, r in zip(prompts, responses)], progress)

    def score_texts(self, texts: list[str], progress: bool = False) -> list[float]:
        return self.score_samples([Sample(None, t) for t in _strings("texts", texts)], progress)

    def encode_pairs(self, prompts: list[str], responses: list[str]) -> list[list[int]]:
        prompts, responses = _strings("prompts", prompts), _strings("responses", responses)
        if len(prompts) != len(responses):
            raise ValueError(f"prompts and responses differ in length ({len(prompts)} and {len(responses)})")
        return self.encode([Sample.pair(p, r) for p, r in zip(prompts, responses)])

    def score_samples(self, samples: list[Sample], progress: bool = False,
                      labels: list[str] | None = None) -> list[float]:
        """Scores in input order. `labels` (one per sample, e.g. "file.jsonl:4 (field 'text')")
        name a sample in the one-line error when it cannot be scored."""
        try:
            if not self.oa_rank:
                return self.score_ids(self.encode(samples), progress)
            # OpenAssistant's rank_model_fn: "prompt[SEP]response" texts are split into pairs, and a
            # response of fewer than 4 distinct characters scores -4 without the model
            pairs = [split_oa_text(s.response) if s.prompt is None else (s.prompt, s.response) for s in samples]
            keep = [i for i, (_, post) in enumerate(pairs) if not oa_empty_response(post)]
            try:
                return oa_rank_pair_scores(
                    pairs, lambda ps, rs: self.score_ids(self.encode_pairs(ps, rs), progress)
                )
            except SampleError as e:
                raise SampleError(keep[e.index], e.reason) from None
        except (SampleError, TemplateRefused) as e:  # a chat template's refusal names its sample too
            name = labels[e.index] if labels is not None else f"sample {e.index}"
            raise MinirmError(f"{name}: {e.reason}") from None

    # --- the pipeline ---------------------------------------------------------------------
    def encode(self, samples: list[Sample]) -> list[list[int]]:
        return self.tokenizer.encode_samples(samples)

    @torch.inference_mode()
    def score_ids(self, sequences: list[list[int]], progress: bool = False) -> list[float]:
        empty = [i for i, s in enumerate(sequences) if not s]
        if empty:
            raise SampleError(empty[0], "tokenizes to nothing; give it some text")
        unknown = self.tokenizer.first_unknown(sequences)
        if unknown is not None:
            raise SampleError(unknown[0], self.tokenizer.unknown_reason(unknown[1]))
        # identical inputs are scored once: saves work, and a tie stays a tie bit for bit
        # (the same row in two differently padded batches can differ in the last float bit)
        unique: dict[tuple[int, ...], int] = {}
        slot = [unique.setdefault(tuple(s), len(unique)) for s in sequences]
        distinct = list(unique)
        scores = [0.0] * len(distinct)
        rank, world = self.shard
        mine = length_batches([len(s) for s in distinct], self.batch_size)[rank::world]
        bar = Progress(sum(map(len, mine)), "seq", "scoring", enabled=progress)
        for batch_idx in mine:
            for i, s in zip(batch_idx, self.forward_batch([distinct[i] for i in batch_idx])):
                scores[i] = s
            bar.update(len(batch_idx))
        bar.close()
        if world > 1:
            scores = _gather_scores(scores, [i for b in mine for i in b], world)
        bad = [i for i, j in enumerate(slot) if not math.isfinite(scores[j])]
        if bad:
            raise SampleError(bad[0], overflow_reason(scores[slot[bad[0]]], self.dtype))
        return [scores[j] for j in slot]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the encoder runs in (the head may run in float32)."""
        return next(p.dtype for p in self.model.parameters() if p.is_floating_point())

    @torch.inference_mode()
    def forward_batch(self, sequences: list[list[int]]) -> list[float]:
        """One forward over token lists, padded together: their raw scores, unchecked."""
        ids, lengths = pad_batch(sequences, self.tokenizer.pad_id, self.device)
        return self.logits_to_scores(self.model(ids, lengths, self.attention).float()).tolist()

    def logits_to_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, num_labels) -> (B,) scores, by the family's rule (see the module docstring)."""
        return self.cfg.spec.score(logits, self.alpha)


def default_dtype(cfg: ModelConfig) -> str:
    """float32, except for a family the registry marks as published in bf16 whose config.json says
    the weights are bf16 ("torch_dtype" up to transformers 4, "dtype" from 5): the LLM reward
    models are trained, published and run in bf16, and fp32 would double their memory."""
    published = cfg.raw.get("dtype") or cfg.raw.get("torch_dtype")
    return "bfloat16" if cfg.spec.bf16_when_published and published == "bfloat16" else "float32"


def overflow_reason(score: float, dtype: torch.dtype) -> str:
    """Why a score is not finite, and what else to try: the weights are finite (checked at load), so
    the activations overflowed the dtype; a wider dtype is the cure, where there is one."""
    name = str(dtype).removeprefix("torch.")
    wider = {torch.float16: "score with --dtype bfloat16 or float32", torch.bfloat16: "score with --dtype float32"}
    cure = wider.get(dtype, "float32 is already the widest, so look at the text and the checkpoint")
    return f"the model scores it {score}: its activations overflowed {name} on this input; {cure}"


def _gather_scores(scores: list[float], mine: list[int], world: int) -> list[float]:
    """Every process's share of the scores, put together on every process."""
    import torch.distributed as dist

    shares: list = [None] * world
    dist.all_gather_object(shares, {i: scores[i] for i in mine})
    merged = list(scores)
    for share in shares:
        for i, s in share.items():
            merged[i] = s
    return merged


class SampleError(MinirmError):
    """One sample cannot be scored; `index` is its position in the list being scored."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"sample {index}: {reason}")
        self.index, self.reason = index, reason


def _strings(name: str, values) -> list[str]:
    """`values` as a list of str, or a TypeError naming the argument and the first bad item's index."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, not a single {type(values).__name__}; wrap it in a list")
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, got {type(values).__name__}") from None
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(v).__name__}"
                            + ("; use score_texts for texts without a prompt" if v is None and name == "prompts" else ""))
        if has_lone_surrogate(v):
            raise ValueError(f"{name}[{i}] holds a lone surrogate (\\ud800-\\udfff without its pair), which is not text")
    return values

