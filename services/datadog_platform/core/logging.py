"""structlog JSON logging, with request-scoped context bound through contextvars.

Every line goes through :mod:`datadog_platform.core.redaction`: no secret is logged.
"""

from __future__ import annotations

import logging
import sys

import structlog

from datadog_platform.core.redaction import RedactingFilter, structlog_processor


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stderr; every line carries ``service`` and any bound context."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            # Last before rendering, so exception texts are redacted too.
            structlog_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger named after its module."""
    return structlog.get_logger(logger_name=name)
