"""DeBERTa-v2 parity with transformers' DebertaV2ForSequenceClassification, fp32, 1e-5.

Tiny random checkpoints (hidden 32, 4 heads, initializer_range 0.2 so a wrong detail is
not hidden under the tolerance), one per config flag; the MiniLM WordPiece tokenizer
stands in for DeBERTa's SentencePiece one (same "[CLS] A [SEP] B [SEP]" pair layout).
Also: half precision, the fp16 pytorch_model.bin-only checkpoint as published, the
`oa-deberta` alias through an offline Hugging Face cache (main and refs/pr/1), and the
OpenAssistant ranking rule.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import transformers as tf

from minirm import MinirmError, Scorer
from minirm.scoring.openassistant import EMPTY_RESPONSE_SCORE, oa_empty_response, oa_rank_scores, split_oa_text
from minirm.batching import pad_batch
from hub_cache import put_snapshot
from packed_grads import assert_packed_grads_match_padded

ATOL = 1e-5
OA_REPO = "theblackcat102/deberta-v2-xxlarge-rm"

# relative attention with both terms, separate position projections, no buckets: the base
BASE = dict(relative_attention=True, pos_att_type="p2c|c2p", share_att_key=False, position_buckets=-1,
            max_relative_positions=-1, type_vocab_size=0)
# DeBERTa-v3 / v2-xxlarge style: no absolute positions, log buckets, normalised shared keys
V3 = dict(BASE, position_biased_input=False, position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
          hidden_act="gelu")
XXLARGE_LIKE = dict(V3, conv_kernel_size=3, conv_act="gelu", layer_norm_eps=1e-7)
CONFIGS = {
    "c2p+p2c": BASE,
    "c2p-only": dict(BASE, pos_att_type="c2p"),
    "p2c-only": dict(BASE, pos_att_type=["p2c"]),
    "share-att-key": dict(BASE, share_att_key=True),
    "buckets-8": dict(BASE, position_buckets=8, max_relative_positions=64),
    "buckets-8-shared": dict(BASE, position_buckets=8, max_relative_positions=64, share_att_key=True),
    "conv": dict(BASE, conv_kernel_size=3, conv_act="gelu"),
    "conv-tanh-groups": dict(BASE, conv_kernel_size=5, conv_groups=4),
    "v3": V3,
    "xxlarge-like": XXLARGE_LIKE,
    # sequences (up to ~170 tokens) far longer than the bucket range: distances are clamped
    "beyond-buckets": dict(V3, position_buckets=4, max_relative_positions=8),
    "beyond-max-relative": dict(BASE, max_relative_positions=6),
    "absolute-only": dict(relative_attention=False, pos_att_type=None, type_vocab_size=2),
    # pos_att_type without relative_attention: transformers still scales by sqrt(3 d)
    "absolute-scaled": dict(relative_attention=False, pos_att_type="p2c|c2p"),
    "embed-proj": dict(BASE, embedding_size=16, type_vocab_size=2),
}


def deberta_config(**overrides) -> tf.DebertaV2Config:
    kw = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=512, initializer_range=0.2, num_labels=1, pad_token_id=0)
    kw.update(overrides)
    return tf.DebertaV2Config(**kw)


def random_deberta(config: tf.DebertaV2Config) -> tf.DebertaV2ForSequenceClassification:
    """A transformers model whose every parameter is random, in eval mode.

    transformers initialises biases to 0, LayerNorm weights to 1 and the [PAD] embedding
    row to 0. Left so, a misnamed bias or LayerNorm, or a pad embedding that should have
    been masked, would change nothing; so these get noise of the same 0.2 scale too."""
    model = tf.DebertaV2ForSequenceClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * config.initializer_range)
        model.deberta.embeddings.word_embeddings.weight[config.pad_token_id].normal_(0, config.initializer_range)
    return model.eval()


def save_minilm_tokenizer(out) -> None:
    from conftest import save_tokenizer

    save_tokenizer("bert", out, None)  # MiniLM WordPiece: vocab 30522, [CLS] A [SEP] B [SEP]


@pytest.fixture(scope="module")
def make_deberta(tmp_path_factory):
    """make_deberta(name) -> (directory, transformers model in eval mode), built once per name."""
    cache = {}

    def make(name: str, seed: int = 0):
        if (name, seed) not in cache:
            torch.manual_seed(seed)
            model = random_deberta(deberta_config(**CONFIGS[name]))
            out = tmp_path_factory.mktemp(f"deberta-{name}")
            model.save_pretrained(out)
            save_minilm_tokenizer(out)
            cache[name, seed] = (out, model)
        return cache[name, seed]

    return make


@functools.lru_cache(maxsize=None)
def _hf_tokenizer(model_dir):
    return tf.AutoTokenizer.from_pretrained(model_dir)


def hf_pair_batch(model_dir, prompts, responses, max_length):
    tok = _hf_tokenizer(model_dir)
    return tok(prompts, responses, truncation=True, max_length=max_length, padding=True,
               return_token_type_ids=False, return_tensors="pt")


def our_logits(scorer: Scorer, ids, backend: str | None = None) -> torch.Tensor:
    input_ids, lengths = pad_batch(ids, scorer.tokenizer.pad_id, "cpu")
    with torch.no_grad():
        return scorer.model(input_ids, lengths, backend or scorer.attention).float()


def hf_logits(model, ids, pad_id: int = 0) -> torch.Tensor:
    input_ids, lengths = pad_batch(ids, pad_id, "cpu")
    mask = (torch.arange(input_ids.size(1))[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask).logits


# --- relative positions ----------------------------------------------------------------------------


@pytest.mark.parametrize("buckets,max_distance", [(4, 8), (8, 64), (256, 512), (256, 1024), (16, 17)])
def test_log_buckets_equal_transformers(buckets, max_distance):
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position, make_log_bucket_position

    from minirm.kernels.deberta_reference import log_bucket, relative_positions

    distances = torch.arange(-3000, 3001)
    expected = make_log_bucket_position(distances, buckets, max_distance).long()
    assert torch.equal(log_bucket(distances, buckets, max_distance), expected)
    x = torch.zeros(1, 300, 4)
    assert torch.equal(relative_positions(300, buckets, max_distance, "cpu"),
                       build_relative_position(x, x, buckets, max_distance)[0])


# --- logit parity ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers(make_deberta, pairs, name):
    model_dir, hf_model = make_deberta(name)
    prompts, responses = pairs
    enc = hf_pair_batch(model_dir, prompts, responses, 512)
    with torch.no_grad():
        expected = hf_model(**enc).logits

    scorer = Scorer.from_pretrained(str(model_dir))
    ids = scorer.encode_pairs(prompts, responses)
    hf_ids = [row[: int(m.sum())].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    assert ids == hf_ids  # same tokens: [CLS] prompt [SEP] response [SEP]
    assert len(set(map(len, ids))) > 1  # the batch really is padded
    for attention in ("packed", "sdpa", "eager"):
        got = our_logits(scorer, ids, attention)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0, msg=lambda m, a=attention: f"{a}: {m}")
    # and through the public API, batched by length and put back in order
    scores = scorer.score_pairs(prompts, responses)
    torch.testing.assert_close(torch.tensor(scores), expected[:, 0], atol=ATOL, rtol=0)


def test_truncation_matches_transformers(make_deberta, pairs):
    model_dir, hf_model = make_deberta("xxlarge-like")
    prompts, responses = pairs
    enc = hf_pair_batch(model_dir, prompts, responses, 24)
    with torch.no_grad():
        expected = hf_model(**enc).logits
    scorer = Scorer.from_pretrained(str(model_dir), max_length=24)
    ids = scorer.encode_pairs(prompts, responses)
    assert ids == [row[: int(m.sum())].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    torch.testing.assert_close(our_logits(scorer, ids), expected, atol=ATOL, rtol=0)


def test_long_sequence_beyond_bucket_range(make_deberta):
    """~60-token sequences against 4 buckets / 8 relative positions, padded in one batch."""
    model_dir, hf_model = make_deberta("beyond-buckets")
    scorer = Scorer.from_pretrained(str(model_dir))
    g = torch.Generator().manual_seed(3)
    ids = [[101] + torch.randint(1000, 30000, (n,), generator=g).tolist() + [102] for n in (60, 41, 7)]
    for attention in ("packed", "sdpa"):
        torch.testing.assert_close(our_logits(scorer, ids, attention), hf_logits(hf_model, ids), atol=ATOL, rtol=0)


# runs of equal length beside single sequences, 1 and 2 tokens, and 60 (beyond 8 relative positions)
RAGGED = [60, 17, 17, 17, 9, 2, 2, 1]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_packed_matches_transformers_and_padded_with_gradients(make_deberta, name):
    """Packed (the CPU default), each run of equal-length sequences gets its own (L, L) bias and the
    ConvLayer reads no other sequence's tokens: logits equal transformers', gradients the padded path's."""
    model_dir, hf_model = make_deberta(name)
    scorer = Scorer.from_pretrained(str(model_dir))
    assert scorer.attention == "packed"
    g = torch.Generator().manual_seed(5)
    ids = [torch.randint(1000, 30000, (n,), generator=g).tolist() for n in RAGGED]
    torch.testing.assert_close(our_logits(scorer, ids, "packed"), hf_logits(hf_model, ids), atol=ATOL, rtol=0)
    assert_packed_grads_match_padded(model_dir, ids, ATOL)


def test_scores_independent_of_batch_size(make_deberta, pairs):
    model_dir, _ = make_deberta("xxlarge-like")
    prompts, responses = pairs
    one = Scorer.from_pretrained(str(model_dir), batch_size=1).score_pairs(prompts, responses)
    many = Scorer.from_pretrained(str(model_dir), batch_size=5).score_pairs(prompts, responses)
    torch.testing.assert_close(torch.tensor(one), torch.tensor(many), atol=ATOL, rtol=0)


def test_triton_attention_refuses_head_dims_the_kernel_lacks(make_deberta):
    """These test models have head dim 8; the kernel takes 16 to 128: an explicit triton run is
    refused before loading, in one line (test_deberta_kernel.py runs head dim 16 on the kernel)."""
    model_dir, _ = make_deberta("xxlarge-like")
    with pytest.raises(MinirmError, match="head dim 8 is not one the kernel takes"):
        Scorer.from_pretrained(str(model_dir), attention="triton", device="cpu")


@pytest.mark.parametrize("mutation", ["scale", "rel-norm", "distance-sign", "conv", "embedding-mask"])
def test_a_wrong_detail_fails_parity(make_deberta, pairs, monkeypatch, mutation):
    """The tolerance is tight enough to catch small mistakes: each of these breaks it by far."""
    from minirm.kernels import deberta_reference

    model_dir, hf_model = make_deberta("xxlarge-like")
    prompts, responses = pairs
    scorer = Scorer.from_pretrained(str(model_dir))
    ids = scorer.encode_pairs(prompts, responses)
    expected = hf_logits(hf_model, ids)
    torch.testing.assert_close(our_logits(scorer, ids), expected, atol=ATOL, rtol=0)
    encoder = scorer.model.encoder
    if mutation == "scale":  # BERT's 1/sqrt(d) instead of 1/sqrt(3d)
        for layer in encoder.layers:
            layer.attn.scale = 1.0 / math.sqrt(scorer.cfg.head_dim)
    elif mutation == "rel-norm":  # forget the LayerNorm on the relative embeddings
        encoder.rel_norm = None
    elif mutation == "distance-sign":  # i - j read as j - i
        real = deberta_reference.relative_distances
        monkeypatch.setattr(deberta_reference, "relative_distances", lambda *a: real(*a).flip(0))
    elif mutation == "conv":  # drop the ConvLayer after the first block
        encoder.conv = None
    elif mutation == "embedding-mask":  # leave pad embeddings non-zero: the conv reads them
        monkeypatch.setattr(encoder.embed, "forward", lambda ids, mask, f=encoder.embed.forward: f(ids, None))
    # the packed path never reads a pad embedding: only the padded one can get the mask wrong
    backend = "sdpa" if mutation == "embedding-mask" else None
    error = (our_logits(scorer, ids, backend) - expected).abs().max().item()
    assert error > 100 * ATOL, f"{mutation}: max error {error:.2e} would hide under the tolerance"


# --- half precision ------------------------------------------------------------------------------

# bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%), fp16 11 bits (0.05%); the
# rounding of every matmul, LayerNorm and softmax adds up over the layers. Measured over 12
# random models (xxlarge-like, c2p+p2c, v3, conv x 3 seeds; logits up to 1.9): bf16 is off
# by at most 0.019, fp16 by at most 0.003 - transformers itself, run in bf16 / fp16, is off
# by up to 0.020 / 0.004 on the same models. The bounds below leave a margin of 2.5x or more
# and still fail on a real mistake: a wrong scale moves these logits by 0.13 - 0.81.
# Relative error alone is no guide: a logit near 0 has a large one.
HALF_TOLERANCE = {"bfloat16": (5e-2, 2e-2), "float16": (1.25e-2, 5e-3)}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["xxlarge-like", "c2p+p2c"])
def test_half_precision_agrees_with_fp32(make_deberta, pairs, dtype, name):
    model_dir, _ = make_deberta(name)
    prompts, responses = pairs
    full = Scorer.from_pretrained(str(model_dir))
    half = Scorer.from_pretrained(str(model_dir), dtype=dtype)
    ids = full.encode_pairs(prompts, responses)
    reference = our_logits(full, ids)
    atol, rtol = HALF_TOLERANCE[dtype]
    for attention in ("packed", "sdpa", "eager"):
        got = our_logits(half, ids, attention)
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), attention
        torch.testing.assert_close(got, reference, atol=atol, rtol=rtol, msg=lambda m, a=attention: f"{a}: {m}")
    assert all(math.isfinite(s) for s in half.score_pairs(prompts, responses))


# --- checkpoints as published ----------------------------------------------------------------------


def save_fp16_bin(model, out) -> None:
    """The layout of the published checkpoint: config.json + fp16 pytorch_model.bin only."""
    model.save_pretrained(out)  # config.json (with architectures); transformers 5 writes only safetensors
    (out / "model.safetensors").unlink()
    torch.save({k: v.half() for k, v in model.state_dict().items()}, out / "pytorch_model.bin")


def test_fp16_pytorch_model_bin_scored_in_fp32(tmp_path, pairs):
    torch.manual_seed(11)
    model = random_deberta(deberta_config(**XXLARGE_LIKE))
    save_fp16_bin(model, tmp_path)
    save_minilm_tokenizer(tmp_path)
    assert not list(tmp_path.glob("*.safetensors"))
    reference = tf.DebertaV2ForSequenceClassification.from_pretrained(tmp_path, dtype=torch.float32).eval()
    scorer = Scorer.from_pretrained(str(tmp_path))  # float32 by default
    prompts, responses = pairs
    ids = scorer.encode_pairs(prompts, responses)
    expected = hf_logits(reference, ids)
    torch.testing.assert_close(our_logits(scorer, ids), expected, atol=ATOL, rtol=0)
    # the fp16 storage really is what both read: fp32 weights would score differently
    assert (hf_logits(model, ids) - expected).abs().max() > ATOL


def test_extra_keys_transformers_drops_are_ignored(tmp_path, pairs):
    """An old persistent position_ids buffer and position_embeddings of a
    position_biased_input=false model load silently in transformers; so they do here."""
    torch.manual_seed(5)
    model = random_deberta(deberta_config(**V3))
    model.save_pretrained(tmp_path)
    save_minilm_tokenizer(tmp_path)
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["deberta.embeddings.position_ids"] = torch.arange(512)[None]
    state["deberta.embeddings.position_embeddings.weight"] = torch.randn(512, 32)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    scorer = Scorer.from_pretrained(str(tmp_path))
    ids = scorer.encode_pairs(*pairs)
    torch.testing.assert_close(our_logits(scorer, ids), hf_logits(model, ids), atol=ATOL, rtol=0)
    # anything else is still an error
    state["lm_predictions.lm_head.bias"] = torch.zeros(30522)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MinirmError, match="does not use"):
        Scorer.from_pretrained(str(tmp_path))


def test_roundtrip_through_minirm_save(tmp_path, make_deberta, pairs):
    from minirm import load_model, save_model

    model_dir, hf_model = make_deberta("embed-proj")
    model, _ = load_model(model_dir)
    save_model(model, tmp_path / "saved", tokenizer_dir=model_dir)
    reloaded, info = tf.DebertaV2ForSequenceClassification.from_pretrained(
        tmp_path / "saved", dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # the weights are exact through the save; two separately built models can still differ in the last
    # float bit (memory alignment picks the vector kernels), so their logits are compared to a tolerance
    saved = reloaded.state_dict()
    for name, tensor in hf_model.state_dict().items():
        assert torch.equal(saved[name], tensor), name
    scorer = Scorer.from_pretrained(str(tmp_path / "saved"))
    ids = scorer.encode_pairs(*pairs)
    torch.testing.assert_close(hf_logits(reloaded.eval(), ids), hf_logits(hf_model, ids), atol=ATOL, rtol=0)


# --- the oa-deberta alias through an offline Hugging Face cache ----------------------------------


@pytest.fixture
def oa_cache(tmp_path, monkeypatch):
    """A cache holding main (fp16 pytorch_model.bin) and refs/pr/1 (model.safetensors, other weights)."""
    cache = tmp_path / "hub"
    models = {}
    for ref, seed in (("main", 21), ("refs/pr/1", 22)):
        torch.manual_seed(seed)
        model = random_deberta(deberta_config(**XXLARGE_LIKE))
        src = tmp_path / f"src-{seed}"
        src.mkdir()
        save_minilm_tokenizer(src)
        if ref == "main":
            save_fp16_bin(model, src)
            weights = "pytorch_model.bin"
            model = tf.DebertaV2ForSequenceClassification.from_pretrained(src, dtype=torch.float32).eval()
        else:
            model.save_pretrained(src)
            weights = "model.safetensors"
        put_snapshot(cache, "model", OA_REPO, {n: (src / n).read_bytes() for n in ("config.json", weights, "tokenizer.json")},
                     revision=ref)
        models[ref] = model
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return models


@pytest.mark.parametrize("revision", [None, "refs/pr/1"])
def test_oa_deberta_alias_from_offline_cache(oa_cache, pairs, revision):
    prompts, responses = pairs
    scorer = Scorer.from_pretrained("oa-deberta", revision=revision)
    assert scorer.cfg.family == "deberta-v2"
    expected = hf_logits(oa_cache[revision or "main"], scorer.encode_pairs(prompts, responses))[:, 0]
    torch.testing.assert_close(torch.tensor(scorer.score_pairs(prompts, responses)), expected, atol=ATOL, rtol=0)


def test_oa_deberta_cli_revision(oa_cache, capsys):
    from minirm.scoring.cli import main

    assert main(["--model", "oa-deberta", "--revision", "refs/pr/1", "Hi", "Hello there!"]) == 0
    printed = float(capsys.readouterr().out.strip())
    scorer = Scorer.from_pretrained("oa-deberta", revision="refs/pr/1")
    expected = hf_logits(oa_cache["refs/pr/1"], scorer.encode_pairs(["Hi"], ["Hello there!"]))[0, 0].item()
    assert printed == pytest.approx(expected, abs=1e-5)


def test_oa_deberta_missing_revision_fails_offline(oa_cache):
    with pytest.raises(MinirmError, match="not in the Hugging Face cache"):
        Scorer.from_pretrained("oa-deberta", revision="refs/pr/2")


# --- the OpenAssistant ranking rule ----------------------------------------------------------------


def test_split_oa_text():
    assert split_oa_text("What is 2+2?[SEP]4, of course.") == ("What is 2+2?", "4, of course.")
    assert split_oa_text("q[SEP]a [SEP] b") == ("q", "a [SEP] b")  # only the first [SEP] separates
    assert split_oa_text("[SEP]") == ("", "")
    assert split_oa_text(" q [SEP] a ") == (" q ", " a ")  # nothing is stripped
    with pytest.raises(MinirmError, match="no \\[SEP\\]"):
        split_oa_text("no separator here")


@pytest.mark.parametrize("postfix,empty", [
    ("", True), ("ok", True), ("....", True), ("abab", True), (" a\nb", False), ("abc ", False),
    ("Paris.", False), ("aaaaaaaaaaaaaaabbbbbbbbbbccc", True),
])
def test_oa_empty_response(postfix, empty):
    assert oa_empty_response(postfix) is empty


def test_oa_rank_scores_skips_the_model_for_near_empty_responses():
    calls = []

    def score_pairs(prompts, responses):
        calls.append((prompts, responses))
        return [float(len(r)) for r in responses]

    texts = ["q1[SEP]a real answer", "q2[SEP]", "q3[SEP]!!!", "q4[SEP]another one"]
    assert oa_rank_scores(texts, score_pairs) == [13.0, EMPTY_RESPONSE_SCORE, EMPTY_RESPONSE_SCORE, 11.0]
    assert calls == [(["q1", "q4"], ["a real answer", "another one"])]
    assert oa_rank_scores(["q[SEP]"], score_pairs) == [-4.0] and len(calls) == 1  # no model call at all
