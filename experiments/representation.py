"""Headline experiment: does training with survey weights make the model represent the
synthetic POPULATION (and each subgroup) better than training without them?

    python experiments/representation.py configs/representation.yaml [--output-dir DIR]
        [--max-concurrent N] [--set key=value ...] [--verbose]

Trains every variant as one Ray Tune trial under one experiment folder (finished runs are
skipped, the reference cache is shared), scores the models against the population truth and
writes runs.csv, results.json, results.md, preferences.parquet and plots:
:mod:`valign_ray.eval.representation_experiment`.
"""

from __future__ import annotations

import argparse

from valign_ray.output import set_verbose


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--output-dir", help="experiment folder (default: output_dir/name)")
    ap.add_argument("--max-concurrent", type=int, default=1, help="runs training at once")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--verbose", action="store_true", help="Ray's logs, every training step")
    args = ap.parse_args()
    set_verbose(args.verbose)  # before Ray, transformers or DeepSpeed are imported

    from valign_ray.eval.representation_experiment import run_representation_experiment

    run_representation_experiment(
        args.config, args.set, args.output_dir, max_concurrent=args.max_concurrent
    )


if __name__ == "__main__":
    main()
