#!/usr/bin/env python
"""Score (prompt, response) pairs with a reward model. `python score.py --help` for usage."""

import sys

from minirm.cli_score import main

if __name__ == "__main__":
    sys.exit(main())
