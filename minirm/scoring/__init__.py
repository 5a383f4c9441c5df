"""Scoring: a trained reward model turned into numbers, offline, in-process or over HTTP.

    scorer.py         Scorer: (prompt, response) pairs -> scores, length-sorted batches
    serve.py          the reward server (OpenRLHF's /get_reward, /score, /health, /metrics)
    queries.py        how the server splits a policy's query into (prompt, response)
    reward_fn.py      TRL and verl reward functions over a Scorer or a server's URL
    openassistant.py  OpenAssistant's reward-model text format
    evaluate.py       datasets as input, RewardBench 1 and 2, the model cards' tables (--card-eval)
    cli.py            score.py's command line

May import: text, models and the shared modules at minirm's top; never minirm.training.
"""
