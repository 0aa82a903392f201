"""The Polis conversation under both weighting schemes: per-opinion-group A, side by side.

    python experiments/polis_schemes.py [configs/polis.yaml] [--output-dir DIR]
        [--runs SCHEME=RUN_DIR ...] [--set key=value ...]

Runs the config once per scheme of :data:`valign_ray.eval.scheme_comparison.SCHEMES`
(unweighted, and ``weighting.scheme: opinion_groups`` with the config's ``group_shares``, equal
by default) through the experiment runner (finished runs are skipped, the reference cache is
shared), then writes ``polis_schemes.md`` and ``polis_schemes.csv`` into the experiment folder
and prints the table. ``--runs`` tabulates run folders that already exist instead of running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from valign_ray.eval.scheme_comparison import (  # noqa: E402
    SCHEMES,
    scheme_group_table,
    scheme_markdown,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/polis.yaml")
    ap.add_argument("--output-dir", help="experiment folder (default: output_dir/<name>_schemes)")
    ap.add_argument("--runs", nargs="*", default=[], metavar="SCHEME=RUN_DIR")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if args.runs:
        run_dirs = dict(r.split("=", 1) for r in args.runs)
        exp = Path(args.output_dir or Path(next(iter(run_dirs.values()))).parent)
    else:
        from valign_ray.config import load_config
        from valign_ray.experiment import Variant, run_experiment

        base = load_config(args.config, args.set)
        exp = Path(args.output_dir or Path(base.output_dir) / f"{base.name}_schemes").resolve()
        variants = [Variant(name, overrides) for name, overrides in SCHEMES.items()]
        run_experiment(
            args.config,
            variants,
            [base.train.seed],
            output_dir=exp,
            name=f"{base.name}-schemes",
            base_overrides=args.set,
        )
        run_dirs = {name: exp / name for name in SCHEMES}
    evals = {
        s: json.loads((Path(d) / "summary.json").read_text())["eval"] for s, d in run_dirs.items()
    }
    table = scheme_group_table(evals)
    text = scheme_markdown(table)
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "polis_schemes.md").write_text(text + "\n")
    table.write_csv(exp / "polis_schemes.csv", float_precision=4)
    print(text, flush=True)


if __name__ == "__main__":
    main()
