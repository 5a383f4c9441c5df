"""The reward server against what RL frameworks' clients really send.

Each test sends exactly what one OpenRLHF release's client sends to a live server (the request
shape, the split across several --remote_rm_url servers, the retry loop), as read from that
release's published source, pinned here by tag and commit. Their code is not copied: the tests
restate its arithmetic.

  v0.5.1   3b116caf1931bfabb6fa2e6425e794a0da6a666d  openrlhf/utils/remote_rm_utils.py remote_rm_fn:
           {"query": queries} only, no prompts; requests.post, raise_for_status, 5 tries 1 s apart
  v0.6.0   bfa85f6fa8cd6214707f93883fac5d08334f4f06  remote_rm_fn: {"query", "prompts", "labels"};
           experience_maker.py decodes the left-padded sequences with skip_special_tokens=False,
           and sends all queries to every URL
  v0.8.3   d86779bb15acb3187f75f1b5ee71aaa9f975ca9d  remote_rm_utils.py RemoteRewardModel.get_rewards:
  (-v0.9)  the whole rollout split over the URLs in slices of ceil(n / servers); a URL past the
           last query gets empty lists; experience_maker (v0.9.0 06ab51e7...) merges each
           extra_logs key of every reply with torch.as_tensor and torch.cat
  v0.11.0  3c3be6234e0cb353e76bb8019947db9dfe99fca7  openrlhf/utils/agent.py
           SingleTurnAgentExecutor: one query per request (prompt_token_ids[-max_prompt_length:]
           when the prompt is too long), _fetch_rewards_via_http slices it over the URLs as above
           and keeps the first reply
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from minirm.scoring.serve import ServeOptions, ServerThread, build_app  # noqa: E402
from test_serve import bert_scorer, close  # noqa: E402,F401  (the module's scorer fixture, scores to 1e-5)

CHATML_PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                 "How do I bake bread at home?<|im_end|>\n<|im_start|>assistant\n")
PROMPTS = ["How do I bake bread?", "Is the sky blue?", "Tell me a joke.", "What is 2 + 2?"]
RESPONSES = [" Mix flour, water, salt and yeast, knead, rise, and bake it hot.", " Yes, by day.",
             " Why did the chicken cross the road?", " Four."]


def post_with_retries(url: str, data: dict, tries: int = 5) -> dict:
    """The clients' request_api_wrapper / _post_request: raise_for_status, then up to 5 tries 1 s apart."""
    for _ in range(tries):
        try:
            reply = httpx.post(url, json=data, timeout=180)
            reply.raise_for_status()
            return reply.json()
        except httpx.HTTPError:
            time.sleep(1)
    raise RuntimeError(f"Request error for {tries} times")


def shard_over_urls(urls: list[str], queries: list[str], prompts: list[str], labels: list) -> list[dict]:
    """v0.8.3-v0.9 get_rewards and v0.11 _fetch_rewards_via_http: slices of ceil(n / servers)."""
    size = (len(queries) + len(urls) - 1) // len(urls)
    with ThreadPoolExecutor(len(urls)) as pool:
        futures = [pool.submit(post_with_retries, url + "/get_reward",
                               {"query": queries[i * size:(i + 1) * size], "prompts": prompts[i * size:(i + 1) * size],
                                "labels": labels[i * size:(i + 1) * size]})
                   for i, url in enumerate(urls)]
        return [f.result() for f in futures]


def merge_like_v09(replies: list[dict]) -> dict:
    """v0.9.0 experience_maker: every extra_logs key of the first reply, from every reply, as tensors."""
    rewards = torch.cat([torch.as_tensor(r["rewards"]) for r in replies], dim=0)
    logs = {key: torch.cat([torch.as_tensor(r["extra_logs"][key]) for r in replies], dim=0)
            for key in replies[0]["extra_logs"]}
    return {"rewards": rewards, "logs": logs}


# --- 1. several URLs ---------------------------------------------------------------------------------

def test_v011_one_query_over_two_urls(bert_scorer):
    """v0.11 sends one query per request: the second URL gets empty lists, a valid request."""
    with ServerThread(build_app(bert_scorer)) as first, ServerThread(build_app(bert_scorer)) as second:
        replies = shard_over_urls([first, second], [PROMPTS[0] + RESPONSES[0]], [PROMPTS[0]], [None])
    assert replies[1] == {"rewards": [], "scores": [], "extra_logs": {key: [] for key in replies[0]["extra_logs"]}}
    kept = replies[0]  # rewards_info_list[0]
    close(kept["scores"], bert_scorer.score_pairs(PROMPTS[:1], RESPONSES[:1]))


def test_v09_fewer_queries_than_urls_and_the_merge(bert_scorer):
    queries = [p + r for p, r in zip(PROMPTS[:2], RESPONSES[:2])]
    servers = [ServerThread(build_app(bert_scorer)) for _ in range(3)]
    with servers[0] as a, servers[1] as b, servers[2] as c:
        replies = shard_over_urls([a, b, c], queries, PROMPTS[:2], ["", ""])
    assert [len(r["rewards"]) for r in replies] == [1, 1, 0]
    merged = merge_like_v09(replies)
    close(merged["rewards"].tolist(), bert_scorer.score_pairs(PROMPTS[:2], RESPONSES[:2]))
    assert merged["logs"]["minirm_split_exact"].tolist() == [1.0, 1.0]


# --- 2. queries that do not start with their prompt ----------------------------------------------------

def test_v06_left_padded_queries_decoded_with_special_tokens(bert_scorer):
    """skip_special_tokens=False: pad (= eos) tokens before the prompt and after the response."""
    queries = ["<|endoftext|>" * (3 - i % 3) + p + r + "<|endoftext|>" * (i % 2) for i, (p, r)
               in enumerate(zip(PROMPTS, RESPONSES))]
    with ServerThread(build_app(bert_scorer)) as url:
        reply = post_with_retries(url + "/get_reward", {"query": queries, "prompts": PROMPTS, "labels": [""] * 4})
    close(reply["scores"], bert_scorer.score_pairs(PROMPTS, RESPONSES))
    assert reply["extra_logs"]["minirm_split_markers"] == [1.0] * 4


def test_v011_left_truncated_prompt(bert_scorer, bpe_files):
    """prompt_token_ids[-max_prompt_length:], decoded with the response: the query starts mid-prompt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    bpe = Tokenizer(models.BPE.from_file(str(bpe_files / "vocab.json"), str(bpe_files / "merges.txt")))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    prompt = "Here is some background you should know first. " * 8 + "Now: how do I bake bread at home?"
    response = " Mix flour, water, salt and yeast; knead, let it rise, and bake it hot."
    kept = bpe.encode(prompt, add_special_tokens=False).ids[-40:]
    query = bpe.decode(kept + bpe.encode(response, add_special_tokens=False).ids)
    assert not query.startswith(prompt) and query.endswith(response)
    with ServerThread(build_app(bert_scorer)) as url:
        reply = post_with_retries(url + "/get_reward", {"query": [query], "prompts": [prompt], "labels": [None]})
    close(reply["scores"], bert_scorer.score_pairs([prompt], [response]))  # the prompt scored is the client's, whole
    assert reply["extra_logs"]["minirm_split_truncated"] == [1.0]


def clean_up_tokenization(text: str) -> str:
    """transformers' PreTrainedTokenizerBase.clean_up_tokenization (what a Llama 3 decode did up to 5.3)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def test_decoded_prompt_with_moved_spaces(bert_scorer):
    prompt = "Someone called me the word 'social' , is it rude ?"
    response = " No, it is not rude at all."
    query = clean_up_tokenization(prompt + response)
    assert query.startswith("Someone called me the word'social', is it rude?")  # the example
    with ServerThread(build_app(bert_scorer)) as url:
        reply = post_with_retries(url + "/get_reward", {"query": [query], "prompts": [prompt], "labels": [""]})
    close(reply["scores"], bert_scorer.score_pairs([prompt], [" No, it is not rude at all."]))
    assert reply["extra_logs"]["minirm_split_spacing"] == [1.0]


def test_v05_query_only_split_at_the_assistant_marker(bert_scorer):
    """v0.5 sends {"query": [...]} alone: a templated query splits after its last assistant marker."""
    response = "Mix flour, water, salt and yeast, then bake it."
    with ServerThread(build_app(bert_scorer, ServeOptions(strip_template="chatml"))) as url:
        reply = post_with_retries(url + "/get_reward", {"query": [CHATML_PROMPT + response + "<|im_end|>"]})
        plain = httpx.post(url + "/get_reward", json={"query": ["no template, no prompt"]})
    close(reply["rewards"], bert_scorer.score_pairs(["You are a helpful assistant.\n\nHow do I bake bread at home?"],
                                                    [response]))
    assert reply["extra_logs"]["minirm_split_template"] == [1.0]
    assert plain.status_code == 400 and plain.json()["error"].startswith("query[0] cannot be split")


# --- 3. a whole rollout in one request -----------------------------------------------------------------

def test_v08_whole_rollout_in_one_request(bert_scorer):
    """rollout_batch_size x n_samples_per_prompt = 1024 x 8 queries to one URL, one request."""
    n = 1024 * 8
    queries = [PROMPTS[i % 4] + RESPONSES[i % 4] for i in range(n)]
    prompts = [PROMPTS[i % 4] for i in range(n)]
    with ServerThread(build_app(bert_scorer)) as url:
        replies = shard_over_urls([url], queries, prompts, [None] * n)
    assert len(replies[0]["rewards"]) == n
    close(replies[0]["rewards"][:4], bert_scorer.score_pairs(PROMPTS, RESPONSES))
    close(replies[0]["rewards"], [replies[0]["rewards"][i % 4] for i in range(n)])


def test_a_full_queue_is_absorbed_by_the_clients_retries(bert_scorer):
    """503 + Retry-After while a big request holds the queue; the client's next try gets through."""
    app = build_app(bert_scorer, ServeOptions(max_queue_tokens=64, max_wait_ms=0))
    service = app.state.service
    gate, started = threading.Event(), threading.Event()
    real = service.batcher.run_batch

    def held(sequences):
        started.set()
        gate.wait(10)
        return real(sequences)

    service.batcher.run_batch = held
    body = {"query": [p + r for p, r in zip(PROMPTS, RESPONSES)], "prompts": PROMPTS, "labels": [""] * 4}
    with ServerThread(app) as url, ThreadPoolExecutor(3) as pool:
        first = pool.submit(httpx.post, url + "/get_reward", json=body, timeout=30)
        assert started.wait(10)
        second = pool.submit(httpx.post, url + "/get_reward", json=body, timeout=30)  # waits in the queue
        while service.batcher.depth() == 0:
            time.sleep(0.01)
        refused = httpx.post(url + "/get_reward", json=body)
        threading.Timer(1.5, gate.set).start()
        retried = post_with_retries(url + "/get_reward", body)
        assert first.result().status_code == 200 and second.result().status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    close(retried["scores"], bert_scorer.score_pairs(PROMPTS, RESPONSES))
    assert all(math.isfinite(x) for x in retried["rewards"])
