"""``valign``: the command line. Each subcommand parses a config and calls one function."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from valign_ray.config_loader import ConfigError

STAGES = {  # subcommand -> pipeline stages (None: all)
    "run": None,
    "train": ["survey", "weights", "constitution", "datasets", "model", "reference", "train"],
    "prepare": ["survey", "weights", "constitution", "datasets"],
}
HELP = {
    "run": "every stage: survey, weights, constitution, datasets, model, reference, train, "
    "eval, report",
    "train": "every stage up to and including training (no evaluation or report)",
    "prepare": "survey ingestion, weighting, the constitution and the training datasets",
    "sweep": "a Ray Tune sweep of the loss hyper-parameters (configs/sweep_*.yaml)",
    "report": "report.md and report.html for a run directory",
}


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config under configs/")
    p.add_argument("--output-dir", help="parent folder of the run directory (overrides output_dir)")
    p.add_argument("--name", help="run directory name (overrides name)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.set)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.name:
        overrides.append(f"name={args.name}")
    return overrides


def _run(args: argparse.Namespace) -> Any:
    from valign_ray.config import load_config
    from valign_ray.pipeline import run_pipeline

    return run_pipeline(load_config(args.config, _overrides(args)), stages=STAGES[args.command])


def _sweep(args: argparse.Namespace) -> Any:
    from valign_ray.sweeps import run_sweep

    return run_sweep(args.config, _overrides(args), num_samples=args.num_samples)


def _report(args: argparse.Namespace) -> Any:
    from valign_ray.eval.report import write_report

    paths = write_report(Path(args.run_dir))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return paths


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    parser = argparse.ArgumentParser(prog="valign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "prepare", "train", "sweep"):
        p = sub.add_parser(name, help=HELP[name])
        _config_args(p)
        p.set_defaults(fn=_sweep if name == "sweep" else _run)
        if name == "sweep":
            p.add_argument("--num-samples", type=int, help="trials (overrides sweep.num_samples)")
    p = sub.add_parser("report", help=HELP["report"])
    p.add_argument("run_dir", help="a run directory (output_dir/name)")
    p.set_defaults(fn=_report)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
