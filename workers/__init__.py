"""arq workers: they advance workflows one task at a time (see :mod:`workers.runner`)."""
