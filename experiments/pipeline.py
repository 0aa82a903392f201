"""Entry point for `ray job submit --working-dir . -- python experiments/pipeline.py CONFIG`."""

import sys

from valign_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
