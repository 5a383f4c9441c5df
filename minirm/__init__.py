"""minirm: compact, from-scratch PyTorch reward models that score exactly as transformers does."""

from .checkpoint import build_model, load_model, save_model
from .config import ModelConfig
from .errors import MinirmError
from .scoring import Scorer

__all__ = ["MinirmError", "ModelConfig", "Scorer", "build_model", "load_model", "save_model"]
__version__ = "0.1.0"
