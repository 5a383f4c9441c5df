"""minirm.reward_fn.RewardFunction called the way TRL's GRPOTrainer calls a reward function.

TRL's own GRPOTrainer._calculate_rewards runs here (trl 1.x), unbound, on a stand-in for the
trainer that holds only what that method reads: so the keyword arguments, the dataset columns
it passes through and the checks on what comes back are TRL's, not a copy of them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")
pytest.importorskip("fastapi")

from minirm import Scorer  # noqa: E402
from minirm.errors import MinirmError  # noqa: E402
from minirm.text.formats import ChatTurn  # noqa: E402
from minirm.text.records import Sample  # noqa: E402
from minirm.reward_fn import RewardFunction  # noqa: E402
from minirm.scoring.serve import ServerThread, build_app  # noqa: E402

PROMPTS = ["How do I bake bread?", "Is the sky blue?"]
COMPLETIONS = [" Knead flour, water, salt and yeast, then bake it hot.", " Yes, by day."]


@pytest.fixture(scope="module")
def bert_scorer(make_checkpoint):
    return Scorer.from_pretrained(str(make_checkpoint("bert")[0]), device="cpu")


def trl_rewards(reward_funcs, prompts, completions) -> torch.Tensor:
    """TRL's GRPOTrainer._calculate_rewards, with a dataset column ('answer') beside the prompt."""
    from accelerate import Accelerator
    from transformers import TrainerState
    from trl import GRPOTrainer
    from trl.trainer.utils import get_callable_name

    trainer = SimpleNamespace(
        accelerator=Accelerator(cpu=True), reward_funcs=reward_funcs, reward_processing_classes=[None] * len(reward_funcs),
        reward_func_names=[get_callable_name(f) for f in reward_funcs], environments=None, state=TrainerState(),
        _log_completion_extra=lambda *a, **k: None, _log_metric=lambda *a, **k: None, chat_template_kwargs={},
        args=SimpleNamespace(report_to=[]))
    inputs = [{"prompt": p, "answer": "unused"} for p in prompts]
    ids = [[1, 2, 3]] * len(prompts)
    return GRPOTrainer._calculate_rewards(trainer, inputs, prompts, completions, ids)


def test_trl_names_it_and_calls_it_synchronously(bert_scorer):
    from trl.trainer.utils import get_callable_name, is_async_callable

    reward = RewardFunction(bert_scorer)
    assert get_callable_name(reward) == "minirm" and not is_async_callable(reward)


def test_standard_format_in_process_and_over_http(bert_scorer):
    expected = bert_scorer.score_pairs(PROMPTS, COMPLETIONS)
    in_process = trl_rewards([RewardFunction(bert_scorer)], PROMPTS, COMPLETIONS)
    with ServerThread(build_app(bert_scorer)) as url:
        over_http = trl_rewards([RewardFunction(url, name="served")], PROMPTS, COMPLETIONS)
    torch.testing.assert_close(in_process[:, 0], torch.tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(over_http[:, 0], torch.tensor(expected), atol=1e-5, rtol=0)


def test_conversational_format(bert_scorer):
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    prompts[1] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": PROMPTS[1]}]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    got = trl_rewards([RewardFunction(bert_scorer)], prompts, completions)[:, 0]
    transcript = f"Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {PROMPTS[1]}"
    expected = bert_scorer.score_pairs([PROMPTS[0], transcript], COMPLETIONS)
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=0)


def test_a_chat_model_reads_the_conversation_in_its_format(make_checkpoint):
    gpt2 = Scorer.from_pretrained(str(make_checkpoint("gpt2")[0]), device="cpu")
    prompts = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "How are you?"}]]
    completions = [[{"role": "assistant", "content": "Fine."}]]
    got = trl_rewards([RewardFunction(gpt2)], prompts, completions)[:, 0]
    history = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hello!"), ChatTurn("user", "How are you?")]
    expected = gpt2.score_samples([Sample("", "Fine.", history=history)])
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-6, rtol=0)


def test_mistakes_are_one_line(bert_scorer):
    reward = RewardFunction(bert_scorer)
    with pytest.raises(MinirmError, match="2 prompts but 1 completions"):
        reward(PROMPTS, COMPLETIONS[:1])
    with pytest.raises(MinirmError, match="both be strings or both be lists of messages"):
        reward(["a"], [[{"role": "assistant", "content": "b"}]])
    with pytest.raises(MinirmError, match="cannot reach http://127.0.0.1:9"):
        RewardFunction("http://127.0.0.1:9")(["a"], ["b"])


# --- verl ---------------------------------------------------------------------------------------------
# As verl (github.com/volcengine/verl at b178a3cd5, v0.7.0+125) loads and calls a custom reward
# function: load_module("pkg://minirm.reward_fn") is importlib.import_module("minirm.reward_fn");
# _call_with_kwargs merges custom_reward_function.reward_kwargs over the manager's arguments.

def verl_custom_reward_fn(name: str, reward_kwargs: dict):
    import importlib

    raw = getattr(importlib.import_module("pkg://minirm.reward_fn"[len("pkg://"):].replace("/", ".")), name)
    return lambda *args, **kwargs: raw(*args, **{**kwargs, **reward_kwargs})


def test_verl_naive_and_batch_reward_managers(bert_scorer):
    extra_infos = [{"split": "train", "index": i, "question": p} for i, p in enumerate(PROMPTS)]
    with ServerThread(build_app(bert_scorer)) as url:
        per_sample = verl_custom_reward_fn("verl_compute_score", {"url": url})
        naive = [per_sample(data_source="hh", solution_str=c, ground_truth=None, extra_info=e)
                 for c, e in zip(COMPLETIONS, extra_infos)]
        batch = verl_custom_reward_fn("verl_compute_score_batch", {"url": url})(
            data_sources=["hh", "hh"], solution_strs=COMPLETIONS, ground_truths=[None, None], extra_infos=extra_infos)
        with pytest.raises(MinirmError, match="extra_info has no string 'prompt'"):
            verl_custom_reward_fn("verl_compute_score", {"url": url, "prompt_key": "prompt"})(
                data_source="hh", solution_str="x", ground_truth=None, extra_info=extra_infos[0])
    expected = bert_scorer.score_pairs(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(torch.tensor(naive), torch.tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(batch), torch.tensor(expected), atol=1e-5, rtol=0)
