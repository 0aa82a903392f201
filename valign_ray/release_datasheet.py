"""The release's ``README.md``: a datasheet answered from the run (:mod:`valign_ray.release`).

Sections follow Gebru et al., "Datasheets for Datasets" (2021): motivation, composition,
collection process, preprocessing, uses, distribution, maintenance. What the run knows (counts,
weighting, margins and their sources, design effect, quarantine reasons, pseudonymisation,
licence) is stated; what only the data owner knows is a marked prompt (:data:`FILL`). The YAML
header is the Hugging Face dataset-card header: one ``datasets`` config per table.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from valign_ray.release import RunFacts

FILL = "**To be filled by the data owner:**"
NOT_DEMOGRAPHIC = ("respondent_id", "group", "base_weight", "weight")
_HF_LICENCES = {"CC0-1.0": "cc0-1.0", "CC-BY-4.0": "cc-by-4.0", "CC-BY-SA-4.0": "cc-by-sa-4.0"}
_TABLE_ABOUT = {
    "respondents": "one row per respondent: pseudonymous id, demographics, weight",
    "answers": "one row per answer: rating (0/1), pairwise (preferred A over B), likert (1..k)",
    "items": "the instrument: prompts (answered by rating/pairwise) and value statements",
    "candidates": "candidate responses to the prompts",
    "constitution": "statements with weighted consensus in every group, ranked",
}


def render_datasheet(f: RunFacts) -> str:
    """The whole datasheet as Markdown."""
    parts = [
        _header(f),
        _glance(f),
        _motivation(f),
        _composition(f),
        _collection(f),
        _preprocessing(f),
        _uses(f),
        _distribution(f),
        _maintenance(f),
    ]
    return "\n".join(parts)


def _header(f: RunFacts) -> str:
    hf = _HF_LICENCES.get(f.licence.spdx, "other")
    lines = ["---", f"license: {hf}", f"pretty_name: valign-ray survey release ({f.summary.name})"]
    lines.append("configs:")
    for name in f.tables:
        lines += [f"- config_name: {name}", f"  data_files: {name}.parquet"]
    return "\n".join([*lines, "---", ""])


def _n(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def _counts(frame: pl.DataFrame, col: str) -> str:
    if frame.is_empty():
        return "none"
    rows = frame.group_by(col).len().sort(col).iter_rows()
    return ", ".join(f"{k} {_n(int(n))}" for k, n in rows)


def _weighting_line(f: RunFacts) -> str:
    w = f.summary.results["weighting"]
    if w.method == "none":
        return "unweighted (weighting disabled: every weight is 1)"
    how = "raked to population margins" if w.method == "raking" else "opinion-group shares"
    deff = f", design effect {w.deff:.3f}" if w.deff is not None else ""
    return f"{how}; ESS {w.ess:.1f} of {w.n}{deff}"


def _quarantine_line(f: RunFacts) -> str:
    survey = f.summary.results["survey"]
    if survey.counts:
        return "; ".join(
            f"{role} {_n(c['quarantined'])} of {_n(c['rows_in'])}"
            + (f" (+{c['refused']} refusals dropped)" if c.get("refused") else "")
            for role, c in survey.counts.items()
        )
    rep = survey.report or {}
    votes, st = rep.get("votes", {}), rep.get("statements", {})
    return (
        f"Polis import: {_n(votes.get('kept', 0))} of {_n(votes.get('in', 0))} votes kept; "
        f"{_n(st.get('moderated_out', 0))} of {_n(st.get('in', 0))} statements moderated out"
    )


def _identifiers_line(f: RunFacts) -> str:
    dropped = ", ".join(f.dropped_identifiers) or "none found"
    text = "included (opted in)" if f.free_text else "excluded"
    return (
        f"salted-hash pseudonyms; direct-identifier columns dropped: {dropped}; "
        f"free-text answers: {text}, {f.free_text_answers} in the run"
    )


def _glance(f: RunFacts) -> str:
    t, s = f.tables, f.summary
    items = t["items"]
    const = t.get("constitution")
    commit = (s.manifest.get("git_commit") or "unknown")[:12]
    dirty = " (uncommitted changes)" if s.manifest.get("git_dirty") else ""
    rows = [
        ("source", f"`{f.config['survey']['source']}` survey, instrument `{f.instrument_name}`"),
        ("respondents", f"{_n(t['respondents'].height)}, {_weighting_line(f)}"),
        ("answers", f"{_n(t['answers'].height)} ({_counts(t['answers'], 'kind')})"),
        ("items", f"{_n(items.height)} ({_counts(items, 'kind')})"),
        ("candidates", _n(t["candidates"].height)),
        ("constitution", f"{const.height} principles" if const is not None else "none"),
        ("quarantined", _quarantine_line(f)),
        ("identifiers", _identifiers_line(f)),
        ("licence", f"{f.licence.spdx} ({f.licence.how})"),
        ("made by", f"`valign release` of run `{s.name}`, commit {commit}{dirty}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"# Datasheet: weighted survey dataset `{s.name}`\n\n"
        "A survey of values, with survey weights, released by valign-ray from one pipeline run. "
        "Answers below come from the run itself; prompts marked *to be filled by the data "
        "owner* need someone who knows the fieldwork.\n\n"
        f"| | |\n|---|---|\n{table}\n"
    )


def _motivation(f: RunFacts) -> str:
    return (
        "## Motivation\n\n"
        "- *Purpose.* To align language models with the values of a population, measured by a "
        "survey and weighted so that the sample stands for the population (valign-ray: "
        "survey -> weights -> KTO/DPO/SFT training -> evaluation per group).\n"
        f"- *Who created it, for whom, who funded it.* {FILL} the team, the commissioning "
        "body and the funding.\n"
    )


def _table_lines(f: RunFacts) -> list[str]:
    lines = ["| file | rows | columns | what |", "|---|---|---|---|"]
    for name, frame in f.tables.items():
        cols = ", ".join(f"`{c}`" for c in frame.columns)
        lines.append(f"| `{name}.parquet` | {_n(frame.height)} | {cols} | {_TABLE_ABOUT[name]} |")
    return lines


def _demographic_lines(f: RunFacts) -> list[str]:
    resp = f.tables["respondents"]
    demo = [c for c in resp.columns if c not in NOT_DEMOGRAPHIC]
    total = float(resp["weight"].sum())
    lines = []
    for col in [*demo, *(["group"] if "group" in resp.columns else [])]:
        agg = resp.group_by(col).agg(pl.len().alias("n"), pl.col("weight").sum().alias("w"))
        cells = ", ".join(
            f"{k if k is not None else '(none)'} {n} ({w / total:.1%} weighted)"
            for k, n, w in agg.sort(col).iter_rows()
        )
        lines.append(f"  - `{col}`: {cells}")
    if demo:
        cells = resp.group_by(demo).len()
        small = int((cells["len"] < 5).sum())
        lines.append(
            f"  - Smallest cell of all demographics combined: {cells['len'].min()} "
            f"respondent(s); {small} of {cells.height} cells hold fewer than 5 "
            "(re-identification risk grows as cells shrink)."
        )
    return lines


def _composition(f: RunFacts) -> str:
    src = f.config["survey"]["source"]
    sample = {
        "synthetic": "A sample drawn, with deliberate bias, from a simulated population; "
        "no real person's answers.",
        "polis": "Everyone who voted in the Polis conversation (self-selected, not a sample "
        "drawn from a frame).",
    }.get(src, f"{FILL} the population and how the sample relates to it.")
    resp = f.tables["respondents"]
    no_group = int(resp["group"].null_count()) if "group" in resp.columns else None
    lines = [
        "## Composition\n",
        "- *Instances.* People (respondents) and their answers to items; the tables:\n",
        *_table_lines(f),
        "",
        f"- *Sample or whole population.* {sample}",
        "- *Respondents by demographic variable* (count, and share of the total weight):",
        *_demographic_lines(f),
        "- *Missing information.* Each respondent answers some of the items, not all "
        f"({f.tables['answers'].height / max(resp.height, 1):.1f} answers each on average)"
        + (f"; {no_group} respondent(s) have no opinion group" if no_group else "")
        + ".",
        "- *Splits.* None: the run held respondents out with `data.split_seed` "
        f"{f.config['data']['split_seed']} (share {f.config['data']['holdout_respondents']}); "
        "the release has every kept respondent.",
        "- *Identifiers and sensitive data.* Respondent ids are pseudonyms (see "
        "Preprocessing); no names or contact details. Demographics are coarse categories. "
        + (
            "Synthetic: no real person."
            if src == "synthetic"
            else f"{FILL} whether any "
            "answer reveals sensitive attributes (health, politics, religion, ...)."
        ),
    ]
    return "\n".join(lines) + "\n"


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


def _collection(f: RunFacts) -> str:
    src = f.config["survey"]["source"]
    items = f.tables["items"]
    dims = sorted({d for d in items["dimension"].to_list() if d})
    synthetic = src == "synthetic"
    na = "Not applicable: generated, no people."
    return (
        "## Collection process\n\n"
        f"- *Instrument.* `{f.instrument_name}`: "
        f"{_counts(items, 'kind')}; value dimensions: {', '.join(dims) or 'not stated'}.\n"
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
                f"  - {role}: {_n(c['rows_in'])} rows in, {_n(c['kept'])} kept, "
                f"{_n(c['quarantined'])} "
                f"quarantined (reasons: {reasons})"
                + (f", {c['refused']} refusals dropped" if c.get("refused") else "")
            )
        return lines
    rep = survey.report or {}
    st, votes, people = rep.get("statements", {}), rep.get("votes", {}), rep.get("participants")

    def pairs(d: dict | None) -> str:
        return ", ".join(f"{k} {_n(v)}" for k, v in (d or {}).items() if not isinstance(v, list))

    return [
        f"  - statements (Polis comments, the items): {pairs(st)}",
        f"  - votes (the answers): in {_n(votes.get('in', 0))}, kept {_n(votes.get('kept', 0))}"
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
    lines = [f"- *Weighting.* {_weighting_line(f)}."]
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


def _preprocessing(f: RunFacts) -> str:
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
        "quarantine file (it quotes raw rows) and raw survey files are not in the release.",
        f"- *Constitution.* {const}",
        "- *Raw data.* Kept by the data owner, not released.",
    ]
    return "\n".join(lines) + "\n"


def _uses(f: RunFacts) -> str:
    return (
        "## Uses\n\n"
        "- *Intended.* Training and evaluating language models on the population's weighted "
        "preferences and agreement (valign-ray), and weighted estimates of the population's "
        "answers: use `weight` in every population estimate; its precision is that of the "
        "effective sample size, not the raw count.\n"
        "- *Not for.* Identifying or contacting respondents, linking them to other data, or "
        "judging individuals; population claims on variables the weights were not raked to.\n"
        f"- *Other uses and known limits.* {FILL} tasks it has been used for, and risks.\n"
    )


def _distribution(f: RunFacts) -> str:
    lic = f.licence
    attribution = f"\n- *Attribution.* {lic.attribution}" if lic.attribution else ""
    name = next(iter(f.tables))
    return (
        "## Distribution\n\n"
        f"- *Licence.* {lic.spdx}: {lic.how}.{attribution}\n"
        "- *Files.* The Parquet tables above, `constitution.yaml` (when built) and "
        "`release.json` (options, licence, sha256 of every file).\n"
        "- *Loading.*\n\n"
        "```python\nimport datasets\n"
        f'respondents = datasets.load_dataset("parquet", data_files="{name}.parquet")["train"]\n'
        "```\n"
    )


def _maintenance(f: RunFacts) -> str:
    s = f.summary
    fps = ", ".join(f"{k} `{v}`" for k, v in s.fingerprints.items())
    return (
        "## Maintenance\n\n"
        f"- *Maintainer, contact, errata, updates.* {FILL} who maintains it and how to "
        "report an error.\n"
        f"- *Provenance.* Run `{s.name}`, code commit `{s.manifest.get('git_commit')}` "
        f"(dirty: {s.manifest.get('git_dirty')}); stage fingerprints: {fps}. "
        "Rebuild with `valign release RUN_DIR --out DIR`.\n"
    )
