"""The scheduler process: fires cron triggers at their time in their timezone.

Triggers arrive in a later release; until then the process starts, reads its settings and idles until it
is told to stop, so that the Procfile, ``make up`` and ``make down`` already manage it.
"""
