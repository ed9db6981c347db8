"""Load tests and benchmarks for mnist-serve: Locust traffic that checks every answer.

``python -m loadtest`` runs Locust headless against a server (started here when no
``--host`` is given); ``python -m loadtest.bench`` prints the throughput/latency table.
"""
