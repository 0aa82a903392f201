"""The run report as a document: sections of text, tables and plots, rendered to Markdown, to
a self-contained HTML file, and logged to W&B. :mod:`valign_ray.eval.report` builds the
sections from a run directory; this module only presents them.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLOT_DIR = "report_plots"


@dataclass
class Table:
    """Aggregates as rows; ``key`` names it in W&B."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Plot:
    """A rendered figure: PNG bytes, a caption, and ``key`` (file stem and W&B name)."""

    key: str
    caption: str
    png: bytes


@dataclass
class Section:
    """A numbered heading and its blocks in order: text lines, tables, plots."""

    title: str
    blocks: list[str | Table | Plot] = field(default_factory=list)


def _fmt(v: Any) -> str:
    """Cells for people: 4 significant digits, thousands separators, tiny values in e-notation
    (W&B gets the raw numbers)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def render_markdown(sections: list[Section], title: str) -> str:
    """Markdown, plots linked from ``report_plots/`` beside it."""
    out = [f"# {title}", ""]
    for i, sec in enumerate(sections, start=1):
        out += [f"## {i}. {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Table):
                out += [f"### {b.title}", "", "| " + " | ".join(b.columns) + " |"]
                out.append("|" + "---|" * len(b.columns))
                out += [
                    "| " + " | ".join(_fmt(v).replace("|", "\\|") for v in r) + " |" for r in b.rows
                ]
            elif isinstance(b, Plot):
                out.append(f"![{b.caption}]({PLOT_DIR}/{b.key}.png)")
            else:
                out.append(b)
            out.append("")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:.25em .6em;text-align:left}th{background:#f2f2f2}td.num{text-align:right;
font-variant-numeric:tabular-nums}img{max-width:100%}figure{margin:1em 0}
figcaption{color:#555;font-size:.9em}"""


def render_html(sections: list[Section], title: str) -> str:
    """One HTML file with the plots inline as base64 PNG: it opens anywhere, offline."""
    e = html.escape
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>",
    ]
    for i, sec in enumerate(sections, start=1):
        out.append(f"<h2 id='section-{i}'>{i}. {e(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, Table):
                out.append(f"<h3>{e(b.title)}</h3><table><tr>")
                out.append("".join(f"<th>{e(c)}</th>" for c in b.columns) + "</tr>")
                for r in b.rows:
                    cells = (
                        f"<td class='num'>{e(_fmt(v))}</td>"
                        if isinstance(v, int | float)
                        else f"<td>{e(_fmt(v))}</td>"
                        for v in r
                    )
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</table>")
            elif isinstance(b, Plot):
                data = base64.b64encode(b.png).decode("ascii")
                out.append(
                    f"<figure><img alt='{e(b.caption)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{e(b.caption)}</figcaption></figure>"
                )
            else:
                out.append(f"<p>{e(b)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- W&B


def log_to_wandb(sections: list[Section], cfg: Any, wandb_dir: Path, name: str) -> Path:
    """Log every table and plot of the report to a W&B run (job type ``report``, grouped by the
    run name, or by ``WANDB_RUN_GROUP`` when set: an experiment's name, which its training runs
    carry too); the tables hold aggregates only. Returns its folder."""
    import io
    import os

    import wandb
    from PIL import Image

    from valign_ray.config import public_config_dict

    wandb_dir.mkdir(parents=True, exist_ok=True)
    config = public_config_dict(cfg)
    run = wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        mode=cfg.wandb.mode,
        dir=str(wandb_dir),
        name=f"{name}-report",
        # An experiment (valign_ray.experiment) groups all its runs under its own name.
        group=os.environ.get("WANDB_RUN_GROUP") or name,
        job_type="report",
        config=config,
        reinit="create_new",
        settings=wandb.Settings(console="off", silent=True),
    )
    try:
        payload: dict[str, Any] = {}
        for sec in sections:
            for b in sec.blocks:
                if isinstance(b, Table):
                    payload[f"report/{b.key}"] = wandb.Table(
                        columns=b.columns, data=b.rows, allow_mixed_types=True
                    )
                elif isinstance(b, Plot):
                    image = Image.open(io.BytesIO(b.png))
                    payload[f"report/plots/{b.key}"] = wandb.Image(image, caption=b.caption)
        run.log(payload)
        return Path(run.dir).parent
    finally:
        run.finish()


def missing(what: str) -> str:
    """The one line a report section shows for an input the run directory lacks."""
    return f"Not available: {what} not found in the run directory."
