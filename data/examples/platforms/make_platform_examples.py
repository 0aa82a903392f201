"""Write the platform example exports (deterministic: rerunning rewrites them byte for byte).

Written from the published format descriptions named in docs/PLATFORMS.md, not from any
platform's sample file. Every file has good rows and a few bad ones, listed in BAD_ROWS
(tests/test_platforms.py checks each lands in the quarantine with its reason):

- ``qualtrics_responses.csv``: Qualtrics CSV export, choice text, three header rows; the
  respondent is the Prolific participant id (embedded data ``PROLIFIC_PID``);
- ``qualtrics_responses_numeric.csv``: the same responses exported as numeric recode values;
- ``prolific_demographics.csv``: the Prolific demographic export of those participants;
- ``limesurvey_responses.csv``: a LimeSurvey response export (question codes, answer codes)
  whose demographics were asked in the survey.

Run from the repository root: ``python data/examples/platforms/make_platform_examples.py``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
AGE, SEX = ["15-64", "65+"], ["Female", "Male"]
REGIONS = ["Auckland", "Wellington", "Rest of North Island", "South Island"]
MATRIX = {"q1": ["q1a", "q1b", "q1c"], "q2": ["q2a", "q2b"], "q3": ["q3a", "q3b"]}
LIKERT = {
    "s1": ["strongly disagree", "disagree", "neutral", "agree", "strongly agree"],
    "s2": ["disagree", "neutral", "agree"],
}
RATING = {1: "Desirable", 2: "Undesirable"}
N_GOOD = 40
# file -> (1-based data record, reason) of the bad rows it holds
BAD_ROWS = {
    "qualtrics_responses.csv": [
        (41, "no_panel_row"),  # the participant id is not in the Prolific export
        (42, "panel_status"),  # Prolific says RETURNED
        (43, "unmapped_value"),  # Prolific age is CONSENT_REVOKED
        (44, "unmapped_value"),  # region answered with a choice the instrument lacks
        (45, "duplicate_respondent"),  # the same participant twice
        (46, "duplicate_respondent"),
        (47, "missing_value"),  # no PROLIFIC_PID
        (48, "malformed_row"),  # a field short
    ],
    "limesurvey_responses.csv": [
        (41, "unmapped_value"),  # gender code 3: not a choice
        (42, "missing_value"),  # age band not answered
        (43, "malformed_row"),  # a field short
    ],
}
BAD_ANSWER = "Maybe"  # a matrix cell of response 1 holds text that is not a choice


def people(rng: random.Random) -> list[dict]:
    """The good respondents: demographics and answers (None: left blank)."""
    out = []
    for i in range(N_GOOD):
        old = i % 4 == 0
        person = {
            "pid": f"{rng.getrandbits(96):024x}",
            "age": rng.randint(65, 88) if old else rng.randint(18, 64),
            "sex": rng.choice(SEX),
            "region": rng.choice(REGIONS),
        }
        lean = rng.random()
        for cands in MATRIX.values():
            for c in cands:
                person[c] = None if rng.random() < 0.08 else (1 if rng.random() < lean else 2)
        for item, opts in LIKERT.items():
            person[item] = None if rng.random() < 0.05 else rng.randint(1, len(opts))
        out.append(person)
    return out


def qualtrics_rows(ps: list[dict], numeric: bool) -> list[list[str]]:
    tags = [
        "StartDate",
        "EndDate",
        "Status",
        "Progress",
        "Duration (in seconds)",
        "Finished",
        "RecordedDate",
        "ResponseId",
        "DistributionChannel",
        "UserLanguage",
        "regiongroup",
    ]
    text = [
        "Start Date",
        "End Date",
        "Response Type",
        "Progress",
        "Duration (in seconds)",
        "Finished",
        "Recorded Date",
        "Response ID",
        "Distribution Channel",
        "User Language",
        "region_group",
    ]
    imports = [
        "startDate",
        "endDate",
        "status",
        "progress",
        "duration",
        "finished",
        "recordedDate",
        "_recordId",
        "distributionChannel",
        "userLanguage",
        "QID1",
    ]
    for qn, (item, cands) in enumerate(MATRIX.items(), start=2):
        for k, _ in enumerate(cands, start=1):
            tags.append(f"{item}_{k}")
            text.append(f"{item} - response {k}")
            imports.append(f"QID{qn}_{k}")
    for qn, item in enumerate(LIKERT, start=5):
        tags.append(item)
        text.append(item)
        imports.append(f"QID{qn}")
    tags += ["PROLIFIC_PID", "STUDY_ID", "SESSION_ID"]
    text += ["PROLIFIC_PID", "STUDY_ID", "SESSION_ID"]
    imports += ["PROLIFIC_PID", "STUDY_ID", "SESSION_ID"]
    rows = [tags, text, [f'{{"ImportId":"{i}"}}' for i in imports]]
    for n, p in enumerate(ps, start=1):
        region = (
            str(REGIONS.index(p["region"]) + 1)
            if numeric and p["region"] in REGIONS
            else p["region"]
        )
        row = [
            "2026-11-20 09:00:00",
            "2026-11-20 09:07:00",
            "IP Address",
            "100",
            "420",
            "True",
            "2026-11-20 09:07:01",
            f"R_{n:015d}",
            "anonymous",
            "EN",
            region,
        ]
        for cands in MATRIX.values():
            for c in cands:
                v = p[c]
                row.append("" if v is None else str(v) if numeric else RATING[v])
        for item, opts in LIKERT.items():
            v = p[item]
            row.append("" if v is None else str(v) if numeric else opts[v - 1])
        row += [p["pid"], "6740a0c0ffee000000000001", f"s{n:05d}"]
        rows.append(row)
    rows[3][11] = BAD_ANSWER  # response 1, q1_1
    rows[-1] = rows[-1][:-1]  # the last response is a field short (malformed)
    return rows


def prolific_rows(ps: list[dict], extra: list[dict]) -> list[list[str]]:
    header = [
        "Submission id",
        "Participant id",
        "Status",
        "Started at",
        "Completed at",
        "Time taken",
        "Completion code",
        "Total approvals",
        "Age",
        "Sex",
        "Ethnicity simplified",
        "Country of birth",
        "Country of residence",
        "Nationality",
        "Language",
        "Student status",
        "Employment status",
    ]
    rows = [header]
    for n, p in enumerate(ps + extra, start=1):
        rows.append(
            [
                f"{n:024x}",
                p["pid"],
                p.get("status", "APPROVED"),
                "2026-11-20T09:00:00Z",
                "2026-11-20T09:07:00Z",
                "420",
                "C1A2B3C4",
                "57",
                str(p["age"]),
                p["sex"],
                "White",
                "New Zealand",
                "New Zealand",
                "New Zealand",
                "English",
                "DATA_EXPIRED",
                "Full-Time",
            ]
        )
    return rows


def bad_people(rng: random.Random, good: list[dict]) -> tuple[list[dict], list[dict]]:
    """(responses, panel rows) of the bad Qualtrics rows, in BAD_ROWS order."""
    base = dict(good[1])
    mk = lambda **kw: base | {"pid": f"{rng.getrandbits(96):024x}"} | kw  # noqa: E731
    not_in_panel, returned, revoked = mk(), mk(status="RETURNED"), mk(age="CONSENT_REVOKED")
    far_region, dup = mk(region="Chatham Islands"), mk()
    responses = [not_in_panel, returned, revoked, far_region, dup, dup, mk(pid=""), mk()]
    panel = [returned, revoked, far_region, dup, responses[-1], mk()]  # the last: no response
    return responses, panel


def limesurvey_rows(ps: list[dict]) -> list[list[str]]:
    header = [
        "id",
        "submitdate",
        "lastpage",
        "startlanguage",
        "seed",
        "ageband",
        "gender",
        "regiongroup",
    ]
    header += [f"{item}[{c}]" for item, cands in MATRIX.items() for c in cands] + list(LIKERT)
    rows = [header]
    for n, p in enumerate(ps, start=1):
        age = "" if p["age"] == "" else ("2" if int(p["age"]) >= 65 else "1")
        row = [
            str(n),
            "2026-11-20 09:07:00",
            "3",
            "en",
            str(1000 + n),
            age,
            str(p.get("gender_code", SEX.index(p["sex"]) + 1)),
            str(REGIONS.index(p["region"]) + 1),
        ]
        row += ["" if p[c] is None else str(p[c]) for cands in MATRIX.values() for c in cands]
        row += ["" if p[i] is None else str(p[i]) for i in LIKERT]
        rows.append(row)
    rows[-1] = rows[-1][:-1]
    return rows


def write(name: str, rows: list[list[str]], quoting: int = csv.QUOTE_MINIMAL) -> None:
    with open(HERE / name, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=quoting, lineterminator="\n").writerows(rows)


def main() -> None:
    rng = random.Random(0)
    good = people(rng)
    bad, panel_extra = bad_people(rng, good)
    write("qualtrics_responses.csv", qualtrics_rows(good + bad, numeric=False))
    write("qualtrics_responses_numeric.csv", qualtrics_rows(good + bad, numeric=True))
    write("prolific_demographics.csv", prolific_rows(good, panel_extra))
    ls_bad = [good[2] | {"gender_code": 3}, good[2] | {"age": ""}, dict(good[2])]
    write("limesurvey_responses.csv", limesurvey_rows(good + ls_bad), quoting=csv.QUOTE_ALL)


if __name__ == "__main__":
    main()
