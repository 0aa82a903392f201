"""How many respondents? Share errors, constitution agreement and soft-label DPO models
against the number of respondents, on the synthetic ground-truth population.

    python experiments/sample_size.py configs/sample_size.yaml [--smoke] [--output-dir DIR]
        [--set key=value ...]

Writes data.csv, models.csv, recommendation.csv/.md and plots/ into the study folder:
:mod:`valign_ray.eval.sample_size_study`. ``--smoke``: two n, one seed, one model run.
"""

from __future__ import annotations

import argparse
import sys

from valign_ray.cli import error_line
from valign_ray.eval.sample_size_study import run_sample_size_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--smoke", action="store_true", help="two n, one seed, one model run")
    ap.add_argument("--output-dir", help="study folder (default: output_dir/name[-smoke])")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    try:
        run_sample_size_study(args.config, args.set, args.output_dir, smoke=args.smoke)
    except Exception as exc:  # a bad config or file: one line and exit 2, as valign does
        line = error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
