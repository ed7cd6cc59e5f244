"""The scheduler process: fires schedule triggers at their time in their timezone (see :mod:`scheduler.loop`)."""
