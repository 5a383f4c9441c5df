"""The training loop end to end on tiny models: every loss learns, a run killed with SIGKILL
resumes bit for bit, a save killed half-way leaves the previous checkpoint loadable, what
training writes loads in transformers with the same scores, DDP over gloo matches one
process, bf16 autocast runs, and bad input stops with one line.

Models are the tiny random checkpoints of conftest (built with transformers); data is
written by each test. Dropout stays on except where a comparison needs it off.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from minirm import MinirmError, Scorer
from minirm.checkpoint import load_for_training, load_model
from minirm.training.cli import main
from minirm.training.optim import lr_factor
from minirm.training.plan import epoch_steps
from minirm.text.records import Sample
from minirm.training.resume import checkpoint_dirs
from minirm.training.loop import DataSource, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

HELPFUL = ["Sure! Here is a careful, detailed and friendly answer to your question.",
           "Of course, happy to help: the steps are explained below, one by one.",
           "Great question. A polite and complete answer follows with examples."]
RUDE = ["No.", "Go away, figure it out yourself.", "I do not care about that at all."]


def pair_rows(n: int = 12) -> list[dict]:
    return [{"prompt": f"Question number {i}: how do I do thing {i}?",
             "chosen": HELPFUL[i % 3] + " " * (i % 2), "rejected": RUDE[i % 3] + " ok" * (i % 4)} for i in range(n)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def quick_config(model_dir, data, out, adapter="preference", eval_on_train=False, **kw) -> TrainConfig:
    """A short run on `data`; with eval_on_train, evaluation reads the training set (to check overfitting)."""
    src = DataSource(str(data), adapter)
    defaults = dict(model=str(model_dir), data=[src], eval_data=[src] if eval_on_train else [], output=str(out),
                    loss="pairwise", lr=2e-3, batch_size=4, max_steps=10, log_every=1, progress=False,
                    max_length=64, seed=0)
    defaults.update(kw)
    return TrainConfig(**defaults)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def loss_fell(out: Path, factor: float) -> bool:
    """Mean train loss of the last 5 steps below `factor` x that of the first 5 (single steps are noisy)."""
    losses = [r["loss"] for r in metrics(out) if r["split"] == "train"]
    return sum(losses[-5:]) / 5 < factor * sum(losses[:5]) / 5


# --- schedules ------------------------------------------------------------------------------

def test_lr_schedules_by_hand():
    assert [lr_factor(s, 10, 0, "linear") for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert [lr_factor(s, 10, 4, "linear") for s in (0, 2, 4, 7)] == [0.0, 0.5, 1.0, 0.5]
    assert lr_factor(4, 10, 4, "cosine") == 1.0
    assert lr_factor(7, 10, 4, "cosine") == pytest.approx(0.5)  # half-way: (1 + cos(pi / 2)) / 2
    assert lr_factor(10, 10, 4, "cosine") == pytest.approx(0.0)
    assert lr_factor(8, 12, 0, "cosine") == pytest.approx((1 + math.cos(math.pi * 8 / 12)) / 2)
    assert [lr_factor(s, 10, 2, "constant") for s in (1, 2, 9)] == [0.5, 1.0, 1.0]


def test_epoch_plan_is_fixed_by_seed_and_epoch_and_groups_lengths():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53] * 3
    a = epoch_steps(lengths, 4, seed=1, epoch=0, group_by_length=True, drop_last=False)
    assert a == epoch_steps(lengths, 4, seed=1, epoch=0, group_by_length=True, drop_last=False)
    assert a != epoch_steps(lengths, 4, seed=1, epoch=1, group_by_length=True, drop_last=False)
    assert sorted(i for s in a for i in s) == list(range(len(lengths)))
    # grouped: every step holds only short or only long examples
    assert all(len({lengths[i] >= 50 for i in step}) == 1 for step in a)
    assert len(epoch_steps(lengths[:10], 4, 0, 0, False, drop_last=True)) == 2


# --- every loss learns -----------------------------------------------------------------------

def test_pairwise_overfits(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("bert")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    cfg = quick_config(model_dir, data, tmp_path / "out", eval_on_train=True, max_steps=30,
                       center_rewards_coefficient=0.01)
    summary = train(cfg)
    assert loss_fell(tmp_path / "out", 0.5)
    assert summary["eval"]["accuracy"] == 1.0
    assert {"margin", "min_reward", "mean_reward", "max_reward"} <= set(summary["eval"])
    png = tmp_path / "out" / "curves.png"  # matplotlib is a test dependency
    assert summary["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_are_honest_for_a_short_run():
    """Three points around chance: the y-axis starts at 0 (accuracy spans 0 to 1), so noise stays
    flat; ln 2 and 0.5 are drawn as chance lines; steps are whole numbers; the points are marked."""
    from minirm.training.losses import make_objective
    from minirm.training.meter import curves_figure

    rows = [{"step": s, "split": "train", "loss": loss, "accuracy": acc}
            for s, loss, acc in ((10, 0.6931, 0.5), (20, 0.689, 0.55), (30, 0.694, 0.45))]
    rows.append({"step": 30, "split": "eval", "loss": 0.692, "accuracy": 0.5})
    fig = curves_figure(rows, make_objective("pairwise").chance(1), window=10)
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylim()[0] == 0 and loss_ax.get_ylim()[1] < 1
    assert acc_ax.get_ylim()[0] <= 0 and acc_ax.get_ylim()[1] >= 1
    for ax, level, name in ((loss_ax, math.log(2), "chance (ln 2)"), (acc_ax, 0.5, "chance (0.5)")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines[name].get_ydata()) == [level, level]
        assert lines["train (mean of up to 10 steps)"].get_marker() == "o"
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    one = curves_figure(rows[:1], make_objective("cross_entropy").chance(2), window=10)  # one logged point
    ax = one.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert make_objective("cross_entropy").chance(3) == {"loss": math.log(3), "accuracy": 1 / 3}
    assert make_objective("mse").chance(1) == {}


def test_ranking_overfits_groups_of_three(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("roberta")
    rows = [{"prompt": f"Tell me about topic {i}.", "responses": [HELPFUL[i % 3], "It is a topic. " + RUDE[(i + 1) % 3],
                                                               RUDE[i % 3]]} for i in range(8)]
    data = write_jsonl(tmp_path / "ranked.jsonl", rows)
    summary = train(quick_config(model_dir, data, tmp_path / "out", "ranking", eval_on_train=True, loss="ranking",
                                 max_steps=30))
    assert loss_fell(tmp_path / "out", 0.5)
    assert summary["eval"]["accuracy"] == 1.0  # all 3 ordered pairs of every group


def test_regression_head_overfits_with_mse(make_checkpoint, tmp_path):
    # no dropout: a 32-wide model regressing exact values is swamped by dropout noise
    model_dir, _ = make_checkpoint("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rows = [{"prompt": f"Prompt {i}", "response": (HELPFUL + RUDE)[i % 6], "reward": [0.8, 0.5, 0.9, -0.7, -0.9, -0.4][i % 6]}
            for i in range(12)]
    data = write_jsonl(tmp_path / "rewards.jsonl", rows)
    # batches in random order, not grouped by length: here length alone tells good from bad
    # replies, so length-sorted batches would hold only high or only low targets each
    summary = train(quick_config(model_dir, data, tmp_path / "out", "regression", eval_on_train=True, loss="mse",
                                 regression_head=True, max_steps=40, lr=1e-3, batch_size=6, group_by_length=False))
    assert loss_fell(tmp_path / "out", 0.3)
    assert summary["eval"]["rmse"] < 0.2
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model_type"] == "bert-reward" and saved["linear_layer"] == 128


def test_two_label_chai_overfits_with_cross_entropy(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("gpt2")
    rows = [{"input_text": f"Bot's Persona: \n####\n\n<START>\nUser: hello {i}\nBot: {(HELPFUL + RUDE)[i % 6]}",
             "labels": int(i % 6 < 3)} for i in range(12)]
    data = write_jsonl(tmp_path / "chai.jsonl", rows)
    summary = train(quick_config(model_dir, data, tmp_path / "out", "chai", eval_on_train=True,
                                 loss="cross_entropy", num_labels=2, max_steps=30))
    assert loss_fell(tmp_path / "out", 0.5)
    assert summary["eval"]["accuracy"] == 1.0


# --- crashes and resume ------------------------------------------------------------------------

# Runs train.py's main() in a child process with save_checkpoint wrapped: after the save of
# step KILL_AFTER the process SIGKILLs itself, so the kill lands at a known point.
KILL_AFTER_SAVE = textwrap.dedent("""
    import os, signal, sys
    import minirm.training.loop as T
    from minirm.training.cli import main
    kill_after = int(os.environ["KILL_AFTER"])
    original = T.save_checkpoint
    def save_then_die(output, step, *args, **kwargs):
        path = original(output, step, *args, **kwargs)
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    T.save_checkpoint = save_then_die
    sys.exit(main(sys.argv[1:]))
""")

# The same, but the kill lands inside the save of step KILL_DURING: the trainer state file is
# half-written when the process dies.
KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import torch
    from minirm.training.cli import main
    kill_during = int(os.environ["KILL_DURING"])
    real_save = torch.save
    def torch_save_then_die(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == kill_during:
            with open(f, "wb") as fh:
                fh.write(b"half a checkpoint")
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)
    torch.save = torch_save_then_die
    sys.exit(main(sys.argv[1:]))
""")


def run_child(script: str, args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, **env})


def cli_args(model_dir, data, out, steps=10, **extra) -> list[str]:
    args = ["--recipe", "aira-bert", "--model", model_dir, "--data", data, "--output", out, "--max-steps", steps,
            "--batch-size", 4, "--lr", 1e-3, "--max-length", 64, "--eval-fraction", 0, "--seed", 3,
            "--log-every", 1, "--no-progress", "--precision", "fp32"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", v]
    return [str(a) for a in args]


def test_sigkill_then_resume_is_bit_for_bit(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("bert")  # dropout 0.1 on: the RNG state must come back too
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(20))
    assert main(cli_args(model_dir, data, tmp_path / "straight")) == 0

    killed = run_child(KILL_AFTER_SAVE, cli_args(model_dir, data, tmp_path / "resumed", save_every=5),
                       {"KILL_AFTER": "5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed")] == ["step-0000005"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # the run never finished

    with pytest.raises(MinirmError, match="--resume"):  # a second run must not overwrite it silently
        from minirm.training.cli import run
        run(cli_args(model_dir, data, tmp_path / "resumed", save_every=5))
    assert main(cli_args(model_dir, data, tmp_path / "resumed", save_every=5) + ["--resume"]) == 0

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # the metrics file reads as one run: every step once, the same losses
    a, b = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert [r["step"] for r in b if r["split"] == "train"] == list(range(1, 11))
    assert [r["loss"] for r in a if r["split"] == "train"] == [r["loss"] for r in b if r["split"] == "train"]


def test_sigkill_during_a_save_leaves_the_previous_checkpoint(make_checkpoint, tmp_path):
    model_dir, _ = make_checkpoint("bert")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(20))
    out = tmp_path / "run"
    killed = run_child(KILL_DURING_SAVE, cli_args(model_dir, data, out, steps=12, save_every=4), {"KILL_DURING": "8"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = list((out / "checkpoints").glob(".step-0000008*"))
    assert leftovers, "the kill should have landed inside the step-8 save"
    assert [p.name for p in checkpoint_dirs(out)] == ["step-0000004"]
    model, cfg = load_model(out / "checkpoints" / "step-0000004")  # loadable as it is
    assert cfg.family == "bert"
    assert Scorer.from_pretrained(str(out / "checkpoints" / "step-0000004")).score_pairs(["hi"], ["hello"])
    assert main(cli_args(model_dir, data, out, steps=12, save_every=4) + ["--resume"]) == 0
    assert not list((out / "checkpoints").glob(".step-*"))  # the half-written save was cleared
    assert [r["step"] for r in metrics(out) if r["split"] == "train"] == list(range(1, 13))


# --- what training writes ------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_trained_output_scores_the_same_in_transformers(make_checkpoint, pairs, tmp_path, family):
    model_dir, _ = make_checkpoint(family)
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    loss, labels = ("cross_entropy", 2) if family == "gpt2" else ("pairwise", 1)
    if family == "gpt2":
        rows = [{"prompt": r["prompt"], "response": r[k], "label": int(k == "chosen")}
                for r in pair_rows() for k in ("chosen", "rejected")]
        data = write_jsonl(tmp_path / "chat.jsonl", rows)
    out = tmp_path / "out"
    train(quick_config(model_dir, data, out, "chai" if family == "gpt2" else "preference", loss=loss,
                       num_labels=labels, max_steps=3))
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).is_file()
    prompts, responses = pairs
    ours = Scorer.from_pretrained(str(out)).score_pairs(prompts, responses)
    hf_tok = tf.AutoTokenizer.from_pretrained(out)
    hf = tf.AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        if family == "gpt2":
            scorer = Scorer.from_pretrained(str(out))
            texts = [scorer.tokenizer.format_text(s) for s in
                     (Sample.pair(p, r) for p, r in zip(prompts, responses))]
            hf_tok.pad_token_id, hf_tok.padding_side = hf.config.pad_token_id, "right"
            enc = hf_tok(texts, padding=True, return_tensors="pt")
            theirs = hf(**enc).logits.softmax(-1)[:, 1]
        else:
            enc = hf_tok(prompts, responses, padding=True, truncation=True, max_length=512,
                         return_token_type_ids=False, return_tensors="pt")
            theirs = hf(**enc).logits[:, 0]
    assert torch.allclose(torch.tensor(ours), theirs, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "bert-bare", "roberta", "gpt2-unprefixed"])
def test_base_model_gets_a_fresh_head_and_keeps_its_encoder(tmp_path, bpe_files, family):
    from conftest import save_tokenizer, tiny_config

    torch.manual_seed(0)
    fam = family.split("-")[0]
    if family == "bert-bare":  # a bare BertModel, as sentence-transformers (MiniLM) ships it: no "bert." prefix
        base = tf.BertModel(tiny_config("bert"))
        probe = ("encoder.layer.1.output.dense.weight", "encoder.layers.1.down.weight")
    elif fam == "bert":
        base = tf.BertForPreTraining(tiny_config("bert"))
        probe = ("bert.encoder.layer.1.output.dense.weight", "encoder.layers.1.down.weight")
    elif fam == "roberta":
        base = tf.RobertaForMaskedLM(tiny_config("roberta"))
        probe = ("roberta.embeddings.word_embeddings.weight", "encoder.embed.tokens.weight")
    else:  # the Hub's gpt2 checkpoint was saved from GPT2Model: keys "h.0...", no "transformer."
        base = tf.GPT2Model(tiny_config("gpt2"))
        probe = ("h.1.mlp.c_fc.weight", "layers.1.up.weight")
    base.save_pretrained(tmp_path / "base")
    save_tokenizer(fam, tmp_path / "base", bpe_files)
    labels = 2 if fam == "gpt2" else 1
    model, cfg, fresh = load_for_training(tmp_path / "base", num_labels=labels)
    assert fresh and all(n.startswith(("head.", "score.")) for n in fresh)
    theirs = dict(base.named_parameters())[probe[0]]
    ours = dict(model.named_parameters())[probe[1]]
    assert torch.equal(ours, theirs.t() if fam == "gpt2" else theirs)
    assert cfg.num_labels == labels and cfg.raw["architectures"][0].endswith("ForSequenceClassification")
    if fam == "bert":
        assert "head.pooler.weight" not in fresh  # BERT's pretrained pooler is kept, as transformers does


def test_gradient_checkpointing_gives_the_same_gradients(make_checkpoint):
    model_dir, _ = make_checkpoint("bert")
    model, _ = load_model(model_dir)
    model.train()
    ids = torch.randint(5, 1000, (3, 12))
    lengths = torch.tensor([12, 7, 3])

    def grads(checkpointing: bool):
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(1)  # dropout on: the recomputation must replay the same masks
        model(ids, lengths).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(False), grads(True)))


def test_bf16_autocast_trains(make_checkpoint, tmp_path, monkeypatch):
    import minirm.training.loop as T

    model_dir, _ = make_checkpoint("bert")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    seen = set()
    real = T.load_for_training

    def spy(*args, **kwargs):
        model, cfg, fresh = real(*args, **kwargs)
        model.encoder.layers[0].up.register_forward_hook(lambda m, i, o: seen.add((o.dtype, m.weight.dtype)))
        return model, cfg, fresh

    monkeypatch.setattr(T, "load_for_training", spy)
    train(quick_config(model_dir, data, tmp_path / "out", precision="bf16", max_steps=15))
    assert (torch.bfloat16, torch.float32) in seen  # bf16 matmuls on fp32 master weights
    rows = [r for r in metrics(tmp_path / "out") if r["split"] == "train"]
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    assert load_file(str(tmp_path / "out" / "model.safetensors"))["classifier.weight"].dtype == torch.float32


def test_ddp_on_two_gloo_processes_matches_one_process(make_checkpoint, tmp_path):
    # dropout off: two processes draw different dropout masks than one would
    model_dir, _ = make_checkpoint("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(16))
    one = cli_args(model_dir, data, tmp_path / "one", steps=4) + ["--grad-accum", "2"]
    assert main(one) == 0  # global batch 4 x 2 = 8
    two = cli_args(model_dir, data, tmp_path / "two", steps=4, batch_size=2) + ["--grad-accum", "2"]
    two[two.index("--batch-size") + 1] = "2"  # 2 per process x 2 processes x 2 = 8
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", str(ROOT / "train.py"), *two],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    # The gradients agree to float precision: the logged (all-reduced) loss and gradient norm of
    # every step match. The weights agree to within 1% of how far each tensor moved: Adam's
    # g / sqrt(v) magnifies rounding noise in near-zero gradients. Two kinds of tensor have exactly
    # zero gradient in exact arithmetic and are left out: the attention key biases (softmax ignores
    # them) and the classifier bias (the pairwise loss sees only chosen - rejected).
    base = load_file(str(model_dir / "model.safetensors"))
    compared = [k for k in a if not k.endswith(("attention.self.key.bias", "classifier.bias"))]
    assert len(compared) == len(a) - 3
    for k in compared:
        moved = (a[k] - base[k]).abs().max().item()
        assert moved > 0 and (a[k] - b[k]).abs().max().item() <= 0.01 * moved, k
    ga = [r["grad_norm"] for r in metrics(tmp_path / "one") if r["split"] == "train"]
    gb = [r["grad_norm"] for r in metrics(tmp_path / "two") if r["split"] == "train"]
    assert ga == pytest.approx(gb, rel=1e-5)
    la = [r["loss"] for r in metrics(tmp_path / "one") if r["split"] == "train"]
    lb = [r["loss"] for r in metrics(tmp_path / "two") if r["split"] == "train"]
    assert la == pytest.approx(lb, abs=1e-5)


# --- bad input -------------------------------------------------------------------------------------

def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.py: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_data_stops_with_one_line(make_checkpoint, tmp_path, capsys):
    model_dir, _ = make_checkpoint("bert")
    good = json.dumps(pair_rows(1)[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + good + "\n{not json\n")
    assert "bad.jsonl:3" in one_line_error(capsys, cli_args(model_dir, bad, tmp_path / "o1"))
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"prompt": "p", "chosen": "c"}])
    assert "missing.jsonl:1" in one_line_error(capsys, cli_args(model_dir, missing, tmp_path / "o2"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "empty.jsonl" in one_line_error(capsys, cli_args(model_dir, empty, tmp_path / "o3"))
    chai_dir, _ = make_checkpoint("gpt2")
    labels = write_jsonl(tmp_path / "labels.jsonl", [{"input_text": "Bot: hi", "labels": 1},
                                                     {"input_text": "Bot: hey", "labels": 3}])
    err = one_line_error(capsys, ["--recipe", "chai", "--model", str(chai_dir), "--data", str(labels),
                                  "--output", str(tmp_path / "o4"), "--no-progress"])
    assert "labels.jsonl:2" in err and "3" in err
    for out in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / out / "model.safetensors").exists()


def test_bad_options_and_offline_data_fail_fast(make_checkpoint, tmp_path, capsys):
    model_dir, _ = make_checkpoint("bert")
    assert "unknown recipe" in one_line_error(capsys, ["--recipe", "nope"])
    assert "--data" in one_line_error(capsys, ["--recipe", "aira-regression", "--model", str(model_dir)])
    err = one_line_error(capsys, ["--recipe", "aira-bert", "--model", str(model_dir), "--output", str(tmp_path / "o")])
    assert "nicholasKluge/reward-aira-dataset" in err and "hf download" in err  # offline, nothing cached
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    err = one_line_error(capsys, cli_args(model_dir, data, tmp_path / "o") + ["--adapter", "regression"])
    assert "cannot train on regression data" in err
    err = one_line_error(capsys, cli_args(model_dir, data, tmp_path / "o", steps=0))
    assert "--max-steps" in err
