"""The Prometheus text exposition format (version 0.0.4), written by hand: no client library needed.

:class:`Exposition` collects metric families (``# HELP``, ``# TYPE``, then samples) and renders
them in the order they were added. Label values are escaped as the format requires; values that
are not finite numbers are dropped, so the output never carries NaN.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flowcore.metrics import percentile

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Kind = Literal["gauge", "counter", "summary", "untyped"]
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
QUANTILES = (0.5, 0.95, 0.99)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    name: str
    help: str
    kind: Kind
    lines: list[str] = field(default_factory=list)


class Exposition:
    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def family(self, name: str, help_text: str, kind: Kind) -> Family:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = Family(name, help_text, kind)
        return fam

    def sample(
        self, family: Family, value: float | None, labels: Mapping[str, str] | None = None, *, suffix: str = ""
    ) -> None:
        if value is None or isinstance(value, bool) or not math.isfinite(value):
            return
        text = ""
        if labels:
            for key in labels:
                if not _LABEL.match(key):
                    raise ValueError(f"invalid label name {key!r}")
            text = "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"
        family.lines.append(f"{family.name}{suffix}{text} {number(value)}")

    def gauge(self, name: str, help_text: str, value: float | None, labels: Mapping[str, str] | None = None) -> None:
        self.sample(self.family(name, help_text, "gauge"), value, labels)

    def counter(self, name: str, help_text: str, value: float | None, labels: Mapping[str, str] | None = None) -> None:
        self.sample(self.family(name, help_text, "counter"), value, labels)

    def summary(
        self,
        name: str,
        help_text: str,
        values: Sequence[float],
        labels: Mapping[str, str] | None = None,
        quantiles: Iterable[float] = QUANTILES,
    ) -> None:
        """Quantiles (nearest rank), ``_sum`` and ``_count`` of ``values``; nothing but the count when empty."""
        fam = self.family(name, help_text, "summary")
        base = dict(labels or {})
        for q in quantiles:
            self.sample(fam, percentile(values, q * 100), {**base, "quantile": number(q)})
        self.sample(fam, float(sum(values)), base, suffix="_sum")
        self.sample(fam, float(len(values)), base, suffix="_count")

    def render(self) -> str:
        out: list[str] = []
        for fam in self._families.values():
            out.append(f"# HELP {fam.name} {escape_help(fam.help)}")
            out.append(f"# TYPE {fam.name} {fam.kind}")
            out.extend(fam.lines)
        return "\n".join(out) + "\n"
