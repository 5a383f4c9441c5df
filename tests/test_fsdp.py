"""--shard fsdp: FSDP2 training under torchrun on CPU (gloo, two processes), sharded checkpoints
that resume at another number of processes, and the model gathered to Hugging Face shards.

One reference run (one process, DDP's code path) and the sharded runs share a global batch of 4
(2 x 2 x 1 and 1 x 2 x 2) and turn dropout off, so their losses and weights agree to float
round-off (as the DDP test in test_train.py measures it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from minirm import Scorer
from minirm.checkpoint import load_model, save_model
from minirm.training.cli import main
from minirm.training.resume import checkpoint_dirs
from minirm.training.sharding import bytes_per_process
from test_train import cli_args, metrics, pair_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6

# torchrun runs a script: this one makes the gathered export write small shards (so that a tiny
# model is saved as several, with the index transformers reads) and, with KILL_AFTER set, SIGKILLs
# every process right after the checkpoint of that step is in place
CHILD = textwrap.dedent("""
    import os, signal, sys
    import minirm.checkpoint
    import minirm.training.loop as loop
    from minirm.training.cli import main
    minirm.checkpoint.MAX_SHARD_BYTES = 60_000
    kill_after = int(os.environ.get("KILL_AFTER", "0"))
    original = loop.save_checkpoint
    def save_then_die(output, step, *args, **kwargs):
        path = original(output, step, *args, **kwargs)
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    loop.save_checkpoint = save_then_die
    sys.exit(main(sys.argv[1:]))
""")


def torchrun(tmp_path, args, port, kill_after=0):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "KILL_AFTER": str(kill_after),
                                                      "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})


def sharded_args(model_dir, data, out, **extra):
    args = cli_args(model_dir, data, out, steps=STEPS, batch_size=1, grad_accum=2, shard="fsdp", **extra)
    args[args.index("--batch-size") + 1] = "1"  # 1 per process x 2 micro-batches x 2 processes = 4
    return args


def train_losses(out: Path) -> list[float]:
    return [r["loss"] for r in metrics(out) if r["split"] == "train"]


def assert_same_run(a: dict, b: dict, base: dict):
    """Weights within 1% of how far each tensor moved (Adam's g / sqrt(v) magnifies the round-off of
    near-zero gradients); the attention key biases and the classifier bias have exactly zero
    gradient (softmax and the pairwise loss ignore them) and are left out, as in test_train.py."""
    assert a.keys() == b.keys()
    compared = [k for k in a if not k.endswith(("attention.self.key.bias", "classifier.bias"))]
    for k in compared:
        moved = (a[k] - base[k]).abs().max().item()
        assert moved > 0 and (a[k] - b[k]).abs().max().item() <= 0.01 * moved, k


def weights(folder: Path) -> dict:
    """The HF-named tensors of a saved model, from model.safetensors or its shards."""
    files = sorted(folder.glob("model-*-of-*.safetensors")) or [folder / "model.safetensors"]
    return {k: v for f in files for k, v in load_file(str(f)).items()}


@pytest.fixture(scope="module")
def runs(make_checkpoint, tmp_path_factory):
    """The reference (one process) and the straight sharded run, trained once for the module."""
    tmp = tmp_path_factory.mktemp("fsdp")
    model_dir, _ = make_checkpoint("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = write_jsonl(tmp / "pairs.jsonl", pair_rows(16))
    one = cli_args(model_dir, data, tmp / "one", steps=STEPS, batch_size=2, grad_accum=2)
    one[one.index("--batch-size") + 1] = "2"
    assert main(one) == 0
    sharded = torchrun(tmp, sharded_args(model_dir, data, tmp / "fsdp"), 29531)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    return model_dir, data, tmp, sharded


def test_sharded_run_equals_one_process(runs):
    model_dir, _, tmp, sharded = runs
    assert train_losses(tmp / "one") == pytest.approx(train_losses(tmp / "fsdp"), abs=1e-5)
    grad_one = [r["grad_norm"] for r in metrics(tmp / "one") if r["split"] == "train"]
    grad_two = [r["grad_norm"] for r in metrics(tmp / "fsdp") if r["split"] == "train"]
    assert grad_one == pytest.approx(grad_two, rel=1e-5)
    assert_same_run(weights(tmp / "one"), weights(tmp / "fsdp"), weights(model_dir))
    # before it started, the run said what each process holds
    assert "fsdp over 2 processes" in sharded.stdout


def test_the_gathered_model_is_hugging_face_shards_that_transformers_loads(runs):
    _, _, tmp, _ = runs
    out = tmp / "fsdp"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and not (out / "model.safetensors").exists()
    assert all((out / f).is_file() for f in files)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for f in files
                                                  for t in load_file(str(out / f)).values())
    reference = tf.BertForSequenceClassification.from_pretrained(out).eval()
    scorer = Scorer.from_pretrained(str(out))
    prompts, responses = ["How do I bake bread?", "Hi"], ["Mix flour and water, then wait.", ""]
    ids = scorer.encode_pairs(prompts, responses)
    with torch.no_grad():
        expected = torch.cat([reference(torch.tensor([i])).logits[:, 0] for i in ids])
    torch.testing.assert_close(torch.tensor(scorer.score_pairs(prompts, responses)), expected, atol=1e-5, rtol=0)


def test_killed_sharded_run_resumes_at_two_and_at_one_process(runs):
    model_dir, data, tmp, _ = runs
    out = tmp / "killed"
    killed = torchrun(tmp, sharded_args(model_dir, data, out, save_every=2), 29533, kill_after=2)
    assert killed.returncode != 0
    assert [p.name for p in checkpoint_dirs(out)] == ["step-0000002"]
    ckpt = out / "checkpoints" / "step-0000002"
    assert (ckpt / "sharded" / ".metadata").is_file() and not (ckpt / "model.safetensors").exists()
    assert not (out / "model.safetensors.index.json").exists()  # the run never finished
    shutil.copytree(out, tmp / "killed-then-one")

    # at two processes, as it was saved: the same run, exactly
    resumed = torchrun(tmp, sharded_args(model_dir, data, out, save_every=2) + ["--resume"], 29535)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in metrics(out) if r["split"] == "train"] == list(range(1, STEPS + 1))
    assert train_losses(out) == train_losses(tmp / "fsdp")
    straight, again = weights(tmp / "fsdp"), weights(out)
    assert all(torch.equal(straight[k], again[k]) for k in straight)

    # at one process, unsharded, with the same global batch (2 x 2 x 1): the same run to round-off
    one = cli_args(model_dir, data, tmp / "killed-then-one", steps=STEPS, batch_size=2, grad_accum=2,
                   save_every=2)
    one[one.index("--batch-size") + 1] = "2"
    assert main(one + ["--resume"]) == 0
    assert train_losses(tmp / "killed-then-one") == pytest.approx(train_losses(tmp / "fsdp"), abs=1e-5)
    assert_same_run(weights(tmp / "fsdp"), weights(tmp / "killed-then-one"), weights(model_dir))


def test_resume_with_another_global_batch_is_one_line(runs, capsys):
    model_dir, data, tmp, _ = runs
    killed = torchrun(tmp, sharded_args(model_dir, data, tmp / "other-batch-run", save_every=2), 29537, kill_after=2)
    assert killed.returncode != 0
    args = cli_args(model_dir, data, tmp / "other-batch-run", steps=STEPS, batch_size=2, save_every=2) + ["--resume"]
    args[args.index("--batch-size") + 1] = "2"  # 2 x 1 x 1: half the global batch
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "global batch" in err and "\n" not in err


def test_fp16_is_refused_in_one_line(make_checkpoint, tmp_path, capsys):
    model_dir, _ = make_checkpoint("bert")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    args = cli_args(model_dir, data, tmp_path / "out", shard="fsdp")
    args[args.index("--precision") + 1] = "fp16"
    capsys.readouterr()  # what building the checkpoint printed
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--shard fsdp" in err and "bf16" in err and "\n" not in err


def test_memory_on_paper():
    """16 bytes a parameter under DDP; divided by the processes under FSDP."""
    assert bytes_per_process(10**9, 8, "ddp", "bf16")["total"] == 16 * 10**9
    assert bytes_per_process(10**9, 8, "fsdp", "bf16")["total"] == 2 * 10**9
    per = bytes_per_process(1000, 2, "fsdp", "fp32")
    assert per == {"parameters": 2000, "gradients": 2000, "optimizer": 4000, "total": 8000}


def test_a_model_past_the_shard_size_is_saved_as_transformers_shards(make_checkpoint, tmp_path, monkeypatch):
    """save_model (one process) writes the same sharded layout past MAX_SHARD_BYTES; an earlier
    single-file save in the folder is replaced, not left beside the shards."""
    import minirm.checkpoint as checkpoint

    model_dir, hf_model = make_checkpoint("bert")
    model, _ = load_model(model_dir)
    out = tmp_path / "out"
    save_model(model, out, model_dir)
    assert (out / "model.safetensors").is_file()
    monkeypatch.setattr(checkpoint, "MAX_SHARD_BYTES", 50_000)
    save_model(model, out, model_dir, into_existing=True)
    assert not (out / "model.safetensors").exists() and (out / "model.safetensors.index.json").is_file()
    loaded = tf.BertForSequenceClassification.from_pretrained(out).eval()
    ids = torch.tensor([[101, 2023, 2003, 102]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, hf_model(ids).logits, atol=1e-6, rtol=0)


def test_a_one_process_checkpoint_resumes_sharded(runs):
    """A whole checkpoint (one process or DDP: the model in HF layout, the optimizer unsharded)
    resumes under --shard fsdp at two processes: the same run to round-off."""
    from test_train import KILL_AFTER_SAVE, run_child

    model_dir, data, tmp, _ = runs
    out = tmp / "one-then-fsdp"
    one = cli_args(model_dir, data, out, steps=STEPS, batch_size=2, grad_accum=2, save_every=2)
    one[one.index("--batch-size") + 1] = "2"
    killed = run_child(KILL_AFTER_SAVE, one, {"KILL_AFTER": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "checkpoints" / "step-0000002" / "model.safetensors").is_file()
    resumed = torchrun(tmp, sharded_args(model_dir, data, out, save_every=2) + ["--resume"], 29539)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert train_losses(out) == pytest.approx(train_losses(tmp / "one"), abs=1e-5)
    assert_same_run(weights(tmp / "one"), weights(out), weights(model_dir))


def test_bf16_and_gradient_checkpointing_compose_with_sharding(runs):
    """bf16 weights gathered for compute, fp32 reduction and master weights, layers recomputed in
    backward: the losses follow the fp32 run's to bf16's precision."""
    model_dir, data, tmp, _ = runs
    args = sharded_args(model_dir, data, tmp / "bf16", gradient_checkpointing=None)
    args[args.index("--precision") + 1] = "bf16"
    args.remove("None")
    done = torchrun(tmp, args, 29541)
    assert done.returncode == 0, done.stderr[-3000:]
    assert train_losses(tmp / "bf16") == pytest.approx(train_losses(tmp / "fsdp"), rel=2e-2, abs=2e-3)
    assert train_losses(tmp / "bf16") != train_losses(tmp / "fsdp")  # it did run in bf16
