"""The live model runtime and its observability: per-tick features and the compiled champion
(model.py), the champion watcher with hot swap (watcher.py), Prometheus metrics and drift/hit-rate
monitors (telemetry.py), and the local HTTP health/metrics/control server (http.py)."""
