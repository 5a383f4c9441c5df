#!/usr/bin/env python
"""Score (prompt, response) pairs with a reward model. `python score.py --help` for usage."""

import sys

from minirm.scoring.cli import main

if __name__ == "__main__":
    sys.exit(main())
