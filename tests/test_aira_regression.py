"""The older Aira regression RewardModel, in the layout it was published in.

The reference is tests/aira_remote_code.py: the published remote code's modules and forward,
rebuilt from its facts on transformers' BertModel, saved with `save_pretrained` as the Hub
checkpoint was. minirm must score what that code scores (times alpha), and save what that
code loads back with no missing or unexpected tensor.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from safetensors import safe_open

import minirm
from minirm import MinirmError, Scorer
from minirm.scoring.cli import main as score_main
from minirm.training.cli import main as train_main
from aira_remote_code import AUTO_MAP, RewardModel
from conftest import PROMPTS, RESPONSES, save_tokenizer, tiny_config

ATOL = 1e-5
# the published config.json's own fields (everything else is BertConfig's)
PUBLISHED_FIELDS = {"architectures": ["RewardModel"], "model_type": "bert-reward", "auto_map": AUTO_MAP,
                    "linear_layer_output": 1}
PUBLISHED_HEAD = {"cls_layer1.weight", "cls_layer1.bias", "ff1.weight", "ff1.bias", "ff2.weight", "ff2.bias",
                  "bert.pooler.dense.weight", "bert.pooler.dense.bias"}


def one_pair_scores(model_dir, reference: RewardModel, prompts, responses, alpha=1.0) -> torch.Tensor:
    """The reference's scores, each pair tokenized alone as the model card does, run as one padded batch."""
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    ids = [tok(p, r, truncation=True, max_length=512)["input_ids"] for p, r in zip(prompts, responses)]
    assert len(set(map(len, ids))) > 1  # the batch really is padded
    batch = tok.pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        return reference(batch["input_ids"], batch["attention_mask"], alpha=alpha)[:, 0]


def tensor_names(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("alpha", [None, 2.5, -0.5])
def test_published_layout_scores_as_its_remote_code(make_checkpoint, alpha):
    model_dir, reference = make_checkpoint("bert-reward")
    assert PUBLISHED_HEAD <= tensor_names(model_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    assert PUBLISHED_FIELDS.items() <= config.items() and "alpha" not in config

    got = Scorer.from_pretrained(str(model_dir), alpha=alpha).score_pairs(PROMPTS, RESPONSES)
    want = one_pair_scores(model_dir, reference, PROMPTS, RESPONSES, alpha=1.0 if alpha is None else alpha)
    torch.testing.assert_close(torch.tensor(got), want, atol=ATOL, rtol=0)


def test_pytorch_bin_with_position_ids_buffer(make_checkpoint, tmp_path):
    """Checkpoints saved by the transformers of 2023 were pytorch_model.bin and held the
    position_ids buffer; both load, the buffer ignored as transformers ignores it."""
    model_dir, reference = make_checkpoint("bert-reward")
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save(state, tmp_path / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    got = Scorer.from_pretrained(str(tmp_path)).score_pairs(PROMPTS, RESPONSES)
    torch.testing.assert_close(torch.tensor(got), one_pair_scores(model_dir, reference, PROMPTS, RESPONSES),
                               atol=ATOL, rtol=0)


def test_head_of_more_than_one_output_is_refused(make_checkpoint, tmp_path):
    from aira_remote_code import tiny_reward_model

    model = tiny_reward_model(tiny_config("bert"))
    model.config.linear_layer_output = 3
    model.ff2 = torch.nn.Linear(model.config.linear_layer, 3)
    model.save_pretrained(tmp_path)
    with pytest.raises(MinirmError, match=r"linear_layer_output is 3.*must have linear_layer_output 1") as err:
        minirm.load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_another_remote_code_reward_model_is_not_taken_for_aira():
    from minirm.config import ModelConfig

    with pytest.raises(MinirmError, match="unsupported architecture"):
        ModelConfig.from_dict({"architectures": ["RewardModel"], "model_type": "llama"})


def test_save_writes_the_published_layout(make_checkpoint, tmp_path):
    src, reference = make_checkpoint("bert-reward")
    model, _ = minirm.load_model(src)
    with torch.no_grad():  # change every weight, so a save that copied the source would be caught
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = minirm.save_model(model, tmp_path / "saved", tokenizer_dir=src)

    config = json.loads((out / "config.json").read_text())
    assert PUBLISHED_FIELDS.items() <= config.items() and "alpha" not in config
    assert tensor_names(out / "model.safetensors") == set(reference.state_dict())
    # what the published remote code would build from these files: every tensor found, none left over
    reloaded, info = RewardModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    again, _ = minirm.load_model(out)
    for name, tensor in model.state_dict().items():  # bit for bit through the file
        assert torch.equal(again.state_dict()[name], tensor), name
    torch.testing.assert_close(torch.tensor(Scorer.from_pretrained(str(out)).score_pairs(PROMPTS, RESPONSES)),
                               one_pair_scores(src, reloaded.eval(), PROMPTS, RESPONSES), atol=ATOL, rtol=0)


def test_regression_recipe_output_loads_in_the_remote_code_and_scores_the_same(tmp_path, capsys):
    base = tmp_path / "bert-base-cased"
    torch.manual_seed(0)
    tf.BertForPreTraining(tiny_config("bert")).save_pretrained(base)
    save_tokenizer("bert", base, None)
    rows = [{"prompt": p, "response": r, "reward": (-1) ** i * 0.5} for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    data = tmp_path / "rewards.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    out = tmp_path / "run"
    assert train_main(["--recipe", "aira-regression", "--model", str(base), "--data", str(data), "--output", str(out),
                       "--max-steps", "3", "--batch-size", "4", "--max-length", "64", "--no-progress"]) == 0

    config = json.loads((out / "config.json").read_text())
    assert PUBLISHED_FIELDS.items() <= config.items() and config["linear_layer"] == 128 and "alpha" not in config
    reference, info = RewardModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # the unused pooler is carried from the base model unchanged, as the remote code's training left it
    base_pooler = tf.BertForPreTraining.from_pretrained(base).bert.pooler.dense.weight
    assert torch.equal(reference.bert.pooler.dense.weight, base_pooler)

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(PROMPTS, RESPONSES)))
    assert score_main(["--model", str(out), "--input", str(pairs), "--output", str(tmp_path / "s.jsonl"),
                       "--alpha", "2", "--max-length", "512"]) == 0
    got = [json.loads(line)["score"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    want = one_pair_scores(out, reference.eval(), PROMPTS, RESPONSES, alpha=2.0)
    torch.testing.assert_close(torch.tensor(got), want, atol=ATOL, rtol=0)
