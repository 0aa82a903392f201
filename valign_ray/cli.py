"""``valign``: the command line. Each subcommand parses its arguments and calls one function."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from valign_ray.config_loader import ConfigError
from valign_ray.errors import InputError
from valign_ray.output import set_verbose
from valign_ray.results import SummaryError

STAGES = {  # subcommand -> pipeline stages (None: all)
    "run": None,
    "train": ["survey", "weights", "constitution", "datasets", "model", "reference", "train"],
    "prepare": ["survey", "weights", "constitution", "datasets"],
    "ingest": ["survey"],
}
HELP = {
    "run": "every stage: survey, weights, constitution, datasets, model, reference, train, "
    "eval, report",
    "train": "every stage up to and including training (no evaluation or report)",
    "prepare": "survey ingestion, weighting, the constitution and the training datasets",
    "cai": "Constitutional AI: the preparation stages, SL-CAI, RL-CAI and the held-out "
    "evaluation of base, SL-CAI and RL-CAI models (configs/cai_*.yaml)",
    "ingest": "survey ingestion only: canonical tables, quarantine and counts (a platform "
    "export through its mapping: docs/PLATFORMS.md)",
    "export-instrument": "the instrument as a LimeSurvey TSV structure file or a Qualtrics "
    "Advanced Format TXT file, for the platform's survey import",
    "sweep": "a Ray Tune sweep of the loss hyper-parameters (configs/sweep_*.yaml)",
    "report": "report.md and report.html for a run directory",
    "design": "collection design: quotas for N respondents and the margin of error per subgroup "
    "(configs/design_*.yaml); --from RUN_DIR: the same from a collected sample's weights",
    "release": "the weighted survey as a dataset (Parquet tables and a datasheet README.md)",
    "plan-memory": "per-GPU and host memory of a training setup, and whether it fits "
    "(no model or setup given: the Qwen2.5 7B/14B/32B table for 4 x A40)",
}


def _config_args(p: argparse.ArgumentParser, *, optional: bool = False) -> None:
    p.add_argument("config", nargs="?" if optional else None, help="YAML config under configs/")
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

    if args.resume:
        from valign_ray.resume import check_same_survey, resume_config

        if args.config is not None or args.output_dir or args.name:
            raise ConfigError(f"{args.command} --resume RUN_DIR: the run's own config is used")
        cfg = resume_config(args.resume, args.set)
        check_same_survey(cfg)
        return run_pipeline(cfg, stages=STAGES[args.command])
    if args.config is None:
        raise ConfigError(
            f"{args.command}: the following arguments are required: config (or --resume RUN_DIR)"
        )
    return run_pipeline(load_config(args.config, _overrides(args)), stages=STAGES[args.command])


def _cai(args: argparse.Namespace) -> Any:
    from valign_ray.cai_pipeline import run_cai
    from valign_ray.config import load_config

    return run_cai(load_config(args.config, _overrides(args)))


def _sweep(args: argparse.Namespace) -> Any:
    from valign_ray.sweeps import resume_sweep, run_sweep

    if args.resume:
        if args.config is None and (_overrides(args) or args.num_samples):
            raise ConfigError("sweep --resume: --set / --num-samples need the CONFIG they change")
        overrides = _overrides(args)
        if args.num_samples:
            overrides.append(f"sweep.num_samples={args.num_samples}")
        return resume_sweep(args.resume, args.config, overrides)
    if args.config is None:
        raise ConfigError("sweep: give a sweep CONFIG, or --resume SWEEP_DIR")
    return run_sweep(args.config, _overrides(args), num_samples=args.num_samples)


def _report(args: argparse.Namespace) -> Any:
    from valign_ray.eval.report import write_report

    paths = write_report(Path(args.run_dir))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return paths


def _release(args: argparse.Namespace) -> Any:
    from valign_ray.release import release_run

    paths = release_run(
        args.run_dir, args.out, licence=args.licence, include_free_text=args.include_free_text
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


def _design(args: argparse.Namespace) -> Any:
    from valign_ray.config import load_design_config
    from valign_ray.survey.design_plan import (
        format_design,
        observed_design,
        plan_design,
        write_design,
    )

    cfg = load_design_config(args.config, args.set)
    if args.from_run is None and args.n is None:
        raise ConfigError("design: give --n N (respondents to plan for) or --from RUN_DIR")
    try:  # margins, minimums above N, a missing run: all the config's or the command's
        plan = observed_design(cfg, args.from_run) if args.from_run else plan_design(cfg, args.n)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    print(format_design(plan))
    for path in write_design(plan, args.out):
        print(f"wrote {path}")
    return plan


def _export_instrument(args: argparse.Namespace) -> Any:
    from valign_ray.survey.instrument import load_instrument
    from valign_ray.survey.platforms.questions import survey_questions
    from valign_ray.survey.platforms.structure import write_limesurvey, write_qualtrics

    inst = load_instrument(args.instrument)
    questions = survey_questions(inst, skip_demographics=tuple(args.skip_demographics))
    write = write_limesurvey if args.format == "limesurvey" else write_qualtrics
    write(questions, inst.name, args.out)
    n_rows = sum(len(q.rows) for q in questions)
    print(f"wrote {args.out}: {len(questions)} questions ({n_rows} matrix rows), {args.format}")
    return questions


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _plan_memory(args: argparse.Namespace) -> Any:
    from valign_ray.memory_plan import SHAPES, ModelShape, Setup
    from valign_ray.memory_table import default_shapes, grid_setups, plan_report

    base = Setup(
        gpus=args.gpus,
        gpu_mem_gib=args.gpu_mem_gib,
        zero_stage=args.zero_stage if args.zero_stage is not None else 3,
        lora_rank=args.lora_rank,
        offload=args.offload or "none",
        precision=args.precision,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        activation_checkpointing=not args.no_activation_checkpointing,
        grad_sequences=2 if args.method == "dpo" else 1,
    )
    if args.model:
        shapes = [ModelShape.from_path(args.model)]
    elif args.shape:
        shapes = [SHAPES[args.shape]]
    else:
        shapes = default_shapes()
    # Settings named on the command line give one row per model; none gives the whole grid.
    one = args.zero_stage is not None or args.offload is not None or args.lora_rank
    report = plan_report(shapes, [base] if one else grid_setups(base))
    print(report)
    return report


def _plan_memory_args(p: argparse.ArgumentParser) -> None:
    from valign_ray.memory_plan import SHAPES

    p.add_argument("--model", help="a model folder or its config.json")
    p.add_argument("--shape", choices=sorted(SHAPES), help="a built-in model shape")
    p.add_argument("--gpus", type=int, default=4, help="data-parallel GPUs (default 4)")
    p.add_argument("--gpu-mem-gib", type=float, default=48.0, help="GiB per GPU (A40: 48)")
    p.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], help="default: the grid")
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank; 0: full fine-tuning")
    p.add_argument("--offload", choices=["none", "optimizer", "all"], help="CPU offload")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--batch-size", type=int, default=8, help="rows per GPU per micro-step")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (max_length)")
    p.add_argument("--method", choices=["kto", "dpo", "sft"], default="kto")
    p.add_argument(
        "--no-activation-checkpointing", action="store_true", help="keep every activation"
    )
    p.set_defaults(fn=_plan_memory)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (and the help to read), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="valign", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show everything: Ray's logs, progress bars, every training step",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "prepare", "train", "ingest", "sweep"):
        p = sub.add_parser(name, help=HELP[name])
        _config_args(p, optional=True)
        p.set_defaults(fn=_sweep if name == "sweep" else _run)
        if name != "sweep":
            p.add_argument(
                "--resume",
                metavar="RUN_DIR",
                help="continue the run in RUN_DIR from its config.yaml (salt from VALIGN_SALT)",
            )
        if name == "sweep":
            p.add_argument("--num-samples", type=int, help="trials (overrides sweep.num_samples)")
            p.add_argument(
                "--resume",
                metavar="SWEEP_DIR",
                help="resume the sweep in SWEEP_DIR (<run_dir>/sweep): finished trials are kept",
            )
    _config_args(p := sub.add_parser("cai", help=HELP["cai"]))
    p.set_defaults(fn=_cai)
    p = sub.add_parser("report", help=HELP["report"])
    p.add_argument("run_dir", help="a run directory (output_dir/name)")
    p.set_defaults(fn=_report)
    p = sub.add_parser("release", help=HELP["release"])
    p.add_argument("run_dir", help="a run directory with its survey and weights")
    p.add_argument("--out", required=True, help="folder for the release")
    p.add_argument("--licence", help="the data's licence (required for survey.source files)")
    p.add_argument(
        "--include-free-text", action="store_true", help="keep free-text answers (default: out)"
    )
    p.set_defaults(fn=_release)
    p = sub.add_parser("design", help=HELP["design"])
    p.add_argument("config", help="design YAML (configs/design_nz.yaml)")
    p.add_argument("--n", type=_positive_int, help="respondents to plan for")
    p.add_argument("--out", default="runs/design", help="folder for quotas.csv, precision.csv")
    p.add_argument("--from", dest="from_run", metavar="RUN_DIR", help="a collected run's weights")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.set_defaults(fn=_design)
    _plan_memory_args(sub.add_parser("plan-memory", help=HELP["plan-memory"]))
    p = sub.add_parser("export-instrument", help=HELP["export-instrument"])
    p.add_argument("instrument", help="instrument YAML (data/examples/platforms/instrument.yaml)")
    p.add_argument("--format", required=True, choices=["limesurvey", "qualtrics"])
    p.add_argument("--out", required=True, help="file to write (.txt for both platforms)")
    p.add_argument(
        "--skip-demographics",
        nargs="*",
        default=[],
        metavar="VAR",
        help="variables a panel provider supplies: not asked in the survey",
    )
    p.set_defaults(fn=_export_instrument)
    for p in sub.choices.values():  # also after the subcommand: valign run cfg.yaml --debug
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="")
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="")
    return parser


def error_line(exc: BaseException) -> str | None:
    """The one line ``valign`` prints for an error in what the user gave it (a config, a file,
    a folder), or None for an error that is ours (a bug: the traceback is the report)."""
    if isinstance(exc, ConfigError):
        return f"config error: {exc}"
    if isinstance(exc, InputError | SummaryError):
        return f"error: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"error: {exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, ValueError):  # our checks raise ValueError for bad values they are given
        return f"error: {exc} (valign --debug ... shows where)"
    return None


def exit_on_user_error(run: Callable[[], object]) -> None:
    """Call ``run()`` for an experiment script: an error in what the user gave it is one line
    on stderr and exit 2, as ``valign`` does; any other error keeps its traceback."""
    try:
        run()
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        print(" ".join(line.split()), file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    args = _parser().parse_args(argv)
    set_verbose(args.verbose)  # before Ray, transformers or DeepSpeed are imported
    try:
        args.fn(args)
    except Exception as exc:
        line = error_line(exc)
        if line is None or args.debug:
            raise
        print(" ".join(line.split()), file=sys.stderr)  # one line, whatever the message held
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
