"""The family registry (minirm/models): one entry per family holds every per-family fact, and
no module outside minirm/models/ decides anything by a family's name."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import PROMPTS, RESPONSES

import minirm
from minirm import MinirmError, Scorer, models
from minirm.checkpoint import load_for_training, load_model, reward_config
from minirm.config import FIELD_TYPES, ModelConfig, detect_family
from minirm.models.common import RewardModel

PACKAGE = Path(minirm.__file__).parent
FAMILY_NAMES = {"bert", "roberta", "gpt2", "bert-reward", "deberta-v2"} | set(models.FAMILIES)


def _family_literals(node: ast.AST) -> list[str]:
    """Family names written as string literals in `node`, or in the tuple / list / set it is."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [i.value for i in items if isinstance(i, ast.Constant) and i.value in FAMILY_NAMES]


def family_name_uses(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every family name compared against (==, !=, in), used as a dict key, as a
    subscript or as a match pattern: the decisions that belong in a family's registry entry."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            operands = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            operands = [node.slice]
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        else:
            continue
        found += [(node.lineno, name) for operand in operands for name in _family_literals(operand)]
    return found


def test_the_scan_finds_what_it_looks_for():
    code = """
if cfg.family == "gpt2": pass
x = family in ("bert", "bert-reward")
y = {"roberta": 1}
z = TABLE["deberta-v2"]
ok = "gpt2 models read one text"  # a message, not a decision
"""
    assert [name for _, name in family_name_uses(code)] == ["gpt2", "bert", "bert-reward", "roberta", "deberta-v2"]


def test_no_module_outside_models_decides_by_family_name():
    """Adding a family must mean one model file, its registry entry and its parity test: no other
    module may compare, key or index by a family's name (ask cfg.spec, the entry, instead)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "models") in path.parents:
            continue
        for line, name in family_name_uses(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name!r}")
    assert not offenders, "family names decided on outside minirm/models/:\n" + "\n".join(offenders)


# --- the entries --------------------------------------------------------------------------

# what each family is, as it was before the registry: the facts must not drift
EXPECTED = {
    # family: (architecture, pair input, truncation side, takes alpha, base tokenizer)
    "bert": ("BertForSequenceClassification", True, "right", False, "google-bert/bert-base-cased"),
    "roberta": ("RobertaForSequenceClassification", True, "right", False, "FacebookAI/roberta-base"),
    "bert-reward": ("RewardModel", True, "right", True, "google-bert/bert-base-cased"),
    "gpt2": ("GPT2ForSequenceClassification", False, "left", False, "openai-community/gpt2"),
    "deberta-v2": ("DebertaV2ForSequenceClassification", True, "right", False, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_entry_holds_its_facts(name):
    family = models.FAMILIES[name]
    assert family.name == name and family.model_type == name
    assert (family.architecture, family.pair_input, family.truncation_side, family.takes_alpha,
            family.base_tokenizer) == EXPECTED[name]
    assert issubclass(family.model, RewardModel)
    assert family.supports_triton == family.model.supports_triton is True  # DeBERTa: kernels/deberta.py
    assert models.supports_triton(name) == family.supports_triton
    # every shared ModelConfig field has a default where config.json leaves it out
    assert set(family.config.defaults) == {"vocab_size", "hidden_size", "num_layers", "num_heads",
                                           "intermediate_size", "max_positions", "type_vocab_size", "hidden_act",
                                           "layer_norm_eps", "dropout", "attention_dropout", "classifier_dropout",
                                           "pad_token_id"}
    assert set(family.config.names) <= set(family.config.defaults)
    assert set(family.config.types) <= set(FIELD_TYPES)


def test_registry_is_the_only_table():
    assert list(models.FAMILIES) == ["roberta", "bert", "bert-reward", "gpt2", "deberta-v2", "llama", "mistral", "qwen2",
                                     "qwen3", "gemma2"]
    assert len({f.architecture for f in models.FAMILIES.values()}) == len(models.FAMILIES)
    assert not hasattr(models, "register")  # entries are listed, never registered at import time
    from minirm import hub

    assert hub.ALIASES == {"aux-roberta": "nicholasKluge/Aux-RewardModel", "aira-bert": "nicholasKluge/RewardModel",
                           "chai-gpt2": "Jellywibble/CHAI_alignment_reward_model",
                           "oa-deberta": "theblackcat102/deberta-v2-xxlarge-rm",
                           # the Skywork-Reward-V2 collection's repositories, and the v0.2 models
                           "skywork-v2-llama-1b": "Skywork/Skywork-Reward-V2-Llama-3.2-1B",
                           "skywork-v2-llama-3b": "Skywork/Skywork-Reward-V2-Llama-3.2-3B",
                           "skywork-v2-llama-8b": "Skywork/Skywork-Reward-V2-Llama-3.1-8B",
                           "skywork-llama-8b-v0.2": "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
                           "skywork-v2-qwen3-0.6b": "Skywork/Skywork-Reward-V2-Qwen3-0.6B",
                           "skywork-v2-qwen3-1.7b": "Skywork/Skywork-Reward-V2-Qwen3-1.7B",
                           "skywork-v2-qwen3-4b": "Skywork/Skywork-Reward-V2-Qwen3-4B",
                           "skywork-v2-qwen3-8b": "Skywork/Skywork-Reward-V2-Qwen3-8B",
                           "skywork-gemma2-27b-v0.2": "Skywork/Skywork-Reward-Gemma-2-27B-v0.2"}
    assert list(hub.ALIAS_NOTES) == list(hub.ALIASES)
    families = {a.name: f.name for f in models.FAMILIES.values() for a in f.aliases}
    assert families == {"aux-roberta": "roberta", "aira-bert": "bert", "chai-gpt2": "gpt2", "oa-deberta": "deberta-v2",
                        **{a: "llama" for a in hub.ALIASES if "llama" in a},
                        **{a: "qwen3" for a in hub.ALIASES if "qwen3" in a}, "skywork-gemma2-27b-v0.2": "gemma2"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_family_is_found_by_architecture_and_by_model_type(name):
    family = models.FAMILIES[name]
    assert detect_family({"architectures": [family.architecture], "model_type": name}) == name
    assert detect_family({"model_type": name}) == name  # a base model's config
    assert detect_family({"architectures": ["SomethingForMaskedLM"], "model_type": name}) == name


def test_remote_code_reward_model_of_another_model_type_is_not_aira():
    with pytest.raises(MinirmError, match=r"unsupported architecture .* minirm supports BertForSequenceClassification, "
                                          r"DebertaV2ForSequenceClassification, GPT2ForSequenceClassification, "
                                          r"Gemma2ForSequenceClassification, LlamaForSequenceClassification, "
                                          r"MistralForSequenceClassification, Qwen2ForSequenceClassification, "
                                          r"Qwen3ForSequenceClassification, "
                                          r"RewardModel, RobertaForSequenceClassification"):
        detect_family({"architectures": ["RewardModel"], "model_type": "llama"})


def test_family_options_live_on_cfg_extra():
    bert = ModelConfig.from_dict({"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4})
    assert bert.extra is None and not hasattr(bert, "relative_attention")
    aira = ModelConfig.from_dict({"architectures": ["RewardModel"], "model_type": "bert-reward", "linear_layer": 16})
    assert aira.extra.linear_layer == 16 and aira.num_labels == 1
    deberta = ModelConfig.from_dict({"model_type": "deberta-v2", "pos_att_type": "P2C|c2p", "relative_attention": True,
                                     "position_biased_input": False})
    assert deberta.extra.pos_att_type == ("p2c", "c2p") and deberta.extra.relative_attention
    assert deberta.hidden_size == 1536 and deberta.layer_norm_eps == 1e-7  # DebertaV2Config's defaults
    from minirm.text.tokenizer import usable_positions

    assert usable_positions(deberta) == 1 << 20


@pytest.mark.parametrize("logits, labels, alpha, want", [
    ([[0.5], [-1.0]], 1, 1.0, [0.5, -1.0]),
    ([[0.0, 0.0], [0.0, 2.0]], 2, 1.0, [0.5, torch.tensor([0.0, 2.0]).softmax(0)[1].item()]),
])
def test_classifier_score_rule(logits, labels, alpha, want):
    got = models.FAMILIES["bert"].score(torch.tensor(logits), alpha)
    torch.testing.assert_close(got, torch.tensor(want))


def test_regression_score_takes_alpha():
    got = models.FAMILIES["bert-reward"].score(torch.tensor([[0.5], [-1.0]]), 3.0)
    torch.testing.assert_close(got, torch.tensor([1.5, -3.0]))


def test_regression_head_is_refused_on_another_encoder():
    gpt2 = ModelConfig.from_dict({"model_type": "gpt2"})
    with pytest.raises(MinirmError, match=r"^the Aira regression head sits on a BERT encoder, not on gpt2$"):
        reward_config(gpt2, 1, regression_head=True)
    assert reward_config(gpt2, 2).raw["pad_token_id"] == 50256  # GPT-2 reward models pad with eos


# --- the config is read once --------------------------------------------------------------

def count_config_reads(monkeypatch) -> list:
    reads = []
    real = ModelConfig.from_file.__func__

    def counting(cls, path):
        reads.append(Path(path))
        return real(cls, path)

    monkeypatch.setattr(ModelConfig, "from_file", classmethod(counting))
    return reads


def test_scorer_reads_config_json_once(make_checkpoint, monkeypatch):
    model_dir, _ = make_checkpoint("bert")
    reads = count_config_reads(monkeypatch)
    Scorer.from_pretrained(str(model_dir), device="cpu")
    assert reads == [model_dir / "config.json"]


def test_load_model_takes_a_config_already_read(make_checkpoint, tmp_path):
    src, _ = make_checkpoint("roberta")
    ckpt = shutil.copytree(src, tmp_path / "ckpt")
    cfg = ModelConfig.from_file(ckpt / "config.json")
    (ckpt / "config.json").write_text("not json")  # would fail if read again
    model, got = load_model(ckpt, config=cfg)
    assert got is cfg
    want, _ = load_model(src)
    ids = torch.tensor([[0, 5, 6, 2]])
    lengths = torch.tensor([4])
    torch.testing.assert_close(model(ids, lengths), want(ids, lengths), atol=0, rtol=0)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_load_for_training_takes_a_config_already_read(make_checkpoint, tmp_path, num_labels):
    src, _ = make_checkpoint("bert")  # a 1-label reward checkpoint: same head at 1 label, fresh at 2
    ckpt = shutil.copytree(src, tmp_path / "ckpt")
    cfg = ModelConfig.from_file(ckpt / "config.json")
    (ckpt / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    model, got, fresh = load_for_training(ckpt, num_labels, config=cfg)
    assert got.num_labels == num_labels and bool(fresh) == (num_labels == 2)
    assert model.training


def test_scores_are_unchanged_through_the_registry(make_checkpoint):
    """A smoke check on top of the parity tests: each family's scores are finite and follow its rule."""
    for name in ("bert", "roberta", "gpt2"):
        model_dir, _ = make_checkpoint(name)
        scores = Scorer.from_pretrained(str(model_dir), device="cpu").score_pairs(PROMPTS, RESPONSES)
        assert all(isinstance(s, float) for s in scores)
        if name == "gpt2":  # 2 labels: a probability
            assert all(0.0 <= s <= 1.0 for s in scores)
