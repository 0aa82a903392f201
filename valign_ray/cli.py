"""``valign``: the command line. Each subcommand parses a config and calls one function."""

from __future__ import annotations

import argparse
import os
import sys

from valign_ray.config_loader import ConfigError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config under configs/")
    p.add_argument("--output-dir", help="parent folder of the run directory (overrides output_dir)")
    p.add_argument("--name", help="run directory name (overrides name)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def load_from_args(args: argparse.Namespace):  # noqa: ANN201 (PipelineConfig, lazily imported)
    from valign_ray.config import load_config

    overrides = list(args.set)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.name:
        overrides.append(f"name={args.name}")
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    parser = argparse.ArgumentParser(prog="valign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    stages = {
        "run": None,
        "prepare": ["survey", "weights", "constitution", "datasets"],
        "train": None,
    }
    for name, help_ in (
        ("run", "every stage: survey, weights, datasets, model, reference, train, eval"),
        ("prepare", "survey ingestion, weighting and the training datasets"),
        ("train", "the whole pipeline up to and including training (alias of run)"),
    ):
        _config_args(sub.add_parser(name, help=help_))
    args = parser.parse_args(argv)
    try:
        cfg = load_from_args(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from valign_ray.pipeline import run_pipeline

    run_pipeline(cfg, stages=stages[args.command])
    return 0


if __name__ == "__main__":
    sys.exit(main())
