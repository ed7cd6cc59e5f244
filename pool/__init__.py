"""The pool service: warm containers per pool key, task dispatch into them, long-running agents.

The hot path: :mod:`pool.app` (HTTP) -> :mod:`pool.dispatch` (mode choice, the step contract) ->
:mod:`pool.warm` (acquire a warm container) -> :mod:`pool.channel` (the in-container agent,
:mod:`pool.agent.flow_agent`) or :mod:`pool.runtime` (exec, one-shot run).
"""
