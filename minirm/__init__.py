"""minirm: compact, from-scratch PyTorch reward models that score exactly as transformers does.

The names below are imported when first used (PEP 562), not with the package: `score.py` and
`train.py` import `minirm.cli_*`, which reads the command line and installs the interrupt
handling before torch is imported, so a Ctrl-C during start-up is one line, not a traceback
from inside `import torch`.
"""

from importlib import import_module

_EXPORTS = {"build_model": "checkpoint", "load_model": "checkpoint", "save_model": "checkpoint",
            "ModelConfig": "config", "MinirmError": "errors", "Scorer": "scoring"}

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
