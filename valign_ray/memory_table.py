"""The ``valign plan-memory`` table: estimates for one model, or the 4 x A40 grid of Qwen2.5."""

from __future__ import annotations

from dataclasses import replace

from valign_ray.memory_plan import GIB, SHAPES, Estimate, ModelShape, Setup, estimate, largest_batch

COLUMNS = (
    "model",
    "setup",
    "params",
    "grads",
    "optim",
    "activ",
    "logits",
    "buffers",
    "GPU GiB",
    "host GiB",
    "fits",
    "max batch",
)


def grid_setups(base: Setup, lora_rank: int = 16) -> list[Setup]:
    """Full and LoRA, ZeRO-2 and ZeRO-3, without and with CPU offload (ZeRO-3: of the
    optimizer, and of the optimizer and parameters), other settings from ``base``."""
    out = []
    for rank in (0, lora_rank):
        for stage, offloads in ((2, ("none", "optimizer")), (3, ("none", "optimizer", "all"))):
            out += [replace(base, lora_rank=rank, zero_stage=stage, offload=o) for o in offloads]
    return out


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def table_rows(shape: ModelShape, setups: list[Setup]) -> list[tuple[Estimate, list[str]]]:
    """One estimate and its printed cells per setup."""
    rows = []
    for s in setups:
        e = estimate(shape, s)
        cells = [
            f"{shape.name} ({shape.total_params() / 1e9:.2f} B)",
            s.label(),
            *(_gib(x) for x in (e.params, e.grads, e.optimizer, e.activations, e.logits)),
            _gib(e.buffers),
            f"{_gib(e.gpu_total)} / {_gib(e.gpu_budget)}",
            _gib(e.host),
            "yes" if e.fits else "no",
            str(largest_batch(shape, s)),
        ]
        rows.append((e, cells))
    return rows


def format_table(rows: list[list[str]]) -> str:
    """A Markdown table of ``COLUMNS`` and ``rows``."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plan_report(shapes: list[ModelShape], setups: list[Setup]) -> str:
    """The table for every shape x setup, then the setups that fit, named per model."""
    all_rows, fitting = [], []
    for shape in shapes:
        for e, cells in table_rows(shape, setups):
            all_rows.append(cells)
            if e.fits:
                fitting.append(f"- {shape.name}: {e.setup.label()} ({_gib(e.gpu_total)} GiB)")
    s = setups[0]
    head = (
        f"Per-GPU memory on {s.gpus} x {s.gpu_mem_gib:g} GiB, {s.precision}, batch "
        f"{s.batch_size} x {s.seq_len} tokens x {s.grad_sequences} sequence(s) per row; "
        f"a plan fits in {_gib(estimate(shapes[0], s).gpu_budget)} GiB (90%). GiB per GPU; "
        "host GiB: offloaded state per node. Reference model: 0 (cached log-probs)."
    )
    fits = "\n".join(fitting) if fitting else "- none"
    return f"{head}\n\n{format_table(all_rows)}\n\nSettings that fit:\n{fits}\n"


def default_shapes() -> list[ModelShape]:
    return [SHAPES["qwen2.5-7b"], SHAPES["qwen2.5-14b"], SHAPES["qwen2.5-32b"]]
