"""Peak memory of loading and scoring: one copy of the weights, never two.

A bf16 DeBERTa (transformers' names and shapes, random values) is scored in a fresh process.
Resident memory is measured from the moment before the checkpoint loads: a tiny model of the
same family is scored first, so the code that scoring pages in (torch's, oneDNN's, the
tokenizer's) is resident before the baseline, and the peak (VmHWM) is reset there
(/proc/self/clear_refs). The ratio asserted is (peak - baseline) / the weights' bytes in the
scoring dtype; the bar is 1.15x. The full-size figure (a 0.43B DeBERTa) is
benchmarks/deberta_memory.py's.

What it guards: bf16 weights prepacked for oneDNN (minirm/cpu.py) were copied while the
memory-mapped originals stayed resident (1.6x), and a cast (bf16 file, float32 scoring) kept
every page of the file it read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import minilm_dir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")

BAR = 1.15


def deberta_checkpoint(out: Path, hidden: int, layers: int) -> int:
    """A DeBERTa-v3-style reward model in bf16 safetensors with MiniLM's tokenizer; returns its bytes."""
    import transformers as tf
    from safetensors.torch import save_file

    config = tf.DebertaV2Config(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                                max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
                                position_buckets=256, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                                share_att_key=True, position_biased_input=False, pooler_hidden_size=hidden,
                                num_labels=1, pad_token_id=0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in tf.DebertaV2ForSequenceClassification(config).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g, dtype=torch.bfloat16).mul_(0.02) for k, shape in shapes.items()}
    out.mkdir(parents=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    raw = config.to_dict()
    raw["architectures"] = ["DebertaV2ForSequenceClassification"]
    (out / "config.json").write_text(json.dumps(raw))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, out / name)
    return sum(t.numel() * 2 for t in state.values())


MEASURE = textwrap.dedent("""
    import json, sys
    from minirm import Scorer

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    warm, model, dtype, prepack = sys.argv[1:5]
    prepack = {"on": True, "off": False, "auto": None}[prepack]
    Scorer.from_pretrained(warm, dtype=dtype, prepack=prepack).score_pairs(["warm up"], ["the code paths"])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from here
    base = status("VmRSS")
    scorer = Scorer.from_pretrained(model, dtype=dtype, prepack=prepack)
    scorer.score_pairs(["What is the capital of France?"], ["The capital of France is Paris."])
    print(json.dumps({"base": base, "peak": status("VmHWM")}))
""")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    deberta_checkpoint(root / "tiny", hidden=64, layers=1)
    weight_bytes = deberta_checkpoint(root / "model", hidden=512, layers=8)
    return root / "tiny", root / "model", weight_bytes


def peak_ratio(checkpoints, dtype: str, prepack: str) -> float:
    tiny, model, bf16_bytes = checkpoints
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tiny), str(model), dtype, prepack],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    weights = bf16_bytes * (2 if dtype == "float32" else 1)
    return (got["peak"] - got["base"]) / weights


@pytest.mark.parametrize("dtype, prepack", [("bfloat16", "on"), ("float32", "auto")])
def test_loading_and_scoring_hold_one_copy_of_the_weights(checkpoints, dtype, prepack):
    if prepack == "on" and not (hasattr(torch.ops.mkldnn, "_linear_pointwise")
                                and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("this torch build or CPU cannot prepack bf16 weights for oneDNN")
    ratio = peak_ratio(checkpoints, dtype, prepack)
    assert ratio < BAR, f"{dtype} (prepack {prepack}) peaked at {ratio:.2f}x the weights above the baseline"


def test_release_file_pages_drops_resident_pages_and_keeps_values(tmp_path):
    """The mechanism: pages of a mapped file leave resident memory, and the tensor reads the same values."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from minirm.checkpoint import release_file_pages

    save_file({"w": torch.arange(4 << 20, dtype=torch.float32)}, str(tmp_path / "w.safetensors"))

    def resident() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024

    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        w = f.get_tensor("w")
    total = float(w.sum())  # reads every page
    before = resident()
    released = release_file_pages(w)
    assert released > 15 << 20 and before - resident() > 15 << 20
    assert float(w.sum()) == total  # read back from the file
    anonymous = torch.ones(4 << 20)
    assert release_file_pages(anonymous) == 0 and float(anonymous.sum()) == 4 << 20  # never zeroed
