"""Run `disagg bench kv-transfer` from a source checkout.

Example: .venv/bin/python bench/kv_transfer.py --json
"""

import sys

from disagg_worker.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "kv-transfer", *sys.argv[1:]]))
