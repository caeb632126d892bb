"""The HA switch follows kopf's own peering log lines (kopf offers no other signal of "paused in favour of a
peer"). A kopf release that renames the logger or rewords the lines must fail here, instead of leaving every
replica active, or every replica standing by, in production."""

from __future__ import annotations

import inspect
import logging

from kopf._core.engines import peering

from netpol_auditor.controller import app


def test_the_installed_kopf_logs_the_peering_decisions_the_operator_follows() -> None:
    assert peering.logger is logging.getLogger(app._PEERING_LOGGER)
    source = inspect.getsource(peering)
    for prefix in (*app._PAUSE_PREFIXES, app._RESUME_PREFIX):
        assert f'"{prefix}' in source or f"'{prefix}" in source, prefix
