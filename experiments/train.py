"""`ray job submit --working-dir . -- python experiments/train.py CONFIG [--set k=v ...]`:
preparation and training (same as `valign train`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from valign_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
