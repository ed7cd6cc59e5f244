"""The workflow's steps (Python functions run in containers by the pool's agent; their source travels in
the definition's ``modules``). They talk to the long-running agents through the workflow's state only:
each posts a request and waits for the answer key (``ctx.state``).

- ``plan``: posts ``task`` (the document); the planner answers ``plan``.
- ``work`` (a map over the sections): appends a job to ``jobs``; a worker answers ``result.<job>``.
- ``review`` (retried up to ``max_rounds`` attempts): from the second attempt on, first has the workers
  redo the sections the last verdict named, with its hints; then posts ``review_request`` and waits for
  ``verdict.<round>``. A rejection fails the attempt (the engine retries: the loop) unless it is the last
  round; the verdict is the step's output, which the ``decide`` step reads.
- ``publish`` / ``give_up``: the final report from the accepted results, or the last reasons.
"""

import time

POLL_S = 0.05
ANSWER_TIMEOUT_S = 60.0


def _answer(ctx, key, timeout_s=ANSWER_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ctx.state.get(key)
        if value is not None:
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"no answer in state key {key!r} after {timeout_s:g} s: is the agent running?")


def _job(ctx, section, round_, hints):
    job = {"id": f"s{section}-r{round_}", "section": section, "round": round_, "hints": hints}
    ctx.state.append("jobs", job)
    return job


def plan(ctx):
    data = ctx.input["input"]
    ctx.state.set("task", {"document": data["document"], "max_sections": data.get("max_sections", 12)})
    answer = _answer(ctx, "plan")
    ctx.log.info("the planner %s made %d sections", answer["agent"], len(answer["sections"]))
    return {
        "planner": answer["agent"],
        "sections": [{"index": s["index"], "title": s["title"], "words": s["words"]} for s in answer["sections"]],
    }


def work(ctx):
    section = ctx.item
    job = _job(ctx, section["index"], 1, [])
    result = _answer(ctx, f"result.{job['id']}")
    ctx.state.set(f"current.{section['index']}", job["id"])
    return {"section": section["index"], "job": job["id"], "worker": result["agent"], "keywords": result["keywords"]}


def review(ctx):
    round_ = ctx.attempt
    max_rounds = ctx.input["input"].get("max_rounds", 3)
    sections = ctx.input["deps"]["plan"]["sections"]
    if round_ > 1:
        last = ctx.state.get(f"verdict.{round_ - 1}")
        jobs = [_job(ctx, int(index), round_, hints) for index, hints in sorted(last["fixes"].items())]
        for job in jobs:
            result = _answer(ctx, f"result.{job['id']}")
            ctx.state.set(f"current.{job['section']}", job["id"])
            print(f"round {round_}: {result['agent']} redid section {job['section']} taking in {', '.join(job['hints'])}")
    current = {str(s["index"]): ctx.state.get(f"current.{s['index']}") for s in sections}
    ctx.state.set("review_request", {"round": round_, "results": current})
    print(f"round {round_}: asked the reviewer about {len(current)} sections")
    verdict = _answer(ctx, f"verdict.{round_}")
    print(f"round {round_}: {'accepted' if verdict['accepted'] else 'rejected: ' + '; '.join(verdict['reasons'])}")
    if verdict["accepted"] or round_ >= max_rounds:
        return {**verdict, "results": current}
    raise RuntimeError(f"round {round_} rejected by the reviewer: {'; '.join(verdict['reasons'])}")


def publish(ctx):
    verdict = ctx.input["deps"]["review"]
    sections = []
    for _index, job in sorted(verdict["results"].items(), key=lambda kv: int(kv[0])):
        result = ctx.state.get(f"result.{job}")
        sections.append({
            "index": result["index"], "title": result["title"], "summary": " ".join(result["summary"]),
            "keywords": result["keywords"], "words": result["stats"]["words"], "by": result["agent"],
        })
    return {
        "accepted": True, "rounds": verdict["round"], "keywords": verdict["keywords"],
        "document_words": verdict["document_words"], "summary_words": verdict["summary_words"],
        "sections": sections, "verdicts": ctx.state.get("verdicts"),
    }


def give_up(ctx):
    verdict = ctx.input["deps"]["review"]
    return {"accepted": False, "rounds": verdict["round"], "reasons": verdict["reasons"]}
