"""The dashboard served under ``/ui``: pages and assets, browser sessions, secret masking.

:mod:`.pages` (routes and the login flow), :mod:`.sessions` (the session store in Redis),
:mod:`.masking` (env values of secret-looking variables masked in what a browser session reads).
See docs/dashboard.md.
"""
