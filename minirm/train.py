"""The training API's public names, as scripts import them: `from minirm.train import
DataSource, TrainConfig, train`. The code lives in minirm/training/."""

from .training.config import TrainConfig
from .training.data import DataSource
from .training.loop import train

__all__ = ["DataSource", "TrainConfig", "train"]
