"""Run `disagg bench interference` from a source checkout.

Example: .venv/bin/python bench/interference.py --json
"""

import sys

from disagg_worker.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "interference", *sys.argv[1:]]))
