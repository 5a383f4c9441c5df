"""Training: records -> format -> tokenize -> batch -> model -> loss -> optimizer step -> checkpoint.

    loop.py     train(cfg): the loop, top to bottom
    config.py   TrainConfig, every option with its default
    recipes.py  the model cards' recipes as TrainConfigs
    data.py     DataSource: JSONL files and Hub datasets -> examples
    losses.py   the objectives (pairwise, classification, regression)
    optim.py    the optimizer and learning-rate schedule
    plan.py     which examples each optimizer step takes, fixed by (seed, epoch)
    meter.py    metrics, their JSONL log and the curves' PNG
    resume.py   saving and resuming a run
    cli.py      train.py's command line

The public names stay `from minirm.train import DataSource, TrainConfig, train`.
May import: text, models and the shared modules at minirm's top; never minirm.scoring.
"""
