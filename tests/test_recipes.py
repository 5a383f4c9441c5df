"""Every recipe end to end on a tiny stand-in: the recipe's own settings (optimizer, schedule,
loss, precision, checkpointing), a tiny *base* model of its family (a pretraining checkpoint,
so the reward head starts fresh as it would from bert-base-cased or gpt2), and a few rows
shaped like each of its datasets. The trained output then scores through score.py's path.

test_recipe_hub.py runs every recipe with no --model and no --data at all, on its published
base model and datasets in an offline Hugging Face cache.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import transformers as tf

from minirm import Scorer
from minirm.training.cli import main
from minirm.training.recipes import RECIPES, recipe_table
from conftest import save_tokenizer, tiny_config

HH = [{"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast, knead, let it rise, bake.",
       "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Figure it out."},
      {"chosen": "\n\nHuman: hi\n\nAssistant: Hello! How can I help you today?\n\nHuman: a joke?\n\nAssistant: "
                 "Why did the baker quit? He was tired of the daily grind.",
       "rejected": "\n\nHuman: hi\n\nAssistant: Hello! How can I help you today?\n\nHuman: a joke?\n\nAssistant: No."}]
AIRA = [{"instruction": "What is the capital of France?", "chosen_response": "The capital of France is Paris.",
         "rejected_response": "I don't know, maybe London."},
        {"instruction": "Explain photosynthesis.", "chosen_response": "Plants turn light, water and CO2 into sugar.",
         "rejected_response": "Photosynthesis is a kind of dance."}]
WEBGPT = [{"question": {"full_text": "Why is the sky blue?", "id": "q1"},
           "answer_0": "Rayleigh scattering favours short wavelengths [1].", "score_0": 1.0,
           "answer_1": "Because it reflects the sea.", "score_1": -1.0, "quotes_0": {}, "quotes_1": {}}]
SUMMARIZE = [{"info": {"id": "t1", "post": "My cat knocks everything off the table every morning.", "title": "cat",
                       "subreddit": "cats", "article": None, "site": None},
              "summaries": [{"text": "Cat likes pushing things.", "policy": "a", "note": ""},
                            {"text": "I own a table.", "policy": "b", "note": ""}], "choice": 0}]
CHAI = [{"input_text": "Bot's Persona: kind\n####\n\n<START>\nUser: hi\nBot: Hello friend, lovely to see you!",
         "labels": 1},
        {"input_text": "Bot's Persona: kind\n####\n\n<START>\nUser: hi\nBot: Leave me alone.", "labels": 0}]
CONVERSATIONS = [{"messages": [{"role": "user", "content": "Tell me a story"},
                               {"role": "assistant", "content": "Once upon a time a fox found a lantern."}], "label": 1},
                 {"messages": [{"role": "user", "content": "Tell me a story"},
                               {"role": "bot", "content": "no"}], "label": 0}]
REGRESSION = [{"prompt": "Say something nice.", "response": "You are doing great!", "reward": 0.9},
              {"prompt": "Say something nice.", "response": "Whatever.", "reward": -0.8}]


def write_jsonl(path: Path, rows, times: int = 4) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * times), encoding="utf-8")
    return path


def base_model(kind: str, out: Path, bpe_files: Path) -> Path:
    """A tiny pretraining checkpoint, saved as the Hub's base models are."""
    torch.manual_seed(0)
    if kind == "roberta":
        model = tf.RobertaForMaskedLM(tiny_config("roberta"))
    elif kind == "bert":
        model = tf.BertForPreTraining(tiny_config("bert"))
    elif kind == "gpt2":
        model = tf.GPT2Model(tiny_config("gpt2"))  # keys h.0..., as openai-community/gpt2 has them
    else:
        from test_deberta import XXLARGE_LIKE, deberta_config

        model = tf.DebertaV2ForMaskedLM(deberta_config(**XXLARGE_LIKE))
    model.save_pretrained(out)
    save_tokenizer("bert" if kind == "deberta" else kind, out, bpe_files)
    if kind == "gpt2":  # vocab.json + merges.txt only: training must write a tokenizer.json from them
        for f in out.glob("tokenizer*.json"):
            f.unlink()
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(bpe_files / f, out / f)
    return out


def run(recipe: str, model_dir: Path, out: Path, *data: Path, extra=()) -> dict:
    argv = ["--recipe", recipe, "--model", str(model_dir), "--output", str(out), "--no-progress",
            "--max-steps", "3", "--log-every", "1", "--max-length", "96", *extra]
    if data:
        argv += ["--data", *map(str, data)]
    assert main(argv) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file()
    return json.loads((out / "summary.json").read_text())


def train_losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "train"]


def test_list_recipes_names_every_recipe(capsys):
    """A table where the terminal is wide enough, else one block per recipe (issue 24: 80 columns)."""
    assert main(["--list-recipes"]) == 0
    assert capsys.readouterr().out == recipe_table() + "\n"
    wide, narrow = recipe_table(400), recipe_table(80)
    blocks = {block.splitlines()[0]: block for block in narrow.split("\n\n")}
    for name, r in RECIPES.items():
        line = next(l for l in wide.splitlines() if l.startswith(name + " "))
        for text in (line, " ".join(blocks[name].split())):
            assert r.get("model") in text and r.get("loss") in text and f"bs {r.get('batch_size')}" in text


def test_a_recipe_with_no_data_option_trains_on_its_sources_as_declared():
    from minirm.training.cli import build_parser, config_from_args

    for name, r in RECIPES.items():
        if r.data:
            cfg = config_from_args(build_parser().parse_args(["--recipe", name]))
            # the very objects, so no field (such as the parquet revision) can be lost on the way
            assert len(cfg.data) == len(r.data) and all(a is b for a, b in zip(cfg.data, r.data))
    oa = {s.source: s.revision for s in RECIPES["oa-deberta"].data}
    assert oa["openai/webgpt_comparisons"] == oa["openai/summarize_from_feedback"] == "refs/convert/parquet"


# what each model card trains with, written out: a recipe's settings over TrainConfig's defaults
CARDS = {
    "aux-roberta": dict(model="FacebookAI/roberta-base", loss="pairwise", lr=5e-5, schedule="linear", batch_size=32,
                        max_steps=10_000, max_length=512),
    "aira-bert": dict(model="google-bert/bert-base-cased", loss="pairwise", lr=5e-5, schedule="linear",
                      batch_size=42, max_steps=1_200, max_length=400),
    "aira-regression": dict(model="google-bert/bert-base-cased", loss="mse", regression_head=True, lr=1e-4,
                            schedule="constant", batch_size=64, epochs=5, max_length=512),
    "chai": dict(model="openai-community/gpt2", loss="cross_entropy", num_labels=2, lr=1e-5, schedule="linear",
                 betas=(0.9, 0.999), eps=1e-8, batch_size=16, eval_batch_size=64, epochs=3, max_length=1024,
                 precision="fp16", seed=42),
    "oa-deberta": dict(model="microsoft/deberta-v2-xxlarge", loss="ranking", lr=2e-6, schedule="cosine",
                       warmup_steps=600, weight_decay=0.01, max_grad_norm=2.0, batch_size=1, grad_accum=12, epochs=2,
                       max_length=512, precision="fp16", gradient_checkpointing=True),
    # the report's appendix E: lr 3e-6, constant, global batch 10,240, one epoch, 16,384 tokens
    "skywork-v2": dict(model="Qwen/Qwen3-0.6B", loss="pairwise", lr=3e-6, schedule="constant", batch_size=8,
                       grad_accum=1280, epochs=1, max_length=16_384, precision="bf16", gradient_checkpointing=True),
}


def test_every_recipe_is_its_cards_settings_over_the_train_config_defaults():
    from dataclasses import asdict

    from minirm.training.cli import build_parser, config_from_args
    from minirm.training.config import field_defaults

    assert set(CARDS) == set(RECIPES)
    for name, card in CARDS.items():
        data = [] if RECIPES[name].data else ["--data", "rows.jsonl"]
        cfg = config_from_args(build_parser().parse_args(["--recipe", name, *data]))
        want = {**field_defaults(), **card, "eval_fraction": 0.05, "output": f"runs/{name}", "data": cfg.data,
                "progress": cfg.progress, "chat_names": {"bot_name": None, "user_name": None, "memory": None}}
        got = asdict(cfg)
        got["data"] = cfg.data
        assert got == want, name


def test_options_set_the_field_of_their_name_over_the_recipe():
    from minirm.training.cli import build_parser, config_from_args

    def config(*argv):
        return config_from_args(build_parser().parse_args(["--recipe", "oa-deberta", *argv]))

    cfg = config("--lr", "1e-3", "--batch-size", "3", "--no-gradient-checkpointing", "--log-every", "4",
                 "--center-rewards-coefficient", "0.01", "--eval-fraction", "0.5")
    assert (cfg.lr, cfg.batch_size, cfg.gradient_checkpointing, cfg.log_every, cfg.center_rewards_coefficient,
            cfg.eval_fraction) == (1e-3, 3, False, 4, 0.01, 0.5)
    assert (cfg.grad_accum, cfg.warmup_steps, cfg.schedule) == (12, 600, "cosine")  # the recipe's, not given
    assert (cfg.save_total_limit, cfg.group_by_length, cfg.resume) == (2, True, False)  # TrainConfig's defaults
    assert config("--max-grad-norm", "0").max_grad_norm is None  # 0: no clipping
    # --max-steps overrides --epochs: --epochs alone replaces a recipe's step count
    assert (config("--epochs", "1").max_steps, config("--epochs", "1").epochs) == (None, 1)
    aira = config_from_args(build_parser().parse_args(["--recipe", "aira-bert", "--epochs", "1", "--max-steps", "5"]))
    assert (aira.max_steps, aira.epochs) == (5, 1)


def test_a_recipe_overrides_only_train_config_fields_and_cannot_change():
    from minirm.training.recipes import Recipe

    with pytest.raises(ValueError, match="learning_rate is not a TrainConfig field"):
        Recipe("typo", settings={"learning_rate": 1e-5}, adapter="preference")
    with pytest.raises(TypeError):
        RECIPES["chai"].settings["lr"] = 1.0
    assert RECIPES["chai"].get("lr") == 1e-5 and RECIPES["chai"].get("warmup_steps") == 0  # the default


def test_the_help_shows_the_defaults_of_train_config_and_the_recipes(capsys):
    from minirm.training.config import field_defaults

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = field_defaults()
    assert f"every N steps (default {d['log_every']}; 0: never)" in text
    assert f"checkpoints kept (default {d['save_total_limit']}; 0: all)" in text
    assert "(default: on)" in text and d["group_by_length"] is True
    assert "when there is no --eval-data (default 0.05)" in text
    assert {r.get("eval_fraction") for r in RECIPES.values()} == {0.05}


def test_aux_roberta_recipe_on_aira_and_hh_rows(tmp_path, bpe_files):
    base = base_model("roberta", tmp_path / "roberta-base", bpe_files)
    toxic = write_jsonl(tmp_path / "toxic-aira.jsonl", AIRA)
    hh = tmp_path / "hh.jsonl.gz"
    hh.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in HH * 4).encode()))
    summary = run("aux-roberta", base, tmp_path / "out", toxic, hh, extra=["--batch-size", "4"])
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["RobertaForSequenceClassification"] and cfg["num_labels"] == 1
    assert any(n.startswith("head.") for n in summary["new_parameters"])
    scorer = Scorer.from_pretrained(str(tmp_path / "out"))
    assert all(math.isfinite(s) for s in scorer.score_pairs([AIRA[0]["instruction"]], [AIRA[0]["chosen_response"]]))


def test_aira_bert_recipe(tmp_path, bpe_files):
    base = base_model("bert", tmp_path / "bert-base-cased", bpe_files)
    data = write_jsonl(tmp_path / "reward-aira.jsonl", AIRA)
    summary = run("aira-bert", base, tmp_path / "out", data, extra=["--batch-size", "4", "--eval-fraction", "0.25"])
    assert summary["eval"]["accuracy"] >= 0  # evaluated on the held-out quarter
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["lr"] == RECIPES["aira-bert"].get("lr")


def test_aira_regression_recipe_writes_the_regression_head(tmp_path, bpe_files):
    base = base_model("bert", tmp_path / "bert-base-cased", bpe_files)
    data = write_jsonl(tmp_path / "rewards.jsonl", REGRESSION)
    summary = run("aira-regression", base, tmp_path / "out", data, extra=["--batch-size", "4"])
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "bert-reward" and cfg["architectures"] == ["RewardModel"]
    assert {"rmse", "mae"} <= set(summary["eval"])
    scorer = Scorer.from_pretrained(str(tmp_path / "out"), alpha=2.0)
    one = Scorer.from_pretrained(str(tmp_path / "out"))
    pair = ([REGRESSION[0]["prompt"]], [REGRESSION[0]["response"]])
    assert scorer.score_pairs(*pair)[0] == pytest.approx(2.0 * one.score_pairs(*pair)[0], rel=1e-6)


def test_chai_recipe_on_chai_rows_and_conversations(tmp_path, bpe_files):
    base = base_model("gpt2", tmp_path / "gpt2", bpe_files)
    chai, convs = write_jsonl(tmp_path / "chai.jsonl", CHAI), write_jsonl(tmp_path / "convs.jsonl", CONVERSATIONS)
    # the card's recipe is fp16 AMP with a GradScaler; on this CPU it runs as it would on a GPU
    summary = run("chai", base, tmp_path / "out", chai, convs, extra=["--batch-size", "4"])
    assert all(math.isfinite(x) for x in train_losses(tmp_path / "out"))
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2ForSequenceClassification"] and cfg["num_labels"] == 2
    assert cfg["pad_token_id"] == 50256  # pad = eos, as the CHAI model has it
    assert "accuracy" in summary["eval"]
    scorer = Scorer.from_pretrained(str(tmp_path / "out"))
    assert scorer.tokenizer.truncation_side == "left"
    assert 0.0 <= scorer.score_pairs(["hi"], ["Hello friend!"])[0] <= 1.0


def test_oa_deberta_recipe_on_webgpt_summarize_and_hh_rows(tmp_path, bpe_files):
    base = base_model("deberta", tmp_path / "deberta-v2-xxlarge", bpe_files)
    files = [write_jsonl(tmp_path / "webgpt.jsonl", WEBGPT, 2), write_jsonl(tmp_path / "hh.jsonl", HH, 2)]
    # each source keeps its own adapter when given as the recipe lists them: run through the API
    from minirm.training.cli import build_parser, config_from_args
    from minirm.training.loop import DataSource, train

    args = build_parser().parse_args(["--recipe", "oa-deberta", "--model", str(base), "--output", str(tmp_path / "out"),
                                      "--no-progress", "--max-steps", "2", "--grad-accum", "2", "--max-length", "96"])
    cfg = config_from_args(args)
    assert (cfg.lr, cfg.schedule, cfg.warmup_steps, cfg.weight_decay, cfg.max_grad_norm) == (2e-6, "cosine", 600, 0.01, 2.0)
    assert cfg.precision == "fp16" and cfg.gradient_checkpointing and cfg.loss == "ranking"
    summarize = write_jsonl(tmp_path / "summarize.jsonl", SUMMARIZE, 2)
    cfg.data = [DataSource(str(files[0]), "webgpt"), DataSource(str(summarize), "summarize"),
                DataSource(str(files[1]), "preference")]
    cfg.eval_fraction = 0.2
    summary = train(cfg)
    assert summary["steps"] == 2 and all(math.isfinite(x) for x in train_losses(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["architectures"] == ["DebertaV2ForSequenceClassification"]
    hf = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()  # transformers loads it
    assert hf.config.num_labels == 1


def test_skywork_v2_recipe_trains_a_qwen3_base_on_conversation_pairs(tmp_path):
    """From a ForCausalLM base (its lm_head dropped, a new score head) on preference rows whose chosen
    and rejected are conversations, in the recipe's bf16 with checkpointing; a smaller batch than the
    report's 10,240 pairs a step, as on one CPU."""
    from test_llm_parity import hf_config
    from test_llm_templates import CONVERSATIONS, build

    chat_dir, _ = build(tmp_path / "chat", "qwen3")
    base = tmp_path / "Qwen3-0.6B"
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(chat_dir / name, base / name)
    torch.manual_seed(0)
    tf.Qwen3ForCausalLM(hf_config("qwen3", vocab_size=400, pad_token_id=0)).save_pretrained(base)
    rows = [{"chosen": m, "rejected": [*m[:-1], {"role": "assistant", "content": f"No. {i}"}]}
            for i, m in enumerate(CONVERSATIONS * 4)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    summary = run("skywork-v2", base, tmp_path / "out", data, extra=["--batch-size", "2", "--grad-accum", "2"])
    assert summary["steps"] == 3 and all(math.isfinite(x) for x in train_losses(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "train_config.json").read_text())
    assert (saved["lr"], saved["schedule"], saved["precision"]) == (3e-6, "constant", "bf16")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForSequenceClassification"] and cfg["num_labels"] == 1
    trained = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    tok = tf.AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = tok.apply_chat_template(CONVERSATIONS[0], tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    expected = trained(torch.tensor([ids])).logits[0, 0].item()
    got = Scorer.from_pretrained(str(tmp_path / "out"), dtype="float32").score_samples(
        [__import__("minirm.text.records", fromlist=["Sample"]).Sample.conversation(CONVERSATIONS[0])])[0]
    assert got == pytest.approx(expected, abs=1e-5)
