"""The SDK's one exception tree, rooted at :class:`AgentainerError`.

Nothing else escapes the client: httpx errors become :class:`TransportError`, HTTP error answers become
:class:`ClientError` carrying the server's ``{"error", "message", "field"}`` body, and bad arguments
caught before anything is sent become :class:`ValidationError` (a ``ClientError`` with status 422, the
same answer the server would give), so ``except ClientError`` covers both.

::

    AgentainerError
    ├── ClientError            the API answered 4xx/5xx (.status_code, .message, .field, .code)
    │   └── ValidationError    an argument or definition rejected before sending (status_code 422)
    ├── TransportError         the API could not be reached (also a builtin ConnectionError)
    ├── WorkflowError          a workflow ended failed or cancelled (.workflow, .failed_steps)
    └── WorkflowTimeoutError   waiting ran out of time (also a builtin TimeoutError)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentainer_flow.models import Workflow


class AgentainerError(Exception):
    """Root of every error the SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ClientError(AgentainerError):
    """The API answered with an error status.

    ``message`` and ``field`` come from the server's JSON body; ``code`` is its ``error`` value
    (``not_found``, ``invalid_input``, ``unauthorized``, ...); ``details`` lists every problem of an
    invalid definition when the server gave them.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        details: Any = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.field = field
        self.details = details
        self.method = method
        self.path = path

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method and self.path else ""
        return f"{self.status_code} {self.code or 'error'}: {self.message}{where}"


class ValidationError(ClientError):
    """An argument or a definition was rejected before any request was sent."""

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(422, message, code="invalid_input", field=field, details=details)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class TransportError(AgentainerError, ConnectionError):
    """The API could not be reached, or the connection broke (wraps the httpx error as ``__cause__``)."""

    def __init__(self, message: str) -> None:
        AgentainerError.__init__(self, message)


class WorkflowError(AgentainerError):
    """A workflow finished failed or cancelled.

    ``failed_steps`` maps each failed step id to its error message; ``workflow`` is the final record.
    """

    def __init__(self, message: str, *, workflow: Workflow | None = None, failed_steps: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.workflow = workflow
        self.failed_steps = dict(failed_steps or {})

    @property
    def workflow_id(self) -> str | None:
        return self.workflow.id if self.workflow is not None else None

    @property
    def status(self) -> str | None:
        return self.workflow.status.value if self.workflow is not None else None


class WorkflowTimeoutError(AgentainerError, TimeoutError):
    """Waiting for a workflow ran out of time (the workflow itself keeps running)."""

    def __init__(self, message: str, *, workflow: Workflow | None = None) -> None:
        AgentainerError.__init__(self, message)
        self.workflow = workflow


def check_timeout(value: float | None, name: str = "timeout") -> float | None:
    """Reject negative or non-numeric timeouts at once, with a message naming the argument."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number of seconds, got {value!r}", field=name)
    if value != value or value < 0:
        raise ValidationError(f"{name} must not be negative, got {value!r}", field=name)
    return float(value)
