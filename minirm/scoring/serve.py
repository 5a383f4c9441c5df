"""The reward server: OpenRLHF's remote reward protocol and a native endpoint, batching across requests.

    requests -> tokenizer thread -> queue -> length-sorted batches under a token budget -> the same
    scorer -> replies

Endpoints:
- POST /get_reward  OpenRLHF's `--remote_rm_url` protocol. Request {"query": [...], "prompts": [...],
                    "labels": [...]} (prompts and labels optional, lists may be empty); reply
                    {"rewards": [...], "scores": [...], "extra_logs": {"minirm_split_<rule>": [0/1 per
                    query], ...}}. A query is the policy's prompt followed by its response; pair models
                    split it (minirm/scoring/queries.py says by which rules; extra_logs and /metrics say which
                    one split each query), single-text models (GPT-2) score it whole.
- POST /score       {"rows": [...]} in any of score.py's JSONL row formats; the rows come back with
                    the fields score.py adds ("score", or "score_chosen", "score_rejected", "correct").
- GET  /health      200 once the model is loaded.
- GET  /metrics     Prometheus text: requests, sequences, tokens, batch sizes, queue depth, latency.

Three threads share a request. The event loop reads, parses and splits it and hands its texts to
the tokenizer thread, which takes every request waiting, tokenizes their texts in one call (the
tokenizer runs without the GIL, beside the loop) and queues each request's sequences. One worker
thread runs the model: when it is free it takes everything queued (after up to --max-wait-ms for
company, 0 by default: a lone request is taken at once, and what arrives during a forward joins
the next one), sorts it by length and cuts it into batches of at most --max-batch-tokens padded
tokens, one forward each. Each score goes back to the request that asked for it, in that
request's order; the requests that a forward finishes go back to the loop in one hand-off.

A request is work to queue, whatever its size (OpenRLHF 0.8-0.9 send a whole rollout, 1024 x 8
queries, in one): the queue is bounded in tokens, --max-queue-tokens, and a request that would
overflow a busy queue answers 503 with Retry-After (an idle server takes any request). Only a body
over --max-body-mb answers 413. A bad request gets a 4xx whose JSON body is {"error": "one line
naming the field"}; a failure inside the model fails only the requests whose sequences were in
that batch, with a 500.

Scores equal offline score.py's up to float rounding (a sequence padded to another length can move
in the last bits; the tests hold them to 1e-5, the project's parity bar).
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from dataclasses import dataclass, replace

from fastapi import FastAPI, Request  # the [serve] extra: this module is imported only to serve
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import MinirmError, first_line
from ..text.records import check_row, has_lone_surrogate, parse_strict_json, rows_to_samples, rows_with_scores
from .queries import SPLIT_RULES, TEMPLATES, SplitError, query_sample
from .scorer import overflow_reason


@dataclass
class ServeOptions:
    # padded tokens (sequences x longest) per forward; None: 16384 on a GPU, 1024 on CPU, where a
    # 150-token pair already fills a matrix multiply and padding costs more than batching saves
    max_batch_tokens: int | None = None
    # how long the first waiting sequence waits for company. 0 (the default) still batches: what
    # arrives while a forward runs goes into the next one, and a lone request never waits
    max_wait_ms: float = 0.0
    max_queue_tokens: int = 1 << 21  # tokens waiting; a request that would pass it waits (503) unless idle
    max_body_mb: int = 256  # a request body larger than this answers 413 before it is read whole
    strip_template: str | None = None  # a TEMPLATES name (minirm/scoring/queries.py)

    def __post_init__(self):
        for name in ("max_batch_tokens", "max_queue_tokens", "max_body_mb"):
            value = getattr(self, name)
            if value is None and name == "max_batch_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MinirmError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if not (isinstance(self.max_wait_ms, (int, float)) and math.isfinite(self.max_wait_ms)
                and self.max_wait_ms >= 0):
            raise MinirmError(f"--max-wait-ms must be a finite number of at least 0, got {self.max_wait_ms!r}")
        if self.strip_template is not None and self.strip_template not in TEMPLATES:
            raise MinirmError(f"unknown --strip-template {self.strip_template!r}; choose one of {', '.join(TEMPLATES)}")


class BadRequest(Exception):
    """A client's mistake: answered with `status` and {"error": message}."""

    def __init__(self, message: str, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


# --- the batcher -------------------------------------------------------------------------------

class Job:
    """One request's sequences: queued together, their scores come back together, in its order.

    The worker settles a job once, when its last score is in or when a batch holding one of its
    sequences fails. A job made for an event loop is settled there: after each forward the worker
    hands that forward's finished jobs to the loop in one call (one wake-up per forward, not one
    per request or per sequence), and `await job.future` gives the scores. A job made without a
    loop is waited for with `job.result(timeout)`."""

    __slots__ = ("scores", "left", "error", "cancelled", "settled", "future", "loop", "event")

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop | None = None):
        self.scores: list[float] = [0.0] * size
        self.left, self.error, self.cancelled, self.settled = size, None, False, False
        self.loop = loop
        self.future = loop.create_future() if loop is not None else None
        self.event = threading.Event() if loop is None else None

    def result(self, timeout: float | None = None) -> list[float]:
        """The scores, for a job submitted without a loop (a thread waits for them)."""
        if not self.event.wait(timeout):
            raise TimeoutError("the batcher did not answer in time")
        if self.error is not None:
            raise self.error
        return self.scores

    def cancel(self) -> None:
        """The client went away: the worker skips this job's sequences that it has not started."""
        self.cancelled = True


def _settle_on_loop(jobs: list[Job]) -> None:
    """On the event loop: complete each finished job's future (unless its request was cancelled)."""
    for job in jobs:
        if not job.future.done():
            if job.error is not None:
                job.future.set_exception(job.error)
            else:
                job.future.set_result(job.scores)


@dataclass(slots=True)
class _Waiting:
    ids: list[int]
    job: Job
    index: int  # the sequence's place in its request
    since: float


class Batcher:
    """One queue of sequences from every request; one worker thread that runs the model on
    length-sorted batches under a token budget. `run_batch(list of id lists) -> list of scores`."""

    def __init__(self, run_batch, options: ServeOptions, metrics: "Metrics | None" = None):
        if options.max_batch_tokens is None:  # RewardService picks it by device; alone, the CPU figure
            options = replace(options, max_batch_tokens=1024)
        self.run_batch, self.options, self.metrics = run_batch, options, metrics
        self._waiting: list[_Waiting] = []
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="minirm-batcher", daemon=True)
        self._thread.start()

    def submit(self, sequences: list[list[int]], loop: asyncio.AbstractEventLoop | None = None,
               job: Job | None = None) -> Job:
        """Queue a request's sequences as one Job (`job`, or a new one, made on `loop`'s thread when a
        loop is given), unless they would push a non-empty queue past its token bound (503: the
        client retries); an empty queue takes a request of any size. Any thread may call it."""
        tokens = sum(map(len, sequences))
        job = job or Job(len(sequences), loop)
        with self._cond:
            if self._waiting and self._queued_tokens + tokens > self.options.max_queue_tokens:
                raise BadRequest(f"the queue is full ({self._queued_tokens} tokens waiting, this request has "
                                 f"{tokens}); retry shortly", 503, {"Retry-After": "1"})
            now = time.monotonic()
            self._waiting.extend(_Waiting(ids, job, i, now) for i, ids in enumerate(sequences))
            self._queued_tokens += tokens
            self._cond.notify()
        return job

    def depth(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[_Waiting] | None:
        """Wait for work, then for company (up to max_wait_ms after the oldest arrived, or until a
        budget's worth is waiting); take everything that is waiting. With max_wait_ms 0 a lone
        request is taken the moment it arrives."""
        budget, wait = self.options.max_batch_tokens, self.options.max_wait_ms / 1000
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            while wait and not self._closed:
                left = self._waiting[0].since + wait - time.monotonic()
                if left <= 0 or sum(len(w.ids) for w in self._waiting) >= budget:
                    break
                self._cond.wait(timeout=left)
            taken, self._waiting, self._queued_tokens = self._waiting, [], 0
        return [w for w in taken if not w.job.cancelled]  # skip abandoned requests

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            try:
                batches = budget_batches(taken, self.options.max_batch_tokens)
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one batch
                self._fail(taken, e)
                continue
            for batch in batches:
                self._run(batch)

    def _run(self, batch: list[_Waiting]) -> None:
        try:
            scores = self.run_batch([w.ids for w in batch])
        except Exception as e:  # noqa: BLE001 - out of memory or worse: fail this batch's requests only
            self._fail(batch, e)
            return
        if self.metrics:
            self.metrics.batch(len(batch), sum(len(w.ids) for w in batch))
        finished = []
        for w, s in zip(batch, scores):
            job = w.job
            job.scores[w.index] = s
            job.left -= 1
            if job.left == 0 and not job.settled:
                finished.append(job)
        self._settle(finished)

    def _fail(self, items: list[_Waiting], error: Exception) -> None:
        finished = []
        for w in items:
            if not w.job.settled and w.job.error is None:
                w.job.error = error
                finished.append(w.job)
        self._settle(finished)

    @staticmethod
    def _settle(jobs: list[Job]) -> None:
        """Hand finished jobs back: one call per event loop for all of them, an event per thread job."""
        by_loop: dict = {}
        for job in jobs:
            job.settled = True
            if job.loop is None:
                job.event.set()
            else:
                by_loop.setdefault(job.loop, []).append(job)
        for loop, mine in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_on_loop, mine)
            except RuntimeError:  # the loop has closed: nobody waits for these any more
                pass


class Encoder:
    """The tokenizer's thread, in front of the batcher: it takes every request waiting, tokenizes
    their texts in one call (the tokenizer runs without the GIL, beside the event loop) and queues
    each request's sequences in the batcher, or settles its job with the error: a text that
    tokenizes to nothing (400) or a full queue (503). The event loop only parses and splits."""

    def __init__(self, encode, batcher: Batcher):
        self.encode, self.batcher = encode, batcher
        self._waiting: list[tuple[list, list[str] | None, Job]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="minirm-encoder", daemon=True)
        self._thread.start()

    def submit(self, samples: list, labels: list[str] | None, loop: asyncio.AbstractEventLoop) -> Job:
        job = Job(len(samples), loop)
        with self._cond:
            self._waiting.append((samples, labels, job))
            self._cond.notify()
        return job

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                taken, self._waiting = self._waiting, []
            taken = [t for t in taken if not t[2].cancelled]
            try:
                encoded = self.encode([s for samples, _, _ in taken for s in samples])
            except Exception:  # noqa: BLE001 - one request's texts broke the tokenizer: find which, alone
                encoded = None
            start = 0
            for samples, labels, job in taken:
                try:
                    if encoded is None:
                        sequences = self.encode(samples)
                    else:
                        sequences, start = encoded[start:start + len(samples)], start + len(samples)
                    empty = next((i for i, ids in enumerate(sequences) if not ids), None)
                    if empty is not None:
                        raise BadRequest(f"{_label(labels, empty)} tokenizes to nothing; give it some text")
                    self.batcher.submit(sequences, job=job)
                except Exception as e:  # noqa: BLE001 - 400, 503 or the tokenizer's failure: this request only
                    job.error = e
                    Batcher._settle([job])


def budget_batches(items: list, max_tokens: int, length=lambda w: len(w.ids)) -> list[list]:
    """Longest first, cut so that (sequences x longest) stays within max_tokens; a sequence longer
    than the budget runs alone."""
    order = sorted(items, key=lambda w: -length(w))
    batches, current = [], []
    for w in order:
        if current and (len(current) + 1) * length(current[0]) > max_tokens:
            batches.append(current)
            current = []
        current.append(w)
    return batches + ([current] if current else [])


# --- metrics ----------------------------------------------------------------------------------

class Metrics:
    def __init__(self, depth):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("minirm_requests", "requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.sequences = Counter("minirm_sequences", "sequences scored", registry=self.registry)
        self.tokens = Counter("minirm_tokens", "real tokens scored", registry=self.registry)
        self.batch_size = Histogram("minirm_batch_size", "sequences per forward", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.latency = Histogram("minirm_request_latency_seconds", "request latency", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.splits = Counter("minirm_query_splits", "queries by the rule that split them (minirm/scoring/queries.py)",
                              ["rule"], registry=self.registry)
        Gauge("minirm_queue_depth", "sequences waiting", registry=self.registry).set_function(depth)
        self._children: dict = {}  # (metric, labels) -> its child: labels() looks them up under a lock

    def _child(self, metric, *labels):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        self._child(self.requests, endpoint, str(status)).inc()
        self._child(self.latency, endpoint).observe(seconds)

    def split(self, rules: list[str]) -> None:
        for rule, n in collections.Counter(rules).items():
            self._child(self.splits, rule).inc(n)

    def batch(self, sequences: int, tokens: int) -> None:
        self.batch_size.observe(sequences)
        self.sequences.inc(sequences)
        self.tokens.inc(tokens)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --- requests -> samples ------------------------------------------------------------------------

def _string_list(body: dict, name: str, required: bool = True) -> list[str] | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"field {name!r} is missing; send a list of strings")
        return None
    if not isinstance(value, list):
        raise BadRequest(f"field {name!r} must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise BadRequest(f"{name}[{i}] must be a string, got {type(item).__name__}")
        if has_lone_surrogate(item):
            raise BadRequest(f"{name}[{i}] holds a lone surrogate escape (\\ud800-\\udfff without its pair)")
    return value


def reward_samples(body: dict, pair_input: bool, template: str | None = None,
                   chat: bool = False) -> tuple[list, list[str]]:
    """OpenRLHF's request -> (samples, the rule that split each query); see minirm/scoring/queries.py.
    `chat`: the model reads conversations through its chat template (queries.chat_query_sample)."""
    queries = _string_list(body, "query")
    prompts = _string_list(body, "prompts", required=False)
    if prompts is not None and len(prompts) != len(queries):
        raise BadRequest(f"'prompts' has {len(prompts)} items but 'query' has {len(queries)}; send one per query")
    samples, rules = [], []
    for i, query in enumerate(queries):
        try:
            sample, rule = query_sample(query, prompts[i] if prompts is not None else None, pair_input, template,
                                        chat)
        except SplitError as e:
            raise BadRequest(f"query[{i}] cannot be split into prompt and response: {e}") from None
        samples.append(sample)
        rules.append(rule)
    return samples, rules


async def read_body(request: Request, limit_mb: int) -> bytes:
    """The request body, refused (413) as soon as it passes the limit, before it is all read."""
    limit = limit_mb << 20
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the body has {int(declared)} bytes; send at most --max-body-mb {limit_mb} MiB per request "
                         "(split the queries over several requests)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the body is over --max-body-mb {limit_mb} MiB; split the queries over several "
                             "requests", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes) -> dict:
    try:
        body = parse_strict_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON ({e})") from None
    except RecursionError:
        raise BadRequest("the body nests arrays or objects too deeply to parse; send a flat request") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return body


# --- the app ------------------------------------------------------------------------------------

class RewardService:
    """What the endpoints share: the scorer, the batcher and the metrics."""

    def __init__(self, scorer, options: ServeOptions):
        if options.max_batch_tokens is None:
            options = replace(options, max_batch_tokens=16384 if scorer.device.type == "cuda" else 1024)
        self.scorer, self.options = scorer, options
        self.metrics = Metrics(lambda: self.batcher.depth())
        self.batcher = Batcher(scorer.forward_batch, options, self.metrics)
        self.encoder = Encoder(scorer.encode, self.batcher)

    def close(self) -> None:
        self.encoder.close()
        self.batcher.close()

    async def score(self, samples: list, labels: list[str] | None = None) -> list[float]:
        """Scores of `samples`, in order; `labels` name them in errors (None: "query[i]")."""
        if not samples:
            return []
        job = self.encoder.submit(samples, labels, asyncio.get_running_loop())
        try:
            scores = await job.future
        except asyncio.CancelledError:  # the client went away: its waiting sequences are dropped
            job.cancel()
            raise
        bad = [i for i, x in enumerate(scores) if not math.isfinite(x)]
        if bad:
            reason = overflow_reason(scores[bad[0]], self.scorer.dtype).replace("score with --dtype", "serve with --dtype")
            raise ModelFailure(f"{_label(labels, bad[0])}: {reason}")
        return scores

    async def get_reward(self, body: dict) -> dict:
        tokenizer = self.scorer.tokenizer
        samples, rules = reward_samples(body, tokenizer.pair_input, self.options.strip_template,
                                        tokenizer.chat_template is not None)
        scores = await self.score(samples)
        if rules:
            self.metrics.split(rules)
        # one 0/1 list per rule, every key in every reply (OpenRLHF merges the keys of several
        # servers' replies and logs each key's mean: the share of queries split by that rule)
        extra_logs = {f"minirm_split_{name}": [float(rule == name) for rule in rules]
                      for name in ("whole",) + SPLIT_RULES}
        return {"rewards": scores, "scores": scores, "extra_logs": extra_logs}

    async def score_rows(self, body: dict) -> dict:
        rows = body.get("rows")
        if not isinstance(rows, list):
            raise BadRequest("field 'rows' must be a list of row objects")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequest(f"rows[{i}] must be an object, got {type(row).__name__}")
            try:
                check_row(row, f"rows[{i}]")
            except MinirmError as e:
                raise BadRequest(str(e)) from None
        samples, owners, labels = rows_to_samples(rows, [f"rows[{i}]" for i in range(len(rows))])
        scores = await self.score(samples, labels)
        return {"rows": rows_with_scores(rows, owners, scores)}


def _label(labels: list[str] | None, i: int) -> str:
    return f"query[{i}]" if labels is None else labels[i]


class ModelFailure(Exception):
    """Something went wrong inside the model for this request: a 500 that says what."""


def build_app(scorer, options: ServeOptions | None = None) -> FastAPI:
    from contextlib import asynccontextmanager

    options = options or ServeOptions()
    service = RewardService(scorer, options)

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="minirm reward server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        """404, 405 and the like in the one error shape of every answer: {"error": "one line"}."""
        allowed = {"/get_reward": "POST", "/score": "POST", "/health": "GET", "/metrics": "GET"}
        hint = (f"; {request.url.path} takes {allowed[request.url.path]}" if request.url.path in allowed
                else f"; the endpoints are {', '.join(f'{m} {p}' for p, m in allowed.items())}")
        return JSONResponse({"error": f"{error.detail}{hint}"}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    def answer(endpoint: str, status: int, body: dict, started: float, headers: dict | None = None):
        service.metrics.answered(endpoint, status, time.monotonic() - started)
        return JSONResponse(body, status_code=status, headers=headers)

    async def handle(request: Request, endpoint: str, method):
        started = time.monotonic()
        try:
            body = parse_body(await read_body(request, service.options.max_body_mb))
            return answer(endpoint, 200, await method(body), started)
        except BadRequest as e:
            return answer(endpoint, e.status, {"error": str(e)}, started, e.headers)
        except ModelFailure as e:
            return answer(endpoint, 500, {"error": str(e)}, started)
        except Exception as e:  # noqa: BLE001 - inside the model (out of memory, ...): this request only
            return answer(endpoint, 500, {"error": f"scoring failed: {type(e).__name__}: {first_line(e)}"}, started)

    @app.post("/get_reward")
    async def get_reward(request: Request):
        return await handle(request, "/get_reward", service.get_reward)

    @app.post("/score")
    async def score(request: Request):
        return await handle(request, "/score", service.score_rows)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": getattr(scorer, "name", None) or scorer.cfg.family}

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


# uvicorn's settings for the server (and for benchmarks/serve_load.py's echo reference, so that the two
# run the same HTTP stack). Its http and loop stay "auto": httptools and uvloop when installed, h11
# and asyncio otherwise. Access lines are off: uvicorn builds each one before the level filter drops it.
UVICORN_OPTIONS = dict(log_level="warning", access_log=False)


def parse_address(text: str) -> tuple[str, int]:
    """'[HOST:]PORT' -> (host, port); the host defaults to 127.0.0.1, reachable from this machine only."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise MinirmError(f"--serve {text!r}: give [HOST:]PORT, e.g. 8000 or 0.0.0.0:8000")
    return host, int(port)


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, benchmarks): `with ServerThread(app) as url:`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on", **UVICORN_OPTIONS))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def check_port(host: str, port: int) -> None:
    """Bind the address once before the model loads, so a port in use is one line, not a failure
    after minutes of loading."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
            probe.bind((host, port))
    except OSError as e:
        raise MinirmError(f"--serve {host}:{port}: cannot listen there ({e.strerror or e}); choose another port "
                          "or stop what holds it") from None


def serve(scorer, address: str, options: ServeOptions) -> None:
    import sys

    import uvicorn

    host, port = parse_address(address)
    app = build_app(scorer, options)
    print(f"minirm: serving {app.state.service.scorer.cfg.family} on http://{host}:{port} "
          "(POST /get_reward, POST /score, GET /health, GET /metrics)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, **UVICORN_OPTIONS)


