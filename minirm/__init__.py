"""minirm: compact, from-scratch PyTorch reward models that score exactly as transformers does.

The layout follows the data (each package's docstring says what it holds and may import):

    text/      rows, chat formats, tokenizers: text -> ids, for both halves
    scoring/   the scorer, the server, the reward functions, score.py's command line
    training/  the loop, its config, recipes, data, losses; train.py's command line
    models/    one file per family with its registry entry
    errors, console, devices, attention, config, hub, checkpoint, cpu, batching: shared by both
    kernels/   the Triton kernels (the repository's top-level kernels/ folder)

Imports run one way, top to bottom: scoring and training -> checkpoint, cpu, batching -> text ->
hub -> models, config, attention -> kernels -> errors, console, devices (tests/test_layout.py).
`minirm.train` and `minirm.reward_fn` are the public names of training's and the reward
functions' API.

The names below are imported when first used (PEP 562), not with the package: `score.py` and
`train.py` import `minirm.scoring.cli` and `minirm.training.cli`, which read the command line and
install the interrupt handling before torch is imported, so a Ctrl-C during start-up is one line,
not a traceback from inside `import torch`.
"""

from importlib import import_module

_EXPORTS = {"build_model": "checkpoint", "load_model": "checkpoint", "save_model": "checkpoint",
            "ModelConfig": "config", "MinirmError": "errors", "Scorer": "scoring.scorer"}

__all__ = ["MinirmError", "ModelConfig", "Scorer", "build_model", "load_model", "save_model"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
