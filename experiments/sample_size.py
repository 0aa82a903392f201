"""How many respondents? Share errors, constitution agreement and soft-label DPO models
against the number of respondents, on the synthetic ground-truth population.

    python experiments/sample_size.py configs/sample_size.yaml [--smoke] [--output-dir DIR]
        [--set key=value ...]

Writes data.csv, models.csv, recommendation.csv/.md and plots/ into the study folder:
:mod:`valign_ray.eval.sample_size_study`. ``--smoke``: two n, one seed, one model run.
"""

from __future__ import annotations

import argparse

from valign_ray.cli import exit_on_user_error
from valign_ray.eval.sample_size_study import run_sample_size_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--smoke", action="store_true", help="two n, one seed, one model run")
    ap.add_argument("--output-dir", help="study folder (default: output_dir/name[-smoke])")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    exit_on_user_error(
        lambda: run_sample_size_study(args.config, args.set, args.output_dir, smoke=args.smoke)
    )


if __name__ == "__main__":
    main()
