"""What ``bench_train_vs_trl.py`` prints for one loss: samples/s and CPU time per step of ours
against TRL, padding, the reference cache's break-even, and ours without bucketing across steps."""

from __future__ import annotations


def report(loss: str, ours: dict, trl: dict, batch: int) -> None:
    """Print the comparison lines of one loss."""
    rate_o, rate_t = (batch / r["step_s"] for r in (ours, trl))
    cpu_o, cpu_t = ours["cpu_step_s"], trl["cpu_step_s"]
    print(
        f"{loss.upper()}: ours {rate_o:.2f} samples/s ({ours['tok_s']:.0f} tok/s), TRL "
        f"{rate_t:.2f} samples/s ({trl['tok_s']:.0f} tok/s) -> ours is {rate_o / rate_t:.1f}x",
        flush=True,
    )
    print(
        f"  per step (median): wall ours {ours['step_s']:.2f} s, TRL {trl['step_s']:.2f} s (means "
        f"{ours['mean_step_s']:.2f} / {trl['mean_step_s']:.2f}); CPU ours {cpu_o:.2f} s, TRL "
        f"{cpu_t:.2f} s -> {cpu_t / cpu_o:.1f}x; 1-min load average {ours['load']:.1f} / "
        f"{trl['load']:.1f}; torch threads {ours['threads']} / {trl['threads']}"
    )
    print(
        f"  padding fraction: ours {ours['padding']:.1%}, TRL {trl['padding']:.1%} "
        f"(TRL trained on {trl['rows']} rows, ours {ours['rows']})"
    )
    # Break-even: ref + E * epoch_ours = E * epoch_trl  ->  E = ref / (epoch_trl - epoch_ours).
    n = ours["rows"]
    lines = []
    for what, ref, e_o, e_t in (
        ("wall", ours["ref_seconds"], n / rate_o, n / rate_t),
        ("CPU", ours["ref_cpu_seconds"], n / batch * cpu_o, n / batch * cpu_t),
    ):
        even = f"after {ref / (e_t - e_o):.2f} epochs" if e_t > e_o else "never (ours is slower)"
        lines.append(
            f"{what}: {ref:.1f} s ({ref / n * 1000:.0f} ms/row), epoch ours {e_o:.1f} s "
            f"vs TRL {e_t:.1f} s, break-even {even}"
        )
    print(f"  reference cache (one-time; later runs and Tune trials reuse it; padding "
          f"{ours['ref_padding']:.0%} in its length-sorted batches): "
          + "; ".join(lines))  # fmt: skip


def report_unbucketed(plain: dict, trl: dict, batch: int) -> None:
    """Ours again with ``train.bucket_steps=0`` (padding within a step only): the gain from
    bucketing across steps, apart from the rest."""
    rate_p, rate_t = (batch / r["step_s"] for r in (plain, trl))
    print(
        f"  without bucketing across steps: ours {rate_p:.2f} samples/s -> {rate_p / rate_t:.1f}x "
        f"TRL (CPU {trl['cpu_step_s'] / plain['cpu_step_s']:.1f}x); padding {plain['padding']:.1%}",
        flush=True,
    )
