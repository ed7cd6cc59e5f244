"""The pool service: warm containers per pool key, task dispatch into them, long-running agents.

The hot path: :mod:`pool.app` (HTTP) -> :mod:`pool.dispatch` (mode choice, the step contract) ->
:mod:`pool.warm` (acquire a warm container) -> one runner per mode: :mod:`pool.mode_agent` (through
:mod:`pool.channel` to the in-container agent, :mod:`pool.agent.flow_agent`), :mod:`pool.mode_exec`
(``docker exec``) or :mod:`pool.mode_cold` (a one-shot container); :mod:`pool.taskrun` holds what they
share.
"""
