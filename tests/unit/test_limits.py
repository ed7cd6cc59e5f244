"""Size limits from settings (flowcore.limits, issue 12): their bounds, their coherence, and that the
code enforcing them reads the configured figures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from flowcore import limits
from flowcore.errors import InvalidInput
from flowcore.limits import LimitsSection, check_pool_body, min_pool_body_bytes
from flowcore.plan import EngineEnv
from flowcore.pool_api import StateOp
from flowcore.settings import PoolSettings, WorkerSettings
from flowcore.state import apply_state_ops


@pytest.fixture
def configured() -> Iterator[None]:
    before = limits.current()
    yield
    limits.configure(before)


def test_defaults_and_bytes() -> None:
    section = LimitsSection()
    assert (section.max_steps, section.max_map_items) == (10_000, 100_000)
    assert section.max_output_bytes == 16 << 20 and section.max_log_bytes == 8 << 20
    assert section.max_state_value_bytes == 1 << 20


@pytest.mark.parametrize("bad", [{"max_steps": 0}, {"max_steps": 10_001}, {"max_output_mib": 0},
                                 {"max_map_items": -1}, {"max_log_mib_per_task": 2000}, {"typo": 1}])
def test_out_of_range_limits_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        LimitsSection.model_validate(bad)


def test_the_pool_body_holds_one_output_and_a_module_source() -> None:
    section = LimitsSection(max_output_mib=16)
    assert min_pool_body_bytes(section) == (16 + 4 + 1) << 20
    assert check_pool_body(section, None) is None
    assert check_pool_body(section, min_pool_body_bytes(section)) is None
    problem = check_pool_body(section, 8 << 20)
    assert problem is not None and "FLOW_LIMITS__MAX_OUTPUT_MIB=16" in problem


def test_pool_settings_derive_their_body_limit_and_refuse_an_incoherent_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_LIMITS__MAX_OUTPUT_MIB", "2")
    assert PoolSettings().max_body_bytes == (2 + 4 + 1) << 20
    monkeypatch.setenv("FLOW_MAX_BODY_BYTES", str(1 << 20))
    with pytest.raises(ValidationError, match="smaller than one whole step output"):
        PoolSettings()


def test_every_process_reads_the_same_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_LIMITS__MAX_MAP_ITEMS", "7")
    assert WorkerSettings().limits.max_map_items == 7 == PoolSettings().limits.max_map_items


def test_the_engine_and_the_state_rules_follow_the_configured_limits(configured: None) -> None:
    limits.configure(LimitsSection(max_map_items=5, max_state_value_kib=1))
    env = EngineEnv()
    assert env.max_map_items == 5 and env.max_state_value_bytes == 1024
    apply_state_ops({}, [StateOp(op="set", key="k", value="x" * 1000)])
    with pytest.raises(InvalidInput, match="the limit is 1024 bytes"):
        apply_state_ops({}, [StateOp(op="set", key="k", value="x" * 1100)])
    assert EngineEnv(max_map_items=9).max_map_items == 9  # an explicit figure still wins
