"""Decoder LLM reward models (llama, mistral, qwen2, qwen3, gemma2) against transformers, fp32, 1e-5.

Every variant is a tiny random model built and saved by transformers 5.25 (the reference), loaded
by minirm, and compared on padded batches of texts of different lengths, on the packed, padded
(sdpa) and eager paths: grouped-query ratios 1, 2 and 4, head_dim unlike hidden / heads, tied
embeddings, biases, Qwen3's q/k norms, RoPE scaling (llama3, linear, dynamic), sliding windows
small enough to matter, Gemma 2's soft-capping. The tokenizer is a byte-level BPE trained here on
the test texts, with a BOS token (transformers' PreTrainedTokenizerFast reads the same file).
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
import transformers as tf
from conftest import PROMPTS, RESPONSES
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from minirm import MinirmError, Scorer
from minirm.batching import pad_batch
from minirm.checkpoint import load_model
from minirm.models import FAMILIES

ATOL = 1e-5
PAD, BOS, EOS = 0, 1, 2
VOCAB = 400
TEXTS = [p + "\n" + r for p, r in zip(PROMPTS, RESPONSES)] + ["Hi", "Paris."]

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, initializer_range=0.2, max_position_embeddings=256, pad_token_id=PAD,
              bos_token_id=BOS, eos_token_id=EOS, num_labels=1)
LLAMA3 = dict(rope_type="llama3", rope_theta=500.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)
# variant: (transformers classes, config overrides)
VARIANTS = {
    "llama": ("Llama", {}),  # 4 query heads share 2 K/V heads
    "llama-mha-biases": ("Llama", dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True)),
    "llama-mqa-wide-tied": ("Llama", dict(num_key_value_heads=1, head_dim=24, tie_word_embeddings=True)),
    "llama-llama3-rope": ("Llama", dict(rope_parameters=LLAMA3)),
    "llama-linear-rope": ("Llama", dict(rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=4.0))),
    "llama-dynamic-rope": ("Llama", dict(max_position_embeddings=24,
                                         rope_parameters=dict(rope_type="dynamic", rope_theta=500.0, factor=3.0))),
    "mistral-window": ("Mistral", dict(sliding_window=5)),
    "qwen2": ("Qwen2", {}),
    "qwen2-window": ("Qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "qwen3": ("Qwen3", dict(head_dim=24)),
    # hidden 48: sqrt(48) = 6.93 is not a bf16 number, so the embedding scale's rounding shows
    "gemma2": ("Gemma2", dict(hidden_size=48, head_dim=24, sliding_window=5, query_pre_attn_scalar=20,
                              attn_logit_softcapping=2.0)),
    "gemma2-no-cap": ("Gemma2", dict(head_dim=16, attn_logit_softcapping=None, sliding_window=6,
                                     layer_types=["full_attention", "sliding_attention", "full_attention"])),
}
FAMILY_OF = {"Llama": "llama", "Mistral": "mistral", "Qwen2": "qwen2", "Qwen3": "qwen3", "Gemma2": "gemma2"}


def hf_config(variant: str, **overrides):
    prefix, options = VARIANTS[variant]
    return getattr(tf, f"{prefix}Config")(**{**COMMON, **options, **overrides})


def hf_model(variant: str, seed: int = 0, **overrides):
    """A random transformers model with every parameter perturbed (no bias or norm left at 0 or 1)."""
    prefix, _ = VARIANTS[variant]
    torch.manual_seed(seed)
    config = hf_config(variant, **overrides)
    # Gemma 2 on its eager attention, the only one of transformers' that soft-caps the scores:
    # transformers 5.17 runs it on SDPA by default and silently drops the capping (5.25 refuses
    # SDPA with soft-capping), so the default would be a wrong reference under 5.17.
    if prefix == "Gemma2":
        config._attn_implementation = "eager"
    model = getattr(tf, f"{prefix}ForSequenceClassification")(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def save_tokenizer(out, bos: bool = True) -> None:
    """A byte-level BPE trained on the test texts: <pad> 0, <s> 1, </s> 2; <s> first when `bos`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROMPTS + RESPONSES, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", BOS)])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
         "pad_token": "<pad>"}))


@pytest.fixture(scope="session")
def llm(tmp_path_factory):
    """llm(variant) -> (directory, transformers model in eval mode), built once per session."""
    cache = {}

    def make(variant: str):
        if variant not in cache:
            model = hf_model(variant)
            out = tmp_path_factory.mktemp(variant)
            model.save_pretrained(out)
            save_tokenizer(out)
            cache[variant] = (out, model)
        return cache[variant]

    return make


def ragged_ids(lengths, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [[BOS] + torch.randint(3, VOCAB, (n - 1,), generator=g).tolist() for n in lengths]  # no pad id inside


def hf_logits(model, ids, pad: int = PAD) -> torch.Tensor:
    """transformers' logits of right-padded `ids`; `pad` must be the model's pad_token_id (its score
    is read at the rightmost token that is not)."""
    input_ids, lengths = pad_batch(ids, pad, "cpu")
    mask = (torch.arange(input_ids.size(1))[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


def our_logits(model, ids, backend: str) -> torch.Tensor:
    with torch.no_grad():
        return model(*pad_batch(ids, PAD, "cpu"), backend)


# runs of equal lengths beside single sequences, one and two tokens included
LENGTHS = [40, 40, 23, 9, 9, 9, 2, 1]
FIXED_LENGTH_VARIANTS = [v for v in VARIANTS if v != "llama-dynamic-rope"]


@pytest.mark.parametrize("variant", FIXED_LENGTH_VARIANTS)
def test_logits_match_transformers_on_every_path(llm, variant):
    model_dir, reference = llm(variant)
    model, cfg = load_model(model_dir)
    assert cfg.family == FAMILY_OF[VARIANTS[variant][0]]
    ids = ragged_ids(LENGTHS)
    expected = hf_logits(reference, ids)
    for backend in ("packed", "sdpa", "eager"):
        torch.testing.assert_close(our_logits(model, ids, backend), expected, atol=ATOL, rtol=0, msg=backend)


@pytest.mark.parametrize("variant", FIXED_LENGTH_VARIANTS)
@pytest.mark.parametrize("max_length", [None, 12])  # 12 truncates every longer text
def test_scorer_tokenizes_and_scores_as_transformers(llm, variant, max_length):
    model_dir, reference = llm(variant)
    scorer = Scorer.from_pretrained(str(model_dir), max_length=max_length, batch_size=3)
    assert scorer.attention == "packed"  # the CPU default
    tok = tf.AutoTokenizer.from_pretrained(model_dir, truncation_side="left")  # the end kept: minirm's rule
    truncate = dict(truncation=True, max_length=max_length) if max_length else {}
    hf_ids = [tok(t, **truncate)["input_ids"] for t in TEXTS]
    assert scorer.encode([_text(t) for t in TEXTS]) == hf_ids
    assert len(set(map(len, hf_ids))) > 1 and hf_ids[0][0] == BOS
    expected = hf_logits(reference, hf_ids)[:, 0]
    torch.testing.assert_close(torch.tensor(scorer.score_texts(TEXTS)), expected, atol=ATOL, rtol=0)


def _text(t):
    from minirm.text.records import Sample

    return Sample(None, t)


EDGE_TEXTS = ["", " ", "\t\n  ", "\n", "Is the sky blue?\n", "Once upon a time " * 40]


@pytest.mark.parametrize("variant", ["llama", "qwen3", "gemma2"])
def test_empty_blank_and_over_long_texts(llm, variant):
    """An empty text is its BOS alone; blanks are their whitespace tokens; an over-long text is cut
    at max_length from the left (its end is where the score is read), as transformers'
    tokenizer(truncation=True) cuts it with truncation_side="left": BOS stays first."""
    model_dir, reference = llm(variant)
    scorer = Scorer.from_pretrained(str(model_dir), max_length=64)
    tok = tf.AutoTokenizer.from_pretrained(model_dir, truncation_side="left")
    hf_ids = [tok(t, truncation=True, max_length=64)["input_ids"] for t in EDGE_TEXTS]
    assert hf_ids[0] == [BOS] and len(hf_ids[-1]) == 64
    assert scorer.encode([_text(t) for t in EDGE_TEXTS]) == hf_ids
    expected = hf_logits(reference, hf_ids)[:, 0]
    torch.testing.assert_close(torch.tensor(scorer.score_texts(EDGE_TEXTS)), expected, atol=ATOL, rtol=0)


def test_a_tokenizer_without_bos_refuses_an_empty_text(llm, tmp_path):
    model_dir, _ = llm("qwen2")
    shutil.copytree(model_dir, tmp_path / "m")
    save_tokenizer(tmp_path / "m", bos=False)  # Qwen's tokenizers add no BOS
    scorer = Scorer.from_pretrained(str(tmp_path / "m"))
    with pytest.raises(MinirmError, match="sample 1: tokenizes to nothing"):
        scorer.score_texts(["Hi", ""])


@pytest.mark.parametrize("variant", ["llama", "mistral-window", "qwen3", "gemma2"])
def test_scores_independent_of_batch_size_and_backend(llm, variant):
    model_dir, _ = llm(variant)
    one = Scorer.from_pretrained(str(model_dir), batch_size=1, attention="sdpa").score_texts(TEXTS)
    many = Scorer.from_pretrained(str(model_dir), batch_size=4).score_texts(TEXTS)
    torch.testing.assert_close(torch.tensor(one), torch.tensor(many), atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", ["mistral-window", "qwen2-window", "gemma2", "gemma2-no-cap"])
def test_the_window_matters_in_these_tests(llm, variant):
    """Without its window the reference scores differently: the windowed tests test the window."""
    _, reference = llm(variant)
    unwindowed = hf_model(variant, sliding_window=10_000)
    unwindowed.load_state_dict(reference.state_dict())
    ids = ragged_ids(LENGTHS)
    assert (hf_logits(reference, ids) - hf_logits(unwindowed, ids)).abs().max() > 1e-3


def test_gemma2_soft_capping_matters_in_these_tests(llm):
    _, reference = llm("gemma2")
    uncapped = hf_model("gemma2", attn_logit_softcapping=None)
    uncapped.load_state_dict(reference.state_dict())
    ids = ragged_ids(LENGTHS)
    assert (hf_logits(reference, ids) - hf_logits(uncapped, ids)).abs().max() > 1e-3


# --- dynamic RoPE ----------------------------------------------------------------------------

def test_dynamic_rope_scales_each_sequence_by_its_own_length(llm):
    """Past max_position_embeddings (24 here) dynamic RoPE depends on the length: minirm scales each
    sequence by its own, which is transformers' score of that sequence alone. (transformers itself
    would scale a padded batch by its longest sequence, and keep the longest it has seen.)"""
    model_dir, _ = llm("llama-dynamic-rope")
    model, _ = load_model(model_dir)
    lengths = [60, 60, 45, 31, 24, 20, 9, 1]
    ids = ragged_ids(lengths, seed=3)
    # transformers, one sequence at a time, shortest first: each length past 24 recomputes the frequencies
    fresh = hf_model("llama-dynamic-rope")
    alone = {}
    for i in sorted(range(len(ids)), key=lambda i: len(ids[i])):
        alone[i] = hf_logits(fresh, [ids[i]])
    expected = torch.cat([alone[i] for i in range(len(ids))])
    for backend in ("packed", "sdpa", "eager"):
        torch.testing.assert_close(our_logits(model, ids, backend), expected, atol=ATOL, rtol=0, msg=backend)
    # the scaling matters here: plain RoPE scores the long ones differently
    plain = hf_model("llama-dynamic-rope", rope_parameters=dict(rope_type="default", rope_theta=500.0))
    assert (hf_logits(plain, ids[:1]) - expected[:1]).abs().max() > 1e-3
    # up to max_position_embeddings, a padded batch is transformers' padded batch
    short = ids[5:]
    torch.testing.assert_close(our_logits(model, short, "packed"), hf_logits(hf_model("llama-dynamic-rope"), short),
                               atol=ATOL, rtol=0)


def test_dynamic_rope_reads_past_max_position_embeddings(llm):
    model_dir, _ = llm("llama-dynamic-rope")
    scorer = Scorer.from_pretrained(str(model_dir), max_length=100)  # 24 positions, scaled dynamically
    assert scorer.tokenizer.max_length == 100
    fixed_dir, _ = llm("llama")
    with pytest.raises(MinirmError, match="exceeds this model's 256 positions"):
        Scorer.from_pretrained(str(fixed_dir), max_length=300)
    assert Scorer.from_pretrained(str(fixed_dir)).tokenizer.max_length == 256  # its whole context by default


# --- config.json as published ------------------------------------------------------------------

@pytest.mark.parametrize("rope", [None, LLAMA3, dict(type="linear", factor=4.0), dict(rope_type="dynamic", factor=3.0)])
def test_published_rope_theta_and_rope_scaling_read_as_transformers_reads_them(llm, tmp_path, rope):
    """Published config.json files carry rope_theta and rope_scaling (older ones "type", not
    "rope_type"), not transformers 5's rope_parameters: both read the same."""
    variant = "llama-dynamic-rope" if rope and rope.get("rope_type") == "dynamic" else "llama"
    model_dir, _ = llm(variant)
    out = shutil.copytree(model_dir, tmp_path / "published")
    raw = json.loads((out / "config.json").read_text())
    del raw["rope_parameters"]
    raw["rope_theta"] = 321.0
    if rope is not None:
        raw["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    (out / "config.json").write_text(json.dumps(raw))
    reference = tf.LlamaForSequenceClassification.from_pretrained(out).eval()
    assert reference.config.rope_parameters["rope_theta"] == 321.0
    model, cfg = load_model(out)
    assert cfg.extra.rope.theta == 321.0
    ids = ragged_ids([20, 13, 5])
    torch.testing.assert_close(our_logits(model, ids, "packed"), hf_logits(reference, ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("raw, message", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, r"RoPE type 'yarn' is not one minirm computes"),
    ({"num_key_value_heads": 3}, r"4 attention heads cannot be shared among 3 key/value heads"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}},
     r"needs a positive high_freq_factor, not None"),
])
def test_configs_it_cannot_build_are_one_line(raw, message):
    from minirm.config import ModelConfig

    base = {"architectures": ["LlamaForSequenceClassification"], "model_type": "llama", "hidden_size": 64,
            "num_attention_heads": 4, "num_hidden_layers": 2}
    with pytest.raises(MinirmError, match=message):
        ModelConfig.from_dict({**base, **raw})


def test_gemma2_bidirectional_attention_is_refused():
    from minirm.config import ModelConfig

    with pytest.raises(MinirmError, match="use_bidirectional_attention is set"):
        ModelConfig.from_dict({"architectures": ["Gemma2ForSequenceClassification"], "model_type": "gemma2",
                               "use_bidirectional_attention": True})


def test_llama3_eos_token_list_is_read():
    from minirm.config import ModelConfig

    cfg = ModelConfig.from_dict({"architectures": ["LlamaForSequenceClassification"], "model_type": "llama",
                                 "eos_token_id": [128001, 128008, 128009]})
    assert cfg.family == "llama"
    with pytest.raises(MinirmError, match="'eos_token_id' must be an integer or a list of integers"):
        ModelConfig.from_dict({"model_type": "llama", "eos_token_id": ["x"]})


# --- the rest of the contract --------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["llama", "llama-mha-biases", "mistral-window", "qwen2", "qwen3", "gemma2"])
def test_packed_gradients_match_padded(llm, variant):
    """Training takes the packed path on CPU: every parameter's gradient equals the padded path's."""
    from packed_grads import assert_packed_grads_match_padded

    model_dir, _ = llm(variant)
    # these random models' gradients reach 40: float32 sums in another order differ by 1e-4 at most there
    assert_packed_grads_match_padded(model_dir, ragged_ids([30, 30, 17, 7, 7, 2, 1], seed=1), atol=2e-4)


def test_gemma2_is_refused_on_the_triton_kernel(llm):
    """The varlen kernel serves Llama, Mistral, Qwen2 and Qwen3; Gemma 2's soft-capping and windows it has not."""
    assert all(FAMILIES[f].supports_triton for f in ("llama", "mistral", "qwen2", "qwen3"))
    assert not FAMILIES["gemma2"].supports_triton
    model_dir, _ = llm("gemma2")
    model, cfg = load_model(model_dir)
    assert not cfg.spec.supports_triton
    with pytest.raises(MinirmError, match="cannot run on the triton kernel"):
        model(*pad_batch(ragged_ids([3]), PAD, "cpu"), "triton")


@pytest.fixture(scope="module")
def qwen3_gqa(tmp_path_factory):
    """A tiny Qwen3 with 8 query heads sharing 2 K/V heads of 16 (a head dim the kernel takes)."""
    model = hf_model("qwen3", num_attention_heads=8, num_key_value_heads=2, head_dim=16)
    out = tmp_path_factory.mktemp("qwen3-gqa")
    model.save_pretrained(out)
    save_tokenizer(out)
    return out, model


# the kernel in Triton's interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1)
@pytest.mark.parametrize("variant", ["qwen3-gqa", "llama", "mistral-window", "qwen2-window"])
def test_triton_kernel_matches_transformers(llm, qwen3_gqa, variant):
    """The packed path through the varlen kernel, K/V heads grouped (4 or 2 query heads per K/V
    head): transformers' logits to 1e-5 in fp32. mistral-window's window (5) and qwen2-window's
    (4, from its second layer on) are shorter than the batch: those layers run SDPA, the others the kernel."""
    pytest.importorskip("triton")
    model_dir, reference = qwen3_gqa if variant == "qwen3-gqa" else llm(variant)
    model, _ = load_model(model_dir)
    ids = ragged_ids(LENGTHS)
    torch.testing.assert_close(our_logits(model, ids, "triton"), hf_logits(reference, ids), atol=ATOL, rtol=0)


def test_triton_kernel_serves_a_window_as_long_as_the_batch(llm, monkeypatch):
    """A sliding window no shorter than the batch's longest sequence hides nothing: the layer runs on the kernel."""
    pytest.importorskip("triton")
    from minirm.kernels import attention

    model_dir, reference = llm("mistral-window")  # window 5
    model, _ = load_model(model_dir)
    calls = []
    kernel = attention.varlen_attention
    monkeypatch.setattr(attention, "varlen_attention", lambda *a, **k: calls.append(a[1].shape) or kernel(*a, **k))
    short = ragged_ids([5, 3, 1])
    torch.testing.assert_close(our_logits(model, short, "triton"), hf_logits(reference, short), atol=ATOL, rtol=0)
    assert calls == [(9, 2, 16)] * 3  # every layer, K/V with their 2 heads
    calls.clear()
    our_logits(model, ragged_ids([6, 3]), "triton")
    assert calls == []  # a window shorter than the batch: SDPA


def test_triton_kernel_gradients_match_padded(qwen3_gqa):
    """Training takes the kernel on CUDA: dq, and dk and dv summed over each group's query heads,
    reach every parameter as the padded path's gradients do."""
    pytest.importorskip("triton")
    from packed_grads import assert_packed_grads_match_padded

    model_dir, _ = qwen3_gqa
    assert_packed_grads_match_padded(model_dir, ragged_ids([30, 17, 17, 2, 1], seed=1), atol=2e-4, backend="triton")


def test_gemma2_embeddings_are_scaled_in_their_own_dtype(llm):
    """sqrt(hidden) rounded to the embeddings' dtype before the product (sqrt(48) = 6.93 is 6.94 in
    bf16), as transformers computes it: bit for bit."""
    model_dir, reference = llm("gemma2")
    model, _ = load_model(model_dir, torch.bfloat16)
    ids = torch.tensor(ragged_ids([7]))
    with torch.no_grad():
        ours = model.embed(ids)
        theirs = copy.deepcopy(reference).to(torch.bfloat16).model.embed_tokens(ids)  # the shared one stays fp32
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, theirs)
    exact = model.tokens(ids).float() * 48 ** 0.5  # the scale not rounded first: another result
    assert not torch.equal(ours.float(), exact.to(torch.bfloat16).float())


@pytest.mark.parametrize("variant", ["llama", "qwen3", "gemma2"])
def test_bf16_computes_as_transformers_bf16(llm, variant):
    """In bf16 the model computes as transformers does in bf16 (norms in float32, RoPE tables cast,
    soft-capping), up to the rounding of bf16 logits of this size (1/64 near 2 to 4); the Scorer
    then runs the head in float32."""
    model_dir, reference = llm(variant)
    ids = ragged_ids([100, 60, 20, 5])
    model, _ = load_model(model_dir, torch.bfloat16)
    expected = hf_logits(copy.deepcopy(reference).to(torch.bfloat16), ids).float()  # the shared one stays fp32
    for backend in ("packed", "sdpa", "eager"):
        torch.testing.assert_close(our_logits(model, ids, backend).float(), expected, atol=0.05, rtol=0, msg=backend)
    scorer = Scorer.from_pretrained(str(model_dir), dtype="bfloat16")
    assert all(p.dtype == torch.float32 for m in (scorer.model.final_norm, scorer.model.score) for p in m.parameters())
    assert next(scorer.model.tokens.parameters()).dtype == torch.bfloat16


def test_the_last_real_token_is_read_even_when_it_is_the_pad_token(llm):
    """transformers reads the rightmost token that is not pad_token_id; minirm the last real one."""
    model_dir, reference = llm("qwen3")
    model, _ = load_model(model_dir)
    ids = [[BOS, 50, 60, PAD], [BOS, 50, 60, 70, 80]]
    ours = our_logits(model, ids, "packed")
    for i, seq in enumerate(ids):  # each alone: transformers' hidden state at its final token
        with torch.no_grad():
            last = reference.model(torch.tensor([seq])).last_hidden_state[:, -1]
            torch.testing.assert_close(ours[i : i + 1], reference.score(last), atol=ATOL, rtol=0)
    assert (hf_logits(reference, ids[:1]) - ours[:1]).abs().max() > 1e-4  # transformers reads token 2 there


def test_skywork_aliases_name_their_families():
    from minirm import hub

    families = {a.repo: f.name for f in FAMILIES.values() for a in f.aliases}
    expected = {**{f"Skywork/Skywork-Reward-V2-Qwen3-{s}": "qwen3" for s in ("0.6B", "1.7B", "4B", "8B")},
                **{f"Skywork/Skywork-Reward-V2-Llama-3.2-{s}": "llama" for s in ("1B", "3B")},
                "Skywork/Skywork-Reward-V2-Llama-3.1-8B": "llama", "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2": "llama",
                "Skywork/Skywork-Reward-Gemma-2-27B-v0.2": "gemma2"}
    assert {repo: families[repo] for repo in expected} == expected
    assert set(expected) <= set(hub.ALIASES.values())
