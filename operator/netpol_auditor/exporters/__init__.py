"""Exporters: Prometheus metrics and Kubernetes Events, reading from the index (never the other way round)."""
