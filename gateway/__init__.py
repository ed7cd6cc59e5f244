"""The public HTTP API of Agentainer Flow (Starlette)."""
