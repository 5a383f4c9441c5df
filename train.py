#!/usr/bin/env python
"""Train a reward model with a model card's recipe. `python train.py --help` for usage."""

import sys

from minirm.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
