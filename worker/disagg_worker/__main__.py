import sys

from disagg_worker.cli import main

sys.exit(main())
