"""The size limits of a stack, from settings (``FLOW_LIMITS__*``), one section every process reads.

Each limit is enforced where the data is, and each says so when it refuses (issue 12):

======================== ========== ===================================================================
setting                  default    enforced by, and what happens past it
======================== ========== ===================================================================
``max_steps``            10,000     the gateway, at submission: 422 naming ``steps``
``max_map_items``        100,000    the engine, when a map step begins: the step fails, saying so
``max_output_mib``       16         the pool and the agent: a step's stdout, its output and state files,
                                    a function's result; past it the task fails ``invalid_output`` (or a
                                    text step that chose ``output_overflow: truncate`` keeps the start,
                                    marked ``output_truncated``)
``max_state_value_kib``  1,024      the engine, the gateway's state API and the agent's state bridge:
                                    a larger value of one key is refused (422, or the step fails)
``max_log_mib_per_task`` 8          the pool and the agent: past it the live log stops, saying so; the
                                    task goes on (never a reason to kill its container)
======================== ========== ===================================================================

Every process calls :func:`configure` with its settings' section when it starts (its ``__main__``);
code that enforces a limit reads :func:`current` when it decides, so the figures come from the same
environment in every process without being threaded through every constructor. Until then (an
in-process test, a library use) the defaults apply.

They are coherent by construction: a step's whole output must fit into the request that carries it as
the next step's input, so the pool's request body limit is at least one output plus a function's
module source (:func:`min_pool_body_bytes`; the pool refuses to start with a smaller one).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024
KIB = 1024
MODULE_SOURCE_BYTES = 4 * MIB  # flowcore.models.MAX_MODULE_SOURCE_CHARS: a function step's source, inline
REQUEST_OVERHEAD_BYTES = 1 * MIB  # env, ids, options around the input in one task request


class LimitsSection(BaseModel):
    """``FLOW_LIMITS__MAX_STEPS`` and the others (see the module)."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(10_000, ge=1, le=10_000, description="Steps of one workflow definition.")
    max_map_items: int = Field(100_000, ge=1, le=10_000_000, description="Items of one map step.")
    max_output_mib: int = Field(16, ge=1, le=1024, description="A task's stdout, output file or function result.")
    max_state_value_kib: int = Field(1024, ge=1, le=1024 * 1024, description="JSON of one state value.")
    max_log_mib_per_task: int = Field(8, ge=1, le=1024, description="Live log lines kept of one task.")

    @property
    def max_output_bytes(self) -> int:
        return self.max_output_mib * MIB

    @property
    def max_state_value_bytes(self) -> int:
        return self.max_state_value_kib * KIB

    @property
    def max_log_bytes(self) -> int:
        return self.max_log_mib_per_task * MIB


def min_pool_body_bytes(limits: LimitsSection) -> int:
    """The smallest pool request body limit that carries one whole output as the next step's input,
    with a function step's module source beside it."""
    return limits.max_output_bytes + MODULE_SOURCE_BYTES + REQUEST_OVERHEAD_BYTES


def pool_body_bytes(limits: LimitsSection, configured: int | None) -> int:
    """The pool's request body limit: the configured one, or (unset) the smallest coherent one."""
    return configured if configured is not None else min_pool_body_bytes(limits)


def check_pool_body(limits: LimitsSection, configured: int | None) -> str | None:
    """Why a configured pool body limit is incoherent with the output limit, or None when it is fine."""
    if configured is None or configured >= min_pool_body_bytes(limits):
        return None
    return (
        f"FLOW_MAX_BODY_BYTES of the pool ({configured}) is smaller than one whole step output"
        f" (FLOW_LIMITS__MAX_OUTPUT_MIB={limits.max_output_mib}) plus a module source: a step could produce an"
        f" output that the next step cannot receive; use at least {min_pool_body_bytes(limits)}"
    )


_current = LimitsSection()


def configure(section: LimitsSection) -> None:
    """Make ``section`` this process's limits (each process's ``__main__``, from its settings)."""
    global _current
    _current = section


def current() -> LimitsSection:
    """This process's limits: the configured ones, or the defaults."""
    return _current
