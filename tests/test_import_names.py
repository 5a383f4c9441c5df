"""minirm's import names are its own: it lives beside Hugging Face's `kernels` package.

`kernels` on PyPI is Hugging Face's kernel hub, and transformers >= 5.25 requires it. minirm's
Triton kernels sit in the repository's top-level kernels/ folder but are imported as
`minirm.kernels`, and the folder has no __init__.py, so that:

* from any folder, minirm finds its own kernels and transformers finds Hugging Face's;
* from the clone's root, where `python -m` and `python -c` put the folder on sys.path first,
  the folder is at most a namespace portion, which a regular package later on sys.path wins
  over. (With an __init__.py, transformers imported minirm's folder instead and failed to load a
  bf16 DeBERTa: "cannot import name 'CUDAProperties' from 'kernels'".)

Each case runs in a fresh interpreter, since what matters is how the import system resolves the
names from a given working directory.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
OUR_FOLDER = REPO_ROOT / "kernels"


def run_python(script: str, cwd: Path, *args: str) -> dict:
    """Run `python -c script args` in cwd (so cwd is sys.path[0], as for `python -c` and `python -m`);
    the script prints one JSON object on its last line."""
    environment = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_huggingface_kernels_is_installed_beside_minirm():
    """The test extras install it (transformers >= 5.25 requires it): the cases below mean something."""
    assert importlib.metadata.version("kernels")


TRANSFORMERS_LOADS_BF16_DEBERTA = """
import json, tempfile
import torch, transformers as tf
import minirm.kernels.deberta  # minirm's kernels first, then transformers' own `kernels`
config = tf.DebertaV2Config(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=64, relative_attention=True, pos_att_type=["c2p", "p2c"],
                            position_buckets=8, num_labels=1)
with tempfile.TemporaryDirectory() as folder:
    tf.DebertaV2ForSequenceClassification(config).save_pretrained(folder)
    model = tf.DebertaV2ForSequenceClassification.from_pretrained(folder, dtype=torch.bfloat16)
import kernels
print(json.dumps({"dtype": str(model.dtype), "hf_kernels": kernels.__file__,
                  "ours": list(minirm.kernels.__path__)}))
"""


def test_from_the_clone_root_transformers_gets_its_own_kernels():
    found = run_python(TRANSFORMERS_LOADS_BF16_DEBERTA, REPO_ROOT)
    assert found["dtype"] == "torch.bfloat16"
    hf_kernels = Path(found["hf_kernels"]).resolve()
    assert OUR_FOLDER not in hf_kernels.parents, f"transformers imported the clone's kernels/: {hf_kernels}"
    assert Path(found["ours"][0]).resolve() == OUR_FOLDER


PAIRS = [("How do I bake bread?", "Knead, rest, bake at 230 C."), ("Hi", "")]
SCORE_ON_THE_KERNEL = """
import json, sys
from minirm import Scorer
import kernels
scorer = Scorer.from_pretrained(sys.argv[1], device="cpu", dtype="float32", attention="triton")
scores = scorer.score_pairs(*json.loads(sys.argv[2]))
print(json.dumps({"scores": scores, "hf_kernels": kernels.__file__}))
"""


@pytest.mark.parametrize("where", ["outside the clone", "the clone's root"])
def test_scoring_on_the_kernel_from_any_folder(make_checkpoint, tmp_path, where):
    """--attention triton (the CUDA default) imports minirm.kernels lazily, after Hugging Face's
    `kernels` may already be loaded: it must still find minirm's own."""
    import transformers

    model_dir, reference = make_checkpoint("bert", num_attention_heads=2)  # head dim 16: one the kernel takes
    cwd = tmp_path if where == "outside the clone" else REPO_ROOT
    found = run_python(SCORE_ON_THE_KERNEL, cwd, str(model_dir), json.dumps(list(zip(*PAIRS))))
    assert OUR_FOLDER not in Path(found["hf_kernels"]).resolve().parents
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    expected = []
    for prompt, response in PAIRS:  # one call per pair: how minirm encodes an empty response (test_empty_inputs.py)
        encoded = tokenizer(prompt, response, return_token_type_ids=False, return_tensors="pt")
        with torch.no_grad():
            expected.append(reference(**encoded).logits[0, 0].item())
    assert found["scores"] == pytest.approx(expected, abs=1e-5)

