"""Locust load tests against a stack on 127.0.0.1 (``make loadtest``); see loadtests/README.md."""
