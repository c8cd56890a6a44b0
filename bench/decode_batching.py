"""Run `disagg bench decode-batching` from a source checkout.

Example: .venv/bin/python bench/decode_batching.py --json
"""

import sys

from disagg_worker.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "decode-batching", *sys.argv[1:]]))
