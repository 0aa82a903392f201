"""CAI generalisation: does a survey-trained model carry the population's preferences to
prompts the survey never asked (S2, the items ``data.holdout_items`` keeps out)?

    python experiments/cai_generalisation.py configs/cai_generalisation.yaml [--smoke]
        [--seeds 0 1 2] [--output-dir DIR] [--set key=value ...] [--verbose]

Per seed a ``valign cai`` run (base, weighted DPO, RL-CAI labelled by its implicit reward) and
an oracle DPO run, through the experiment runner; results.md, results.json, preferences.parquet
and generalisation.png in the experiment folder: :mod:`valign_ray.eval.cai_generalisation`.
"""

from __future__ import annotations

import argparse

from valign_ray.output import set_verbose


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--smoke", action="store_true", help="one seed, small sample, 2 steps")
    ap.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (smoke: 0)")
    ap.add_argument("--output-dir", help="experiment folder (default: output_dir/name[-smoke])")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--verbose", action="store_true", help="Ray's logs, every training step")
    args = ap.parse_args()
    set_verbose(args.verbose)  # before Ray, transformers or DeepSpeed are imported

    from valign_ray.cli import exit_on_user_error
    from valign_ray.eval.cai_generalisation import run_cai_generalisation

    exit_on_user_error(
        lambda: run_cai_generalisation(
            args.config, args.set, args.output_dir, seeds=args.seeds, smoke=args.smoke
        )
    )


if __name__ == "__main__":
    main()
