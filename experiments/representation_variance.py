"""Headline experiment with its variance: train seeds x sample draws of one population.

    python experiments/representation_variance.py configs/representation_variance.yaml
        [--variants dpo_unweighted,dpo_hard,...] [--sample-seeds 0,1,2] [--train-seeds 0,1,2]
        [--form implicit|logprob] [--max-concurrent N] [--smoke] [--output-dir DIR]
        [--set key=value ...] [--verbose]

Trains every (variant, sample draw, train seed) as one Ray Tune trial (finished runs skipped),
scores each model on seen and unseen items against the population truth and writes
variance_runs.csv, variance_summary.csv, variance.json, results.md and four plots:
:mod:`valign_ray.eval.representation_variance`. ``--smoke``: base and dpo_hard, sample draws
0 and 1, train seed 0, 10 optimizer steps (2 trained runs), in ``<name>-smoke``.
"""

from __future__ import annotations

import argparse
import sys

from valign_ray.output import set_verbose

# the default trained variants (valign_ray.eval.representation_variance.TRAINED, checked by
# the test), here so that --help and set_verbose come before any heavy import
TRAINED = ("dpo_unweighted", "dpo_hard", "dpo_soft", "dpo_balanced", "dpo_oracle")
TRAINED_TEXT = ",".join(TRAINED)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--variants", help=f"trained variants (default: {','.join(TRAINED)})")
    ap.add_argument("--sample-seeds", type=_ints, default=(0, 1, 2), help="sample draws")
    ap.add_argument("--train-seeds", type=_ints, default=(0, 1, 2), help="train.seed values")
    ap.add_argument("--form", choices=("implicit", "logprob"), default="implicit")
    ap.add_argument("--max-concurrent", type=int, default=2, help="runs training at once")
    ap.add_argument("--smoke", action="store_true", help="base + dpo_hard, 2 draws x 1 seed, short")
    ap.add_argument("--output-dir", help="experiment folder (default: output_dir/name)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--verbose", action="store_true", help="Ray's logs, every training step")
    args = ap.parse_args()
    set_verbose(args.verbose)  # before Ray, transformers or DeepSpeed are imported

    from valign_ray.config import load_config
    from valign_ray.eval.representation_variance import (
        SMOKE_SETS,
        SMOKE_TRAINED,
        VarianceSpec,
        run_variance_experiment,
    )

    spec = VarianceSpec(
        trained=SMOKE_TRAINED if args.smoke else tuple((args.variants or TRAINED_TEXT).split(",")),
        sample_seeds=(0, 1) if args.smoke else args.sample_seeds,
        train_seeds=(0,) if args.smoke else args.train_seeds,
        form=args.form,
        max_concurrent=args.max_concurrent,
    )
    sets = [*SMOKE_SETS, *args.set] if args.smoke else args.set
    try:  # a config, variant or seed list that cannot run: one line, exit code 2
        spec.check(load_config(args.config, sets))
    except ValueError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        sys.exit(2)
    suffix = "-smoke" if args.smoke else ""
    run_variance_experiment(args.config, sets, args.output_dir, spec=spec, name_suffix=suffix)


if __name__ == "__main__":
    main()
