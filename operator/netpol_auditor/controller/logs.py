"""Logging for the operator: kopf's formatters for both kopf's and our records, text or one JSON object a line."""

from __future__ import annotations

import logging

import kopf

__all__ = ["configure_logging"]


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Configure the root logger: ``text`` (timestamp, logger, level, message) or ``json`` (structured)."""
    kopf.configure(
        debug=level == "DEBUG",
        quiet=level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(level)
    # Noise at scale: the HTTP access log of every scrape, kopf's "Handler ... succeeded" for every watch event
    # and "Activity ... succeeded" for every liveness probe. Failures are still logged.
    if level != "DEBUG":
        for name in ("aiohttp.access", "kopf.objects", "kopf.activities.probe"):
            logging.getLogger(name).setLevel(logging.WARNING)
