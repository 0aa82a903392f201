"""The release's ``README.md``: a datasheet answered from the run (:mod:`valign_ray.release`).

Sections follow Gebru et al., "Datasheets for Datasets" (2021): motivation, composition,
collection process, preprocessing, uses, distribution, maintenance. What the run knows (counts,
weighting, margins and their sources, design effect, quarantine reasons, pseudonymisation,
licence) is stated; what only the data owner knows is a marked prompt (:data:`FILL`). The YAML
header is the Hugging Face dataset-card header: one ``datasets`` config per table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from valign_ray.release_collection import (
    FILL,
    collection_section,
    count_by,
    fmt_n,
    preprocessing_section,
    weighting_line,
)

if TYPE_CHECKING:
    from valign_ray.release import RunFacts

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
        collection_section(f),
        preprocessing_section(f),
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


def _quarantine_line(f: RunFacts) -> str:
    survey = f.summary.results["survey"]
    if survey.counts:
        return "; ".join(
            f"{role} {fmt_n(c['quarantined'])} of {fmt_n(c['rows_in'])}"
            + (f" (+{c['refused']} refusals dropped)" if c.get("refused") else "")
            for role, c in survey.counts.items()
        )
    rep = survey.report or {}
    votes, st = rep.get("votes", {}), rep.get("statements", {})
    return (
        f"Polis import: {fmt_n(votes.get('kept', 0))} of {fmt_n(votes.get('in', 0))} votes kept; "
        f"{fmt_n(st.get('moderated_out', 0))} of {fmt_n(st.get('in', 0))} statements moderated out"
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
        ("respondents", f"{fmt_n(t['respondents'].height)}, {weighting_line(f)}"),
        ("answers", f"{fmt_n(t['answers'].height)} ({count_by(t['answers'], 'kind')})"),
        ("items", f"{fmt_n(items.height)} ({count_by(items, 'kind')})"),
        ("candidates", fmt_n(t["candidates"].height)),
        ("constitution", f"{const.height} principles" if const is not None else "none"),
        ("quarantined", _quarantine_line(f)),
        ("identifiers", _identifiers_line(f)),
        ("licence", f"{f.licence.spdx} ({f.licence.how})"),
        ("made from", f"run `{s.name}` (pipeline code at commit {commit}{dirty})"),
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
        lines.append(
            f"| `{name}.parquet` | {fmt_n(frame.height)} | {cols} | {_TABLE_ABOUT[name]} |"
        )
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
            "Item texts are participants' statements that passed the conversation's moderation "
            "and were published with the export (they are the items; authors are not named). "
            if src == "polis"
            else ""
        )
        + (
            "Synthetic: no real person."
            if src == "synthetic"
            else f"{FILL} whether any "
            "answer reveals sensitive attributes (health, politics, religion, ...)."
        ),
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
