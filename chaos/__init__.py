"""``make chaos``: kill and restart every process at random moments under a mixed workload, then count
what was stuck, lost, duplicated or leaked (docs/reliability.md)."""
