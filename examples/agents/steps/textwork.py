"""The agents' algorithms: planning, summarising, keyword extraction, statistics and review (pure).

Stdlib only (it runs in the agents' images, on the base image's Python 3.11). No language model: extractive summaries
scored by word frequency, keywords by frequency with a stop-word list, and a reviewer that checks
coverage and brevity against what it computes itself from the whole document.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

WORD = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$")
STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our ours out over own same she should so some such
    than that the their theirs them then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours one two
    every many much may might must upon
    """.split()  # noqa: SIM905 (a list of words reads better as words)
)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def body_words(document: str) -> list[str]:
    """The words of a document's text, headings left out (what the sections must hold between them)."""
    return words("\n".join(line for line in document.splitlines() if not HEADING.match(line.strip())))


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOP_WORDS and len(w) > 2]


def sentences(text: str) -> list[str]:
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip() and not HEADING.match(line.strip()))
    return [s.strip() for s in SENTENCE_END.split(flat) if s.strip()]


# -- the planner ------------------------------------------------------------------------------------


def split_sections(document: str, max_sections: int = 12) -> list[dict[str, Any]]:
    """Sections at markdown headings; a document without any is cut into paragraphs. Text before the
    first heading is a section of its own ("Introduction"). At most ``max_sections``: the smallest
    neighbouring sections are merged."""
    sections: list[dict[str, Any]] = []
    title, lines = "Introduction", []  # type: str, List[str]
    for line in document.splitlines():
        match = HEADING.match(line.strip())
        if match:
            if any(part.strip() for part in lines):
                sections.append({"title": title, "text": "\n".join(lines).strip()})
            title, lines = match.group(1), []
        else:
            lines.append(line)
    if any(part.strip() for part in lines):
        sections.append({"title": title, "text": "\n".join(lines).strip()})
    if len(sections) == 1:  # no headings: paragraphs
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", document) if p.strip()]
        sections = [{"title": f"Part {i + 1}", "text": p} for i, p in enumerate(paragraphs)]
    while len(sections) > max(1, max_sections):
        sizes = [len(words(a["text"])) + len(words(b["text"])) for a, b in itertools.pairwise(sections)]
        i = sizes.index(min(sizes))
        a, b = sections[i], sections[i + 1]
        sections[i : i + 2] = [{"title": f"{a['title']} / {b['title']}", "text": a["text"] + "\n\n" + b["text"]}]
    return [{"index": i, "title": s["title"], "text": s["text"], "words": len(words(s["text"]))} for i, s in enumerate(sections)]


# -- the workers ------------------------------------------------------------------------------------


def keywords(text: str, top: int = 5) -> list[str]:
    """The most frequent content words (ties: alphabetical)."""
    counts = Counter(content_words(text))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def _scores(text: str) -> list[float]:
    counts = Counter(content_words(text))
    out = []
    for sentence in sentences(text):
        found = content_words(sentence)
        out.append(sum(counts[w] for w in found) / (len(found) + 1) if found else 0.0)
    return out


def summarise(text: str, max_sentences: int = 1, hints: list[str] | None = None) -> list[str]:
    """An extractive summary: the ``max_sentences`` best-scored sentences, plus for each hint word not
    yet covered the best-scored sentence that contains it; in the text's order."""
    all_sentences = sentences(text)
    scores = _scores(text)
    ranked = sorted(range(len(all_sentences)), key=lambda i: (-scores[i], i))
    chosen = set(ranked[:max_sentences])
    for hint in hints or []:
        if any(hint in words(all_sentences[i]) for i in chosen):
            continue
        for i in ranked:
            if hint in words(all_sentences[i]):
                chosen.add(i)
                break
    return [all_sentences[i] for i in sorted(chosen)]


def stats(text: str) -> dict[str, Any]:
    ws = words(text)
    return {
        "words": len(ws),
        "sentences": len(sentences(text)),
        "distinct_words": len(set(ws)),
        "mean_word_length": round(sum(len(w) for w in ws) / len(ws), 2) if ws else 0.0,
    }


def process(section: dict[str, Any], hints: list[str] | None = None, max_sentences: int = 1) -> dict[str, Any]:
    """What a worker makes of one section."""
    return {
        "index": section["index"],
        "title": section["title"],
        "summary": summarise(section["text"], max_sentences, hints),
        "keywords": keywords(section["text"]),
        "stats": stats(section["text"]),
        "hints": list(hints or []),
    }


# -- the reviewer -----------------------------------------------------------------------------------


def review(
    document: str, sections: list[dict[str, Any]], results: list[dict[str, Any]], *, top_keywords: int = 8,
    max_summary_ratio: float = 0.4,
) -> dict[str, Any]:
    """Check the work against the document: every word planned into a section, every section
    summarised from its own sentences, the document's ``top_keywords`` each in some summary, and the
    summaries at most ``max_summary_ratio`` of the document's words. ``fixes`` names, per section,
    the keywords its summary must take in."""
    reasons: list[str] = []
    fixes: dict[str, list[str]] = {}
    total = len(body_words(document))
    planned = sum(s["words"] for s in sections)
    if planned != total:
        reasons.append(f"the plan covers {planned} of the document's {total} words")
    by_index = {r["index"]: r for r in results}
    for section in sections:
        result = by_index.get(section["index"])
        if result is None or not result["summary"]:
            reasons.append(f"section {section['index']} ({section['title']}) has no summary")
            continue
        own = set(sentences(section["text"]))
        foreign = [s for s in result["summary"] if s not in own]
        if foreign:
            reasons.append(f"section {section['index']} summary has {len(foreign)} sentence(s) not from the section")
    wanted = keywords(document, top_keywords)
    summary_words = {w for r in results for s in r["summary"] for w in words(s)}
    missing = [k for k in wanted if k not in summary_words]
    if missing:
        reasons.append(f"keywords missing from every summary: {', '.join(missing)}")
        for word in missing:
            counts = [(words(s["text"]).count(word), -s["index"]) for s in sections]
            best = -max(counts)[1]
            fixes.setdefault(str(best), []).append(word)
    summary_total = sum(len(words(s)) for r in results for s in r["summary"])
    if total and summary_total > max_summary_ratio * total:
        reasons.append(f"the summaries have {summary_total} words, over {max_summary_ratio:.0%} of {total}")
    return {
        "accepted": not reasons,
        "reasons": reasons,
        "fixes": fixes,
        "keywords": wanted,
        "coverage": round((len(wanted) - len(missing)) / len(wanted), 3) if wanted else 1.0,
        "summary_words": summary_total,
        "document_words": total,
    }
