"""The datasheet's collection and preprocessing sections (:mod:`valign_ray.release_datasheet`):
sampling, the instrument, ingestion's quarantine or the Polis import's counts, the weighting
with its margins file, sources and diagnostics, pseudonymisation and the constitution.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from valign_ray.release import RunFacts

FILL = "**To be filled by the data owner:**"


def fmt_n(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def count_by(frame: pl.DataFrame, col: str) -> str:
    if frame.is_empty():
        return "none"
    rows = frame.group_by(col).len().sort(col).iter_rows()
    return ", ".join(f"{k} {fmt_n(int(n))}" for k, n in rows)


def weighting_line(f: RunFacts) -> str:
    w = f.summary.results["weighting"]
    if w.method == "none":
        return "unweighted (weighting disabled: every weight is 1)"
    how = "raked to population margins" if w.method == "raking" else "opinion-group shares"
    deff = f", design effect {w.deff:.3f}" if w.deff is not None else ""
    return f"{how}; ESS {w.ess:.1f} of {w.n}{deff}"


def _sampling(f: RunFacts) -> str:
    src = f.config["survey"]["source"]
    if src == "synthetic":
        syn = f.config["survey"]["synthetic"]
        over = syn.get("oversample") or "65+ x3, South Island x2 (the generator's default)"
        rate = syn.get("response_rate") or "men 0.6 (the generator's default)"
        return (
            f"simulated: {syn['n_sample']} of a population of {syn['n_population']} "
            f"(seed {syn['seed']}), inclusion odds {over}, response rates {rate}."
        )
    if src == "polis":
        return "open participation in a Polis conversation; no quotas, no sampling frame."
    return (
        f"{FILL} the sampling frame, the mode, quotas and response rate "
        "(`valign design` plans quotas for N respondents)."
    )


def collection_section(f: RunFacts) -> str:
    src = f.config["survey"]["source"]
    items = f.tables["items"]
    dims = sorted({d for d in items["dimension"].to_list() if d})
    synthetic = src == "synthetic"
    na = "Not applicable: generated, no people."
    return (
        "## Collection process\n\n"
        f"- *Instrument.* `{f.instrument_name}`: "
        f"{count_by(items, 'kind')}; value dimensions: {', '.join(dims) or 'not stated'}.\n"
        f"- *Sampling and quotas.* {_sampling(f)}\n"
        f"- *Timeframe.* {na if synthetic else FILL + ' when the answers were given.'}\n"
        "- *Consent, notice and ethics review.* "
        f"{na if synthetic else FILL + ' what respondents agreed to, and who reviewed it.'}\n"
    )


def _quarantine_lines(f: RunFacts) -> list[str]:
    survey = f.summary.results["survey"]
    if survey.counts:
        lines = []
        for role, c in survey.counts.items():
            reasons = ", ".join(f"{r} {n}" for r, n in c["by_reason"].items()) or "none"
            lines.append(
                f"  - {role}: {fmt_n(c['rows_in'])} rows in, {fmt_n(c['kept'])} kept, "
                f"{fmt_n(c['quarantined'])} "
                f"quarantined (reasons: {reasons})"
                + (f", {c['refused']} refusals dropped" if c.get("refused") else "")
            )
        return lines
    rep = survey.report or {}
    st, votes, people = rep.get("statements", {}), rep.get("votes", {}), rep.get("participants")

    def pairs(d: dict | None) -> str:
        return ", ".join(f"{k} {fmt_n(v)}" for k, v in (d or {}).items() if not isinstance(v, list))

    return [
        f"  - statements (Polis comments, the items): {pairs(st)}",
        f"  - votes (the answers): in {fmt_n(votes.get('in', 0))}, "
        f"kept {fmt_n(votes.get('kept', 0))}"
        f"; excluded: {pairs(votes.get('excluded'))}",
        f"  - participants (the respondents): {pairs(people)}",
    ]


def _margin_lines(f: RunFacts) -> list[str]:
    diag = f.weight_diagnostics
    w = f.summary.results["weighting"]
    path = f.config["weighting"]["margins"]
    at_run = f.summary.manifest.get("input_files", {}).get("weighting.margins")
    if f.margins_hash_now is None:
        now = "the file is not there now"
    else:
        now = "unchanged since" if f.margins_hash_now == at_run else "**changed** since"
    lines = [f"  - Margins file `{path}` (sha256 {at_run} at the run; {now})."]
    if f.margins is not None and "source" in f.margins.columns:
        for var in f.config["weighting"]["variables"]:
            srcs = f.margins.filter(pl.col("variable") == var)["source"].unique(maintain_order=True)
            lines.append(f"  - Source of `{var}`: {_sources(srcs.drop_nulls().to_list())}")
    cap = f"trim cap {w.trim_max} x mean ({w.on_cap_binding})" if w.trim_max else "no trim cap"
    conv = "converged" if w.converged else "**not converged**"
    lines.append(f"  - {cap}; {conv}, max margin error {w.max_margin_error:.2g}.")
    lines += ["", "| variable | category | n | sample share | weighted share | target |"]
    lines.append("|---|---|---|---|---|---|")
    for m in diag.get("margins", []):
        lines.append(
            f"| {m['variable']} | {m['category']} | {m['n']} | {m['sample_share']:.4f} | "
            f"{m['weighted_share']:.4f} | {m['target']:.4f} |"
        )
    return [*lines, ""]


def _sources(sources: list[str]) -> str:
    """Sources of one variable's margins: shared words once, then what differs per category."""
    if len(sources) <= 1:
        return sources[0] if sources else "not stated"
    common = os.path.commonprefix(sources)
    common = common[: common.rfind("; ") + 1] if "; " in common else ""
    if len(common) < 20:
        return " / ".join(sources)
    return (
        common.rstrip("; ")
        + "; per category: "
        + " / ".join(s[len(common) :].strip() for s in sources)
    )


def _weighting_lines(f: RunFacts) -> list[str]:
    w = f.summary.results["weighting"]
    lines = [f"- *Weighting.* {weighting_line(f)}."]
    if w.method == "none":
        return lines
    lines.append(
        f"  - Weights (column `weight`, mean 1): min {w.weight_min:.3f}, max {w.weight_max:.3f}; "
        "Kish effective sample size (sum w)^2 / sum w^2; design effect n / ESS."
    )
    if w.method == "raking":
        variables = ", ".join(f"`{v}`" for v in f.config["weighting"]["variables"])
        lines.append(f"  - Raked (iterative proportional fitting) on {variables}.")
        lines += _margin_lines(f)
    else:
        groups = f.weight_diagnostics.get("groups", {})
        shares = ", ".join(f"{g} {v['weighted_share']:.1%}" for g, v in groups.items())
        lines.append(f"  - Weighted share per opinion group: {shares or 'not recorded'}.")
    lines += [f"  - Note: {n}" for n in w.notes or []]
    return lines


def preprocessing_section(f: RunFacts) -> str:
    salt = {
        True: "the public default salt: anyone holding the raw ids can re-derive them",
        False: "a salt other than the public default (keep it secret)",
        None: "a salt this release cannot identify",
    }[f.default_salt]
    c = f.constitution
    const = (
        f"statements agreed by at least {c['threshold']:.0%} of every `{c['group_col']}` group "
        f"({', '.join(map(str, c['groups']))}), at least {c['min_votes_per_group']} answers per "
        f"group, {'weighted' if c['weighted'] else 'unweighted'}; {len(c['principles'])} "
        "principles."
        if c is not None
        else "not built (disabled, or the survey has no statements)."
    )
    lines = [
        "## Preprocessing, cleaning, labelling\n",
        "- *Ingestion checks.* Every row checked against the instrument; bad rows set aside "
        "(quarantined) with a reason, never silently dropped:",
        *_quarantine_lines(f),
        *_weighting_lines(f),
        "- *Pseudonymisation.* `respondent_id` = the first 16 hex characters of "
        f"sha256(salt + raw id), made at ingestion with {salt}. The salt, the raw ids, the "
        "quarantine (it points into the raw files) and raw survey files are not in the release.",
        f"- *Constitution.* {const}",
        "- *Raw data.* Kept by the data owner, not released.",
    ]
    return "\n".join(lines) + "\n"
