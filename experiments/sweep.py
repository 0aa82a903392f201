"""Entry point for `ray job submit --working-dir . -- python experiments/sweep.py CONFIG`.

    python experiments/sweep.py configs/sweep_kto.yaml [--num-samples N] [--set k=v ...]

``--set`` takes ``sweep.x=v``, ``pipeline.x=v`` or a plain pipeline key (``train.epochs=1``).
"""

import argparse
import os
import sys

from valign_ray.config_loader import ConfigError


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="sweep YAML, e.g. configs/sweep_kto.yaml")
    parser.add_argument("--num-samples", type=int, help="trials (overrides sweep.num_samples)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from valign_ray.distributed.tune import run_sweep

    try:
        run_sweep(args.config, args.set, num_samples=args.num_samples)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
