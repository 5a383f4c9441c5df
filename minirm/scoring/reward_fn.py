"""minirm as a reward function: TRL's GRPOTrainer, or anything that calls f(prompts, completions).

    from minirm import Scorer
    from minirm.reward_fn import RewardFunction

    reward = RewardFunction(Scorer.from_pretrained("aux-roberta"))   # in this process
    reward = RewardFunction("http://127.0.0.1:8000")                # a `score.py --serve` server
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

TRL (1.x, GRPOTrainer._calculate_rewards) calls a reward function as
`f(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=...,
log_metric=..., **the dataset's other columns)` and wants one float per completion. Prompts and
completions are plain strings ("standard" datasets) or lists of {"role", "content"} messages
("conversational" ones). A conversation is written as the model's card formats one, as the
server's --strip-template does (minirm/scoring/queries.py): for a pair model, the one user turn as it
is or a "Human: ... Assistant: ..." transcript; for CHAI's GPT-2, its Pygmalion chat format.
Over HTTP the rows go to the server's POST /score as (prompt, response) pairs, so a chat model
there reads a conversation's transcript as one user turn.
"""

from __future__ import annotations

import json
import urllib.request

from ..errors import MinirmError
from ..text.formats import ChatTurn
from ..text.records import Sample
from .queries import transcript

_SPEAKERS = {"user": "user", "assistant": "bot", "system": "system"}


def _text(content) -> str:
    """A message's content: a string, or a list of content blocks ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    raise MinirmError(f"a message's content must be a string or a list of text blocks, got {type(content).__name__}")


def _turns(messages, what: str) -> list[ChatTurn]:
    turns = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _SPEAKERS:
            raise MinirmError(f"{what}[{i}]: a message needs a 'role' of user, assistant or system, got {role!r}")
        turns.append(ChatTurn(_SPEAKERS[role], _text(message.get("content", ""))))
    return turns


def completion_sample(prompt, completion) -> Sample:
    """One (prompt, completion) of TRL's standard or conversational format -> a Sample."""
    if isinstance(prompt, str) and isinstance(completion, str):
        return Sample.pair(prompt, completion)
    if isinstance(prompt, list) and isinstance(completion, list):
        turns = _turns(prompt, "prompt")
        reply = " ".join(t.message for t in _turns(completion, "completion") if t.speaker == "bot")
        return Sample(transcript(turns), reply, history=[t for t in turns if t.speaker != "system"])
    raise MinirmError("prompts and completions must both be strings or both be lists of messages, got "
                      f"{type(prompt).__name__} and {type(completion).__name__}")


class RewardFunction:
    """A Scorer (or a server's URL) as a reward function: f(prompts, completions, **kwargs) -> scores."""

    def __init__(self, scorer_or_url, name: str = "minirm", timeout: float = 600.0):
        self.scorer = None if isinstance(scorer_or_url, str) else scorer_or_url
        self.url = scorer_or_url.rstrip("/") if isinstance(scorer_or_url, str) else None
        self.timeout = timeout
        self.__name__ = name  # TRL names each reward function's metrics by it

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise MinirmError(f"{len(prompts)} prompts but {len(completions)} completions; give one prompt per completion")
        samples = [completion_sample(p, c) for p, c in zip(prompts, completions)]
        if self.scorer is not None:
            return self.scorer.score_samples(samples)
        return self._post([{"prompt": s.prompt, "response": s.response} for s in samples])

    def _post(self, rows: list[dict]) -> list[float]:
        request = urllib.request.Request(f"{self.url}/score", data=json.dumps({"rows": rows}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return [row["score"] for row in json.loads(reply.read())["rows"]]
        except urllib.error.HTTPError as e:
            raise MinirmError(f"{self.url}/score answered {e.code}: {e.read().decode(errors='replace')[:300]}") from None
        except urllib.error.URLError as e:
            raise MinirmError(f"cannot reach {self.url} ({e.reason}); is `score.py --serve` running there?") from None


# --- verl --------------------------------------------------------------------------------------------
# verl (v0.7, verl/trainer/ppo/reward.py get_custom_reward_fn) loads `custom_reward_function.path`
# ("pkg://minirm.reward_fn" imports this module) and calls `custom_reward_function.name` with its
# reward manager's arguments plus `custom_reward_function.reward_kwargs`:
#   naive / reward loop: f(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs) -> float
#   batch:               f(data_sources=, solution_strs=, ground_truths=, extra_infos=, **reward_kwargs) -> list
# solution_str is the decoded response alone; the prompt reaches a reward function only through the
# dataset's extra_info (verl's gsm8k preprocessing stores it as extra_info["question"]).

def _verl_prompt(extra_info, prompt_key: str) -> str:
    prompt = (extra_info or {}).get(prompt_key)
    if not isinstance(prompt, str):
        raise MinirmError(f"extra_info has no string {prompt_key!r} to take the prompt from; store the prompt there in "
                          "the dataset, or name its key with custom_reward_function.reward_kwargs.prompt_key")
    return prompt


def verl_compute_score(data_source=None, solution_str: str = "", ground_truth=None, extra_info=None, *,
                       url: str, prompt_key: str = "question", **_) -> float:
    """verl's per-sample reward function, scored by a `score.py --serve` server at `url`."""
    return RewardFunction(url)([_verl_prompt(extra_info, prompt_key)], [solution_str])[0]


def verl_compute_score_batch(data_sources=None, solution_strs=(), ground_truths=None, extra_infos=None, *,
                             url: str, prompt_key: str = "question", **_) -> list[float]:
    """verl's batch reward manager's function: one request for the whole batch."""
    extra_infos = extra_infos if extra_infos is not None else [{}] * len(solution_strs)
    return RewardFunction(url)([_verl_prompt(e, prompt_key) for e in extra_infos], list(solution_strs))
