"""Write data/examples/respondents.csv and answers.csv: good rows plus one of each bad kind.

The files hold bytes that are not UTF-8 on purpose, so they are written from Python bytes and
can be rebuilt exactly: ``python data/examples/make_bad_examples.py``. The comment after each
bad row names the quarantine reason that ingestion must give it (tests/test_ingest.py checks).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent

RESPONDENTS = [
    b"respondent_id,age_band,gender,region,group,base_weight",
    b"NZP-001,15-34,female,north,g1,0.8",  # row 1
    b"NZP-002,35-64,male,south,g2,1.2",
    b"NZP-003,65+,female,south,g1,1.0",
    b"NZP-004,15-34,another,north,g2,1.5",
    b"NZP-005,35-64,female,north,g1,0.9",
    b"NZP-006,65+,male,south,g2,1.1",
    b"NZP-007,15-34,male,north,,1.0",  # no group: allowed
    b"NZP-008,35-64,female,south,g1,2.0",
    b"NZP-009,15-34,female,north,g1,1.0",  # row 9: duplicate_respondent
    b"NZP-009,35-64,male,south,g2,1.0",  # row 10: duplicate_respondent
    b"NZP-010,15-34,,north,g1,1.0",  # row 11: missing_value (gender)
    b"NZP-011,15-34,Female,north,g1,1.0",  # row 12: unknown_category (gender)
    b"NZP-012,65+,male,south,g2,heavy",  # row 13: bad_type (base_weight)
    b"NZP-013,65+,male,south,g2,1.0,extra",  # row 14: malformed_row (7 fields)
    b"NZP-014,65+,male,s\xf6uth,g2,1.0",  # row 15: non_utf8 (Latin-1 o-umlaut in region)
]

ANSWERS = [
    b"respondent_id,item_id,kind,response_id,response_b_id,value,free_text",
    b"NZP-001,q1,rating,q1a,,1,",  # row 1
    b'NZP-001,q1,rating,q1b,,0,"Too slow, and too costly"',
    b"NZP-001,q1,pairwise,q1a,q1b,1,",
    b"NZP-001,s1,likert,,,4,",
    b"NZP-002,q1,rating,q1a,,1,",
    b'NZP-002,q2,pairwise,q2b,q2a,1,"Housing first.\nThen the rest."',  # one record, two lines
    b"NZP-002,s2,likert,,,3,",
    b"NZP-003,q1,pairwise,q1c,q1a,1,",
    b"NZP-003,q3,rating,q3a,,0,",
    b"NZP-003,s1,likert,,,5,",
    b"NZP-004,q2,rating,q2a,,1,",
    b"NZP-004,s2,likert,,,1,",
    b"NZP-005,q3,pairwise,q3a,q3b,1,",
    b"NZP-006,s1,likert,,,2,",
    b"NZP-007,q1,rating,q1c,,1,",
    b"NZP-008,s1,likert,,,3,",
    b"NZP-002,q1,rating,q1b,,1,caf\xe9 latte",  # row 17: non_utf8 (Latin-1 e-acute)
    b"NZP-003,q2,rating,q2a",  # row 18: malformed_row (4 fields)
    b"NZP-004,q1,rating,q1a,,,",  # row 19: missing_value (value)
    b"NZP-004,q1,rank,q1a,,1,",  # row 20: unknown_kind
    b"NZP-005,s1,likert,q1a,,3,",  # row 21: unexpected_value (response_id)
    b"NZP-005,s2,likert,,,agree,",  # row 22: bad_type (value)
    b"NZP-999,q1,rating,q1a,,1,",  # row 23: unknown_respondent (not in respondents.csv)
    b"NZP-011,q1,rating,q1a,,1,",  # row 24: unknown_respondent (quarantined there)
    b"NZP-006,q9,rating,q9a,,1,",  # row 25: unknown_item
    b"NZP-006,q1,likert,,,3,",  # row 26: kind_mismatch (a prompt answered on a Likert scale)
    b"NZP-007,q1,rating,q2a,,1,",  # row 27: unknown_response (q2a belongs to q2)
    b"NZP-007,q2,pairwise,q2a,q2a,1,",  # row 28: same_response
    b"NZP-007,s1,likert,,,6,",  # row 29: out_of_range (s1 has 5 options)
    b"NZP-008,q3,rating,q3b,,2,",  # row 30: out_of_range (rating is 0/1)
    b'NZP-001,q3,rating,q3a,,1,"   "',  # row 31: empty_text
    b"NZP-005,q1,rating,q1b,,1,",  # row 32: duplicate_answer
    b"NZP-005,q1,rating,q1b,,0,",  # row 33: duplicate_answer
    b'NZP-008,q1,rating,"q1a"x,,1,',  # row 34: malformed_row (broken quoting)
    b"NZP-008,q2,rating,q2b,,0,",  # row 35: good, read after the broken row
]


def main() -> None:
    """Write both files with a final newline."""
    (HERE / "respondents.csv").write_bytes(b"\n".join(RESPONDENTS) + b"\n")
    (HERE / "answers.csv").write_bytes(b"\n".join(ANSWERS) + b"\n")


if __name__ == "__main__":
    main()
