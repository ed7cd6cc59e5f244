"""``GET /metrics`` through ``prometheus_client``: custom collectors over one scrape's reads (ADR 020).

The route reads Redis and the pool services (async) into a :class:`Scrape`, plain data; the
:class:`Exporter` (one per app, its own ``CollectorRegistry``, never the process-global one) then
renders it with the encoder the ``Accept`` header asks for (the text format 0.0.4 by default,
OpenMetrics when asked). Rendering is synchronous, so concurrent scrapes on one event loop cannot
see each other's data. The collectors are small and pure: each yields metric families from the scrape.

Counters and histograms come from :mod:`flowcore.counters` (monotonic, incremented in the commits);
gauges from the indexes and the pool services' reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from flowcore import counters as c

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FLOW_OUTCOMES = ("admitted", "queued", "throttled", "refused", "skipped", "evicted", "debounced")
POOL_COUNTERS = {
    "warm_hits": "Tasks served by an idle warm container.",
    "cold_starts": "Tasks that waited for a container start (pool misses and one-shot runs).",
    "queue_waits": "Tasks that waited for a busy pool to free a container.",
    "tasks": "Tasks run by the pool service.",
    "failures": "Tasks that ended unsuccessfully.",
}


@dataclass
class Scrape:
    """What one scrape read: every number the collectors report."""

    workflows: dict[str, int] = field(default_factory=dict)  # status -> stored workflows
    queue_depth: int = 0
    queue_ready: int = 0
    tasks_running: int = 0
    services: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)  # (id, /v1/pools report)
    flow_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # workflow name -> outcome -> n
    step_keys: dict[str, int] = field(default_factory=dict)  # step concurrency keys: outcome -> n (ADR 019)
    counters: dict[str, int] = field(default_factory=dict)  # {p}:metrics:counters (the fields read)
    names: list[str] = field(default_factory=list)  # workflow names with their own series


def finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def counter_fields(names: Iterable[str]) -> list[str]:
    """The fields of ``{p}:metrics:counters`` a scrape reads: bounded by the label sets and ``names``."""
    out: list[str] = []
    for step_type in c.CONTAINER_TYPES:
        out += [c.task_field(step_type, o) for o in c.TASK_OUTCOMES] + [c.retry_field(step_type)]
        out += c.histogram_fields(c.hist_prefix("td", step_type), c.TASK_BOUNDS_S)
        out += c.histogram_fields(c.hist_prefix("sd", step_type), c.STEP_BOUNDS_S)
    for name in [None, *names]:
        out += [c.workflow_field(s, name) for s in c.WORKFLOW_STATUSES]
        out += c.histogram_fields(c.hist_prefix("wd", name), c.WORKFLOW_BOUNDS_S)
    return out


def _histogram(family: HistogramMetricFamily, labels: list[str], h: c.Histogram) -> None:
    buckets = [("+Inf" if math.isinf(bound) else repr(float(bound)), float(n)) for bound, n in h.buckets]
    family.add_metric(labels, buckets, h.sum_s)


class IndexCollector(Collector):
    """Gauges read from the indexes: workflows by status, the queue, running tasks."""

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        s = self._scrape()
        wf = GaugeMetricFamily("flow_workflows", "Stored workflows by status.", labels=["status"])
        for status, count in s.workflows.items():
            wf.add_metric([status], count)
        yield wf
        yield GaugeMetricFamily("flow_queue_depth", "Jobs in the arq queue, deferred retries included.", value=s.queue_depth)
        yield GaugeMetricFamily("flow_queue_ready", "Jobs in the arq queue that are due now.", value=s.queue_ready)
        yield GaugeMetricFamily("flow_tasks_running", "Tasks running under a lease.", value=s.tasks_running)


class RunCounterCollector(Collector):
    """Monotonic counters and histograms of finished tasks, steps and workflows (flowcore.counters)."""

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        s = self._scrape()
        v = s.counters
        tasks = CounterMetricFamily("flow_tasks", "Tasks that finished for good, by step type and outcome.",
                                    labels=["type", "outcome"])
        retries = CounterMetricFamily("flow_task_retries", "Failed task attempts the retry policy runs again.",
                                      labels=["type"])
        task_hist = HistogramMetricFamily(
            "flow_task_duration_seconds", "Last attempt of each finished task, claimed to finished.", labels=["type"])
        step_hist = HistogramMetricFamily(
            "flow_step_duration_seconds", "Container steps that succeeded or failed, ready to finished.", labels=["type"])
        for t in c.CONTAINER_TYPES:
            for outcome in c.TASK_OUTCOMES:
                tasks.add_metric([t, outcome], v.get(c.task_field(t, outcome), 0))
            retries.add_metric([t], v.get(c.retry_field(t), 0))
            _histogram(task_hist, [t], c.histogram(v, c.hist_prefix("td", t), c.TASK_BOUNDS_S))
            _histogram(step_hist, [t], c.histogram(v, c.hist_prefix("sd", t), c.STEP_BOUNDS_S))
        yield from (tasks, retries, task_hist, step_hist)
        finished = CounterMetricFamily(
            "flow_workflows_finished",
            f"Workflows that finished, by name (the first {c.MAX_WORKFLOW_LABELS} names to finish; the rest are "
            f"'{c.OTHER}') and status.", labels=["workflow", "status"])
        wf_hist = HistogramMetricFamily(
            "flow_workflow_duration_seconds", "Finished workflows that had started, started to finished.",
            labels=["workflow"])
        named = [n for n in s.names if n != c.OTHER]
        for status in c.WORKFLOW_STATUSES:
            every = v.get(c.workflow_field(status), 0)
            parts = [v.get(c.workflow_field(status, n), 0) for n in named]
            for n, count in zip(named, parts, strict=True):
                finished.add_metric([n, status], count)
            finished.add_metric([c.OTHER, status], max(every - sum(parts), 0))
        hists = [c.histogram(v, c.hist_prefix("wd", n), c.WORKFLOW_BOUNDS_S) for n in named]
        for n, h in zip(named, hists, strict=True):
            _histogram(wf_hist, [n], h)
        _histogram(wf_hist, [c.OTHER], c.minus(c.histogram(v, c.hist_prefix("wd"), c.WORKFLOW_BOUNDS_S), hists))
        yield from (finished, wf_hist)


class PoolCollector(Collector):
    """The pool services: up or not, their own counters (since each started), their containers."""

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("flow_pool_service_up", "1 when the pool service answered GET /v1/pools.",
                               labels=["service"])
        counts = {key: CounterMetricFamily(f"flow_pool_{key}", f"{text} Since the pool service started.",
                                           labels=["service"]) for key, text in POOL_COUNTERS.items()}
        containers = GaugeMetricFamily("flow_pool_containers", "Pooled containers by state.", labels=["service", "state"])
        for sid, report in self._scrape().services:
            up.add_metric([sid], 1 if report else 0)
            overall = report.get("overall") if report else None
            if not isinstance(overall, dict):
                continue
            for key, family in counts.items():
                value = finite(overall.get(key))
                if value is not None:
                    family.add_metric([sid], value)
            for state in ("busy", "idle"):
                value = finite(overall.get(state))
                if value is not None:
                    containers.add_metric([sid, state], value)
        yield up
        yield from counts.values()
        yield containers


class FlowControlCollector(Collector):
    """Flow-controlled starts by workflow name and outcome (``{p}:fc:counts``, ADR 013)."""

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "flow_starts",
            "Flow-controlled starts by outcome (admitted, queued, throttled, refused, skipped, evicted, debounced)"
            " and workflow name, since the store was created.", labels=["workflow", "outcome"])
        for name, outcomes in sorted(self._scrape().flow_counts.items()):
            for outcome, count in outcomes.items():
                family.add_metric([name, outcome], count)
        yield family
        tasks = CounterMetricFamily(
            "flow_step_key_tasks",
            "Tasks of steps with a concurrency key by outcome: admitted (took a slot), queued (waited for one),"
            " released (by their worker), swept (released by the sweep after their worker died).",
            labels=["outcome"])
        for outcome, count in sorted(self._scrape().step_keys.items()):
            tasks.add_metric([outcome], count)
        yield tasks


class Exporter:
    """One app's registry and collectors; :meth:`render` turns a scrape into the answer's body and type."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._current: Scrape | None = None
        for collector in (IndexCollector, RunCounterCollector, PoolCollector, FlowControlCollector):
            self.registry.register(collector(self._scrape))

    def _scrape(self) -> Scrape:
        if self._current is None:
            raise RuntimeError("collectors read outside Exporter.render")
        return self._current

    def render(self, scrape: Scrape, accept: str | None = None) -> tuple[bytes, str]:
        """``(body, content type)``: OpenMetrics when ``accept`` asks for it, else the text format 0.0.4."""
        encoder, content_type = choose_encoder(accept or "")
        self._current = scrape
        try:
            return encoder(self.registry), content_type
        finally:
            self._current = None
