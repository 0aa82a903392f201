"""`ray job submit --working-dir . -- python experiments/cai.py CONFIG [--set k=v ...]`:
Constitutional AI from the survey's constitution (same as `valign cai`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from valign_ray.job_python import ensure_project_python  # noqa: E402

ensure_project_python()  # a job's `python` may be the system one: re-run in the project's env

from valign_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["cai", *sys.argv[1:]]))
