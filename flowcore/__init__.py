"""Domain code shared by the gateway, the workers, the pool service and the scheduler.

Nothing here performs I/O at import time. Models are pydantic, decisions are pure functions.
"""
