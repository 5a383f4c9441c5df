"""The reward server (score.py --serve): OpenRLHF's /get_reward protocol, /score, batching across
concurrent requests, backpressure, bad requests, /health and /metrics. Each test starts a server
on a free port on 127.0.0.1 and stops it itself."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from minirm import Scorer  # noqa: E402
from minirm.scoring.cli import score_rows  # noqa: E402
from minirm.scoring.serve import (  # noqa: E402
    BadRequest, Batcher, Encoder, ServeOptions, ServerThread, budget_batches, build_app, parse_address,
)

ATOL = 1e-5  # the project's parity bar: a sequence padded to another length may move in the last bits

PROMPTS = ["How do I bake bread?", "Is the sky blue?", "Tell me a joke.", "", "What is 2 + 2?"]
RESPONSES = [" Mix flour, water, salt and yeast, knead, rise, and bake it hot.", " Yes, by day.",
             " Why did the chicken cross the road?", "Nothing here.", " Four."]


@pytest.fixture(scope="module")
def bert_scorer(make_checkpoint):
    return Scorer.from_pretrained(str(make_checkpoint("bert")[0]), device="cpu")


@pytest.fixture(scope="module")
def gpt2_scorer(make_checkpoint):
    return Scorer.from_pretrained(str(make_checkpoint("gpt2")[0]), device="cpu")


def close(got, want):
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64),
                               atol=ATOL, rtol=0)


def queries():
    return [p + r for p, r in zip(PROMPTS, RESPONSES)]


# --- the protocol -----------------------------------------------------------------------------------

def test_get_reward_splits_each_query_at_its_prompt(bert_scorer):
    with ServerThread(build_app(bert_scorer)) as url:
        reply = httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS,
                                                      "labels": ["a", 1, None, {}, []]}).json()
    assert set(reply) == {"rewards", "scores", "extra_logs"}
    assert reply["extra_logs"]["minirm_split_exact"] == [1.0] * len(PROMPTS)  # every query starts with its prompt
    assert reply["rewards"] == reply["scores"]  # new clients read scores, old ones rewards
    close(reply["scores"], bert_scorer.score_pairs(PROMPTS, RESPONSES))


def test_single_text_models_score_the_query_whole(gpt2_scorer):
    with ServerThread(build_app(gpt2_scorer)) as url:
        old_client = httpx.post(f"{url}/get_reward", json={"query": queries()}).json()  # query only
        with_prompts = httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS}).json()
    close(old_client["rewards"], gpt2_scorer.score_texts(queries()))
    assert with_prompts["scores"] == old_client["scores"]
    assert old_client["extra_logs"]["minirm_split_whole"] == [1.0] * len(PROMPTS)


@pytest.mark.parametrize("body, status, needle", [
    ({"query": ["Hi there. Hello!"], "prompts": ["Bye."]}, 400,
     "query[0] cannot be split into prompt and response: it does not start with its prompt"),
    ({"query": ["a b", "c d"]}, 400, "query[0] cannot be split into prompt and response: no prompt to split it at"),
    ({"query": ["a b", "c d"], "prompts": ["a"]}, 400, "'prompts' has 1 items but 'query' has 2"),
    ({"query": "a b", "prompts": "a"}, 400, "field 'query' must be a list of strings, got str"),
    ({"query": ["a", 3], "prompts": ["a", "b"]}, 400, "query[1] must be a string, got int"),
    (b'{"query": ["\\ud800"], "prompts": [""]}', 400, "query[0] holds a lone surrogate"),
    ({"prompts": ["a"]}, 400, "field 'query' is missing"),
])
def test_bad_requests_are_one_line_naming_the_field_and_the_server_keeps_serving(bert_scorer, body, status,
                                                                                 needle):
    with ServerThread(build_app(bert_scorer)) as url:
        reply = httpx.post(f"{url}/get_reward", **({"content": body} if isinstance(body, bytes) else {"json": body}))
        assert reply.status_code == status and set(reply.json()) == {"error"}
        assert needle in reply.json()["error"] and "\n" not in reply.json()["error"]
        good = httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS})
        assert good.status_code == 200 and httpx.get(f"{url}/health").status_code == 200


def test_an_empty_text_for_a_single_text_model_is_400(gpt2_scorer):
    with ServerThread(build_app(gpt2_scorer)) as url:
        reply = httpx.post(f"{url}/get_reward", json={"query": ["fine", ""]})
    assert reply.status_code == 400 and reply.json() == {"error": "query[1] tokenizes to nothing; give it some text"}


@pytest.mark.parametrize("raw, needle", [
    (b"{", "not valid JSON"), (b"\xff\xfe", "not UTF-8"), (b"[1, 2]", "must be a JSON object, got list"),
    (b'{"query": ["a"], "prompts": ["a"], "x": NaN}', "NaN is not a finite number"),
    (b'{"query": ["a"], "query": ["b"], "prompts": ["a"]}', "field 'query' appears twice"),
    (b"", "not valid JSON"),
])
def test_malformed_bodies_are_400(bert_scorer, raw, needle):
    with ServerThread(build_app(bert_scorer)) as url:
        for endpoint in ("/get_reward", "/score"):
            reply = httpx.post(f"{url}{endpoint}", content=raw)
            assert reply.status_code == 400 and needle in reply.json()["error"], reply.text


def test_score_endpoint_returns_what_score_py_writes(bert_scorer):
    rows = [{"prompt": p, "response": r, "id": i} for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    rows += [{"text": "plain text"}, {"prompt": "Q?", "chosen": " Yes.", "rejected": " No."},
             {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}]
    with ServerThread(build_app(bert_scorer)) as url:
        got = httpx.post(f"{url}/score", json={"rows": rows}).json()["rows"]
        bad = httpx.post(f"{url}/score", json={"rows": [{"prompt": "a"}]})
        clash = httpx.post(f"{url}/score", json={"rows": [{"prompt": "a", "response": "b", "score": 1}]})
    want, _ = score_rows(bert_scorer, rows)
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want):
        for key in ("score", "score_chosen", "score_rejected"):
            if key in w:
                close([g[key]], [w[key]])
        assert g.get("correct") == w.get("correct") and {k: g[k] for k in rows[got.index(g)]} == rows[got.index(g)]
    assert bad.status_code == 400 and bad.json()["error"].startswith("rows[0]: needs 'prompt' and 'response'")
    assert clash.status_code == 400 and "already has a 'score' field" in clash.json()["error"]


def test_chat_template_markers_are_stripped(bert_scorer):
    prompt = "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    query = prompt + "Mix flour, water, salt and yeast.<|im_end|>"
    with ServerThread(build_app(bert_scorer, ServeOptions(strip_template="chatml"))) as url:
        got = httpx.post(f"{url}/get_reward", json={"query": [query], "prompts": [prompt]}).json()["scores"]
    close(got, bert_scorer.score_pairs(["How do I bake bread?"], ["Mix flour, water, salt and yeast."]))


# --- batching across requests ------------------------------------------------------------------------

def test_concurrent_one_sample_requests_are_batched_and_score_as_offline(bert_scorer):
    words = "the quick brown fox jumps over a lazy dog while birds sing".split()
    prompts = [" ".join(words[: 1 + i % 7]) + "?" for i in range(48)]
    responses = [" " + " ".join(words[i % 5 :] * (1 + i % 4)) for i in range(48)]
    offline = bert_scorer.score_pairs(prompts, responses)
    app = build_app(bert_scorer, ServeOptions(max_wait_ms=30, max_batch_tokens=2048))
    with ServerThread(app) as url, httpx.Client(base_url=url) as client:
        def one(i):
            reply = client.post("/get_reward", json={"query": [prompts[i] + responses[i]], "prompts": [prompts[i]]})
            return reply.json()["rewards"][0]

        with ThreadPoolExecutor(32) as pool:
            served = list(pool.map(one, range(48)))
        metrics = client.get("/metrics").text
    close(served, offline)
    # more than one request's sequence went through a single forward
    singles = float(next(ln for ln in metrics.splitlines() if ln.startswith('minirm_batch_size_bucket{le="1.0"}'))
                    .split()[-1])
    forwards = float(next(ln for ln in metrics.splitlines() if ln.startswith("minirm_batch_size_count")).split()[-1])
    assert forwards < 48 and singles < forwards
    assert "minirm_sequences_total 48.0" in metrics and 'minirm_requests_total{endpoint="/get_reward",status="200"} 48.0' in metrics


def test_budget_batches_stay_under_the_budget_longest_first():
    class Item:
        def __init__(self, n):
            self.ids = [1] * n

    items = [Item(n) for n in (5, 50, 7, 3, 20, 20, 1, 64, 9)]
    batches = budget_batches(items, 64)
    assert sorted(len(w.ids) for b in batches for w in b) == sorted(len(w.ids) for w in items)
    assert all(len(b) * len(b[0].ids) <= 64 for b in batches)
    lengths = [len(w.ids) for b in batches for w in b]
    assert lengths == sorted(lengths, reverse=True)
    assert [len(w.ids) for w in budget_batches([Item(100), Item(2)], 64)[0]] == [100]  # too long: alone


# --- backpressure, failures, disconnects --------------------------------------------------------------

def gated_forward(service, gate: threading.Event, started: threading.Event | None = None):
    real = service.batcher.run_batch

    def run(sequences):
        if started:
            started.set()
        gate.wait(10)
        return real(sequences)

    service.batcher.run_batch = run


def test_a_full_queue_answers_503_with_retry_after_and_a_large_body_413(bert_scorer):
    """The queue is bounded in tokens: a request that would overflow a busy queue waits (503); a
    body over --max-body-mb is refused (413); a request of any size is taken by an idle server."""
    tokens_of_two = sum(map(len, bert_scorer.encode_pairs(PROMPTS[:2], RESPONSES[:2])))
    app = build_app(bert_scorer, ServeOptions(max_queue_tokens=tokens_of_two + 1, max_body_mb=1, max_wait_ms=0))
    gate, started = threading.Event(), threading.Event()
    gated_forward(app.state.service, gate, started)
    body = {"query": queries()[:2], "prompts": PROMPTS[:2]}
    with ServerThread(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{url}/get_reward", json=body, timeout=20)
        assert started.wait(10)  # the worker holds the first request's batch
        second = pool.submit(httpx.post, f"{url}/get_reward", json=body, timeout=20)
        deadline = time.monotonic() + 10
        while app.state.service.batcher.depth() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = httpx.post(f"{url}/get_reward", json=body)
        too_big = httpx.post(f"{url}/get_reward", json={"query": ["x" * (1 << 20)], "prompts": [""]})
        gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        whole_rollout = 40 * queries()  # past the queue's bound, on an idle server: taken and cut into batches
        big = httpx.post(f"{url}/get_reward", json={"query": whole_rollout, "prompts": 40 * PROMPTS}, timeout=60)
    assert full.status_code == 503 and full.headers["retry-after"] == "1" and "queue is full" in full.json()["error"]
    assert too_big.status_code == 413 and "--max-body-mb 1" in too_big.json()["error"]
    assert big.status_code == 200
    close(big.json()["scores"], 40 * bert_scorer.score_pairs(PROMPTS, RESPONSES))


def test_a_failure_inside_the_model_fails_only_that_batch(bert_scorer):
    app = build_app(bert_scorer, ServeOptions(max_wait_ms=0))
    service = app.state.service
    real = service.batcher.run_batch
    calls = []

    def sometimes_oom(sequences):
        calls.append(len(sequences))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real(sequences)

    service.batcher.run_batch = sometimes_oom
    with ServerThread(app) as url:
        failed = httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS})
        after = httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS})
    assert failed.status_code == 500 and failed.json() == {
        "error": "scoring failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert after.status_code == 200
    close(after.json()["scores"], bert_scorer.score_pairs(PROMPTS, RESPONSES))


def test_a_non_finite_score_is_a_500_naming_the_query(bert_scorer, monkeypatch):
    app = build_app(bert_scorer, ServeOptions(max_wait_ms=0))
    service = app.state.service
    real = service.batcher.run_batch
    service.batcher.run_batch = lambda seqs: [float("nan")] + real(seqs)[1:]
    with ServerThread(app) as url:
        reply = httpx.post(f"{url}/get_reward", json={"query": queries()[:1], "prompts": PROMPTS[:1]})
    assert reply.status_code == 500 and reply.json()["error"].startswith("query[0]: the model scores it nan")


def test_a_client_that_disconnects_does_not_disturb_the_others(bert_scorer):
    app = build_app(bert_scorer, ServeOptions(max_wait_ms=0))
    gate, started = threading.Event(), threading.Event()
    gated_forward(app.state.service, gate, started)
    with ServerThread(app) as url:
        with pytest.raises(httpx.ReadTimeout):  # gives up while its batch is held
            httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS}, timeout=0.5)
        gate.set()
        reply = httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS}, timeout=20)
        assert httpx.get(f"{url}/health").status_code == 200
    assert reply.status_code == 200
    close(reply.json()["scores"], bert_scorer.score_pairs(PROMPTS, RESPONSES))


def test_batcher_refuses_beyond_its_queue_without_a_server():
    gate = threading.Event()
    batcher = Batcher(lambda seqs: (gate.wait(10), [0.0] * len(seqs))[1],
                      ServeOptions(max_queue_tokens=2, max_wait_ms=0))
    try:
        first = batcher.submit([[1, 2]])
        time.sleep(0.1)  # the worker takes it and blocks
        batcher.submit([[1], [2]])  # two tokens: the queue's bound, reached
        with pytest.raises(BadRequest) as err:
            batcher.submit([[3]])
        assert err.value.status == 503 and err.value.headers == {"Retry-After": "1"}
        gate.set()
        assert first.result(10) == [0.0]
    finally:
        gate.set()
        batcher.close()


# --- the request path: tokenizer thread, batcher, one hand-off back per forward -----------------------

def sum_ids(sequences):  # a stand-in model whose score says which sequence it read
    return [float(sum(ids)) for ids in sequences]


def test_a_forward_hands_the_requests_it_finishes_back_to_the_loop_in_one_call():
    gate = threading.Event()
    seen = []

    def run(sequences):
        seen.append(len(sequences))
        gate.wait(10)
        return sum_ids(sequences)

    batcher = Batcher(run, ServeOptions(max_wait_ms=0))

    async def main():
        loop = asyncio.get_running_loop()
        wakeups = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: (wakeups.append(a), real(*a))[1]
        first = batcher.submit([[1, 2]], loop)
        while not seen:  # the worker is inside the first forward
            await asyncio.sleep(0.005)
        rest = [batcher.submit([[10, i], [100 * i]], loop) for i in range(1, 4)]  # queued meanwhile
        gate.set()
        scores = [await job.future for job in [first, *rest]]
        return scores, wakeups

    try:
        scores, wakeups = asyncio.run(main())
    finally:
        gate.set()
        batcher.close()
    assert scores == [[3.0], [11.0, 100.0], [12.0, 200.0], [13.0, 300.0]]  # each request its own, in order
    assert seen == [1, 6]  # the three requests queued during the first forward ran in the second
    assert len(wakeups) == 2  # one hand-off per forward, not one per request or per sequence


def test_the_tokenizer_thread_fails_only_the_request_at_fault():
    """Requests that wait for the tokenizer are tokenized together; a text that tokenizes to
    nothing, or a tokenizer error, fails its own request and no other."""
    gate, calls = threading.Event(), []

    def encode(samples):
        calls.append(list(samples))
        gate.wait(10)
        if any(s == "boom" for s in samples):
            raise RuntimeError("the tokenizer broke")
        return [[] if s == "" else [len(s)] for s in samples]

    batcher = Batcher(sum_ids, ServeOptions(max_wait_ms=0))
    encoder = Encoder(encode, batcher)

    async def main():
        loop = asyncio.get_running_loop()
        first = encoder.submit(["a"], None, loop)
        while not calls:
            await asyncio.sleep(0.005)
        jobs = [encoder.submit(texts, None, loop) for texts in (["bb", "ccc"], ["dddd", ""], ["boom"], ["eeeee"])]
        gate.set()
        return await asyncio.gather(*(j.future for j in [first, *jobs]), return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        gate.set()
        encoder.close()
        batcher.close()
    assert results[0] == [1.0] and results[1] == [2.0, 3.0] and results[4] == [5.0]
    assert isinstance(results[2], BadRequest) and str(results[2]) == "query[1] tokenizes to nothing; give it some text"
    assert isinstance(results[3], RuntimeError)
    assert calls[1] == ["bb", "ccc", "dddd", "", "boom", "eeeee"]  # the four waiting requests in one call


def test_the_event_loop_answers_while_a_request_is_being_tokenized(bert_scorer):
    app = build_app(bert_scorer)
    encoder = app.state.service.encoder
    real, gate, started = encoder.encode, threading.Event(), threading.Event()

    def held(samples):
        started.set()
        gate.wait(10)
        return real(samples)

    encoder.encode = held
    with ServerThread(app) as url, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS},
                              timeout=20)
        assert started.wait(10)
        health = httpx.get(f"{url}/health", timeout=5)  # answered while the tokenizer holds the request
        gate.set()
        reply = pending.result()
    assert health.status_code == 200
    close(reply.json()["scores"], bert_scorer.score_pairs(PROMPTS, RESPONSES))


def test_the_batcher_skips_the_sequences_of_a_cancelled_request():
    gate, seen = threading.Event(), []

    def run(sequences):
        seen.extend(sequences)
        gate.wait(10)
        return sum_ids(sequences)

    batcher = Batcher(run, ServeOptions(max_wait_ms=0))
    try:
        first = batcher.submit([[1]])
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.005)
        gone, kept = batcher.submit([[7, 7]]), batcher.submit([[2, 2]])
        gone.cancel()
        gate.set()
        assert first.result(10) == [1.0] and kept.result(10) == [4.0]
    finally:
        gate.set()
        batcher.close()
    assert seen == [[1], [2, 2]]


# --- health, metrics, options --------------------------------------------------------------------------

def test_health_and_metrics(bert_scorer):
    with ServerThread(build_app(bert_scorer)) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS})
        text = httpx.get(f"{url}/metrics").text
    for name in ("minirm_requests_total", "minirm_sequences_total", "minirm_tokens_total", "minirm_batch_size_bucket",
                 "minirm_queue_depth", "minirm_request_latency_seconds_bucket"):
        assert name in text


@pytest.mark.parametrize("text, want", [("8000", ("127.0.0.1", 8000)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
                                        ("[::1]:81", ("::1", 81))])
def test_parse_address(text, want):
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["", "host:", "abc", "70000", "1:2:x", "0"])
def test_bad_address_is_one_line(text):
    from minirm.errors import MinirmError

    with pytest.raises(MinirmError, match="give \\[HOST:\\]PORT"):
        parse_address(text)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(max_batch_tokens=0), "--max-batch-tokens"), (dict(max_wait_ms=float("nan")), "--max-wait-ms"),
    (dict(max_queue_tokens=-1), "--max-queue-tokens"), (dict(max_body_mb=0), "--max-body-mb"),
    (dict(strip_template="vicuna"), "unknown --strip-template"),
])
def test_bad_serve_options(kwargs, needle):
    from minirm.errors import MinirmError

    with pytest.raises(MinirmError, match=needle):
        ServeOptions(**kwargs)


# --- score.py --serve and torchrun --------------------------------------------------------------------

def test_score_py_serve_answers_until_stopped(make_checkpoint, bert_scorer, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    from test_hostile_score import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "score.py"), "--model", str(make_checkpoint("bert")[0]),
                             "--device", "cpu", "--serve", str(port), "--max-wait-ms", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.1)
        reply = httpx.post(f"http://127.0.0.1:{port}/get_reward", json={"query": queries(), "prompts": PROMPTS})
        close(reply.json()["rewards"], bert_scorer.score_pairs(PROMPTS, RESPONSES))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)


@pytest.mark.parametrize("extra, needle", [
    (["--serve", "8000", "--input", "x.jsonl"], "--serve answers requests; drop --input"),
    (["--serve", "8000", "--oa-rank"], "--oa-rank is for offline scoring"),
    (["--serve", "host:"], "give [HOST:]PORT"),
    (["--serve", "8000", "--max-wait-ms", "nan"], "--max-wait-ms must be a finite number"),
    (["--serve", "8000", "--max-wait-ms", "-1"], "--max-wait-ms must be a finite number of at least 0"),
])
def test_serve_options_fail_before_the_model_loads(make_checkpoint, capsys, monkeypatch, extra, needle):
    from test_hostile_score import fail_if_model_loads, one_line_error

    from minirm.scoring.cli import main

    model_dir = str(make_checkpoint("bert")[0])
    fail_if_model_loads(monkeypatch)
    capsys.readouterr()
    one_line_error(capsys, main(["--model", model_dir, *extra]), needle)


def test_torchrun_sharded_scoring_equals_one_process_bit_for_bit(make_checkpoint, tmp_path):
    import json

    from test_hostile_score import score_in_one_and_two_processes

    rows = [{"prompt": p * (1 + i % 3), "response": r * (1 + i % 4), "i": i}
            for i, (p, r) in enumerate(zip(PROMPTS * 9, RESPONSES * 9))]
    rows += [{"chosen": f"good answer {i}", "rejected": "bad", "prompt": "Q?"} for i in range(7)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", str(make_checkpoint("bert")[0]), "--device", "cpu", "--input", str(src), "--batch-size", "4"]
    one, two = score_in_one_and_two_processes(common, tmp_path)
    assert two == one and '"num_pairs": 7' in one[1]  # the same file; the summary, printed once


# --- hostile requests ----------------------------------------------------------------------------------

def test_a_deeply_nested_body_and_unknown_routes_get_the_one_error_shape(bert_scorer):
    deep = b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with ServerThread(build_app(bert_scorer)) as url:
        nested = httpx.post(f"{url}/get_reward", content=deep)
        missing = httpx.get(f"{url}/nowhere")
        wrong_method = httpx.get(f"{url}/get_reward")
        still = httpx.post(f"{url}/get_reward", json={"query": queries(), "prompts": PROMPTS})
    assert nested.status_code == 400 and "nests arrays or objects too deeply" in nested.json()["error"]
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    assert "the endpoints are POST /get_reward" in missing.json()["error"]
    assert wrong_method.status_code == 405 and wrong_method.json() == {
        "error": "Method Not Allowed; /get_reward takes POST"}
    assert still.status_code == 200


def test_a_port_in_use_is_one_line_before_the_model_loads(make_checkpoint, capsys, monkeypatch):
    import socket

    from test_hostile_score import fail_if_model_loads, one_line_error

    from minirm.scoring.cli import main

    model_dir = str(make_checkpoint("bert")[0])
    fail_if_model_loads(monkeypatch)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        capsys.readouterr()
        one_line_error(capsys, main(["--model", model_dir, "--serve", f"127.0.0.1:{port}"]),
                       f"--serve 127.0.0.1:{port}: cannot listen there")
