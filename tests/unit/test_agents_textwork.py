"""The multi-agent example's algorithms (examples/agents/steps/textwork.py): pure functions the planner,
workers and reviewer run in their containers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from examples.agents import run as agents

sys.path.insert(0, str(Path(agents.__file__).parent / "steps"))
import textwork

DOC = """Intro line one. Intro line two!

# Alpha
The cat sat. The cat ran far away from the dog.
Dogs bark.

# Beta
Birds sing at dawn. The cat watched the birds? Dawn came.
"""


def test_sections_at_headings_with_an_introduction() -> None:
    sections = textwork.split_sections(DOC)
    assert [(s["index"], s["title"]) for s in sections] == [(0, "Introduction"), (1, "Alpha"), (2, "Beta")]
    assert sum(s["words"] for s in sections) == len(textwork.body_words(DOC)) == 30
    assert "Dogs bark." in sections[1]["text"] and "#" not in sections[1]["text"]


def test_without_headings_paragraphs_and_merging_the_smallest() -> None:
    text = "One two three.\n\nFour.\n\nFive six.\n\nSeven eight nine ten."
    assert [s["title"] for s in textwork.split_sections(text)] == ["Part 1", "Part 2", "Part 3", "Part 4"]
    merged = textwork.split_sections(text, max_sections=3)
    assert [s["title"] for s in merged] == ["Part 1", "Part 2 / Part 3", "Part 4"]
    assert sum(s["words"] for s in merged) == 10


def test_sentences_keywords_and_stats() -> None:
    text = "The cat sat. The cat ran far away from the dog.\nDogs bark."
    assert textwork.sentences(text) == ["The cat sat.", "The cat ran far away from the dog.", "Dogs bark."]
    assert textwork.keywords(text, 3) == ["cat", "away", "bark"]  # by count, then alphabetical; no stop words
    assert textwork.stats(text) == {"words": 13, "sentences": 3, "distinct_words": 10, "mean_word_length": 3.31}


def test_summary_takes_the_best_sentence_then_one_per_hint() -> None:
    text = "The cat sat. The cat ran far away from the dog. Dogs bark."
    assert textwork.summarise(text) == ["The cat sat."]
    assert textwork.summarise(text, hints=["bark"]) == ["The cat sat.", "Dogs bark."]
    assert textwork.summarise(text, hints=["cat", "zebra"]) == ["The cat sat."]  # covered, or nowhere to find


def test_review_rejects_a_gap_with_the_fix_then_accepts_the_fixed_work() -> None:
    document = agents.DOCUMENT.read_text()
    sections = textwork.split_sections(document)
    first = textwork.review(document, sections, [textwork.process(s) for s in sections])
    assert not first["accepted"] and first["coverage"] < 1
    assert first["reasons"] == ["keywords missing from every summary: storm, lighthouse"]
    assert first["fixes"] == {"1": ["storm"], "0": ["lighthouse"]}  # where each word occurs most
    fixed = [textwork.process(s, first["fixes"].get(str(s["index"]))) for s in sections]
    second = textwork.review(document, sections, fixed)
    assert second["accepted"] and second["reasons"] == [] and second["coverage"] == 1.0


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda secs, res: secs.pop(), "the plan covers"),
        (lambda secs, res: res.pop(0), "section 0 (The keeper) has no summary"),
        (lambda secs, res: res[1]["summary"].append("Invented sentence."), "not from the section"),
        (lambda secs, res: [r.update(summary=textwork.sentences(s["text"])) for r, s in zip(res, secs, strict=False)], "over 40%"),
    ],
)
def test_review_finds_real_faults(tamper: object, reason: str) -> None:
    document = agents.DOCUMENT.read_text()
    sections = textwork.split_sections(document)
    fixes = {"1": ["storm"], "0": ["lighthouse"]}
    results = [textwork.process(s, fixes.get(str(s["index"]))) for s in sections]
    assert textwork.review(document, sections, results)["accepted"]
    tamper(sections, results)  # type: ignore[operator]
    verdict = textwork.review(document, sections, results)
    assert not verdict["accepted"] and any(reason in r for r in verdict["reasons"]), verdict["reasons"]


def test_the_definition_loops_through_a_retry_and_decides_on_the_verdict() -> None:
    definition = agents.definition("# A\nText.", max_rounds=4)
    steps = {s["id"]: s for s in definition["steps"]}
    assert steps["review"]["retry"]["max_attempts"] == 4
    assert steps["decide"]["cases"][0]["condition"]["field"] == "steps.review.output.accepted"
    assert steps["decide"]["cases"][0]["targets"] == ["publish"] and steps["decide"]["default"] == ["give_up"]
    assert steps["work"]["items"] == "steps.plan.output.sections"
    assert [agents.image(kind) for kind in ("planner", "worker", "reviewer")] == [
        f"agentainer-flow/agents-{kind}:" + agents.reference("agents", kind).split(":")[1]
        for kind in ("planner", "worker", "reviewer")
    ]
