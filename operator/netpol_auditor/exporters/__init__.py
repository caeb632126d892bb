"""Exporters: Prometheus metrics, Kubernetes Events and the reachability page, reading from the index and the prober
(never the other way round)."""
