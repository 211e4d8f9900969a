"""tools/claims.py: every claim of the instructor guide, and every marked sentence of a notebook,
is backed by an assert. First on small made-up repositories (each check must be able to fail),
then on this repository."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("claims", ROOT / "tools" / "claims.py")
claims = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(claims)


def cell(kind, source):
    c = {"cell_type": kind, "metadata": {}, "source": source}
    if kind == "code":
        c.update(outputs=[], execution_count=None)
    return c


def notebook(path, *cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": list(cells), "metadata": {}, "nbformat": 4}))


GOOD_CELL = "gain = 0.3\nassert gain > 0.2  # claim: big-gain\n"
GOOD_TEXT = "At lr 1.0 BN is ahead by more than 20 points. <!-- claim: big-gain -->\n"


def repo(tmp_path, guide, md=GOOD_TEXT, code=GOOD_CELL, name="04_comparison"):
    notebook(tmp_path / "notebooks" / f"{name}.ipynb", cell("markdown", md), cell("code", code))
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "instructor-guide.md").write_text(guide)
    return tmp_path


def problems(root, pending=None):
    return claims.check(root, pending={} if pending is None else pending)


def test_a_backed_claim_passes(tmp_path):
    guide = "## Results\n\nAt lr 1.0 BN is ahead by more than 20 points.<!-- claim: 04/big-gain -->"
    assert problems(repo(tmp_path, guide)) == []


def test_a_guide_claim_without_a_notebook_claim_fails(tmp_path):
    guide = "## Results\n\nBN is ahead. <!-- claim: 04/no-such-claim -->\n"
    (p,) = problems(repo(tmp_path, guide))
    assert "04/no-such-claim names no asserted claim of notebook 04" in p


def test_a_guide_claim_pointing_at_the_wrong_notebook_fails(tmp_path):
    guide = "## Results\n\nBN is ahead by 20 points. <!-- claim: 07/big-gain -->\n"
    (p,) = problems(repo(tmp_path, guide))
    assert "07/big-gain" in p


def test_a_number_the_assert_does_not_mention_fails(tmp_path):
    guide = "## Results\n\nBN recovers 45% of the loss. <!-- claim: 04/big-gain -->\n"
    (p,) = problems(repo(tmp_path, guide))
    assert "45 in the claim 04/big-gain" in p


def test_points_and_percent_match_fractions_and_labels_are_not_results(tmp_path):
    guide = (
        "## Results\n\nIn `04_comparison` (exercise 3, notebook 04), BN gains more than 20% "
        "(0.2). <!-- claim: 04/big-gain -->\n"
    )
    assert problems(repo(tmp_path, guide)) == []


def test_a_sentence_marker_without_an_assert_fails(tmp_path):
    md = "BN is ahead. <!-- claim: big-gain -->\n\nAnd slightly faster. <!-- claim: faster -->"
    (p,) = problems(repo(tmp_path, "", md=md))
    assert "marked 'faster' has no assert" in p


def test_a_tag_that_is_not_on_an_assert_fails(tmp_path):
    code = GOOD_CELL + "print(gain)  # claim: big-gain\n"
    (p,) = problems(repo(tmp_path, "", code=code))
    assert "is not on an assert statement" in p


def test_a_tag_on_any_line_of_a_multiline_assert_counts(tmp_path):
    code = "gain = 0.3\nassert (\n    gain > 0.2  # claim: big-gain, other\n)\n"
    md = GOOD_TEXT + "\nOther. <!-- claim: other -->\n"
    assert problems(repo(tmp_path, "", md=md, code=code)) == []


def test_a_student_notebook_may_rely_on_its_solutions_notebook(tmp_path):
    repo(tmp_path, "", name="05_exercises_solutions")
    notebook(tmp_path / "notebooks" / "05_exercises.ipynb", cell("markdown", GOOD_TEXT))
    assert problems(tmp_path) == []
    notebook(tmp_path / "notebooks" / "06_other.ipynb", cell("markdown", GOOD_TEXT))
    (p,) = problems(tmp_path)
    assert "06_other.ipynb" in p


def test_a_result_outside_any_claim_fails_but_settings_and_logistics_do_not(tmp_path):
    guide = (
        "## Before class\n\nThe notebook runs in 1.5 s.\n\n"
        "## Results\n\nAt lr 0.01 and momentum 0.9 nothing is said.\n\n"
        "BN reaches 0.95 accuracy.\n"
    )
    (p,) = problems(repo(tmp_path, guide))
    assert "the number 0.95 is in no claim" in p


def test_malformed_markers_fail(tmp_path):
    guide = "## Results\n\nBN is ahead. <!-- claim: big-gain -->\n"
    (p,) = problems(repo(tmp_path, guide))
    assert "malformed marker" in p and "NN/name" in p
    (p,) = problems(repo(tmp_path, "", code=GOOD_CELL + "assert True  # claim: Bad Name\n"))
    assert "malformed tag" in p


def test_pending_entries_must_be_used_and_unresolved(tmp_path):
    guide = "## Results\n\nBN moves 45% <!-- claim: 03/later -->\n"
    root = repo(tmp_path, guide)
    assert problems(root, pending={"03/later": "03, cell 5: `moved > 0.45`"}) == []
    (p,) = problems(root, pending={"03/later": "`moved > 0.45`", "03/gone": "y"})
    assert "PENDING lists 03/gone" in p
    guide = "## Results\n\nBN is ahead by 20 points. <!-- claim: 04/big-gain -->\n"
    (p,) = problems(repo(tmp_path, guide), pending={"04/big-gain": "`gain > 0.2`"})
    assert "backed now; remove it from PENDING" in p


def test_claim_text_runs_from_the_previous_marker(tmp_path):
    guide = (
        "## Results\n\n| a | 45% <!-- claim: 04/big-gain --> | 20 points "
        "<!-- claim: 04/big-gain --> |\n"
    )
    (p,) = problems(repo(tmp_path, guide))
    assert "45 in the claim" in p


def test_the_repository_claims_are_backed():
    """The instructor guide and the notebooks of this repository (`python tools/claims.py`)."""
    found = claims.check(ROOT)
    assert found == [], "\n".join(found)


def test_a_tag_on_its_own_line_belongs_to_the_assert_below_it(tmp_path):
    code = "gain = 0.3\n# claim: big-gain\n\nassert gain > 0.2\n"
    assert problems(repo(tmp_path, "", code=code)) == []
    code = "gain = 0.3\n# claim: big-gain\nprint(gain)\nassert gain > 0.2\n"
    found = problems(repo(tmp_path, "", code=code))
    assert "is not on an assert statement" in found[0] and "has no assert" in found[1]


def test_a_tag_may_end_an_existing_comment(tmp_path):
    code = "gain = 0.3\nassert gain > 0.2  # large; claim: big-gain\n"
    assert problems(repo(tmp_path, "", code=code)) == []


def test_a_pending_claim_is_checked_against_the_assert_its_entry_quotes(tmp_path):
    guide = "## Results\n\nRecalibration cuts the loss by 45%. <!-- claim: 03/stale -->\n"
    (p,) = problems(repo(tmp_path, guide), pending={"03/stale": "`sum(changes) / 5 > 0.2`"})
    assert "45 in the claim 03/stale" in p
