"""Logging exceptions without the personal data a database error can carry.

``hide_parameters`` keeps bound values out of SQLAlchemy's messages, but PostgreSQL's own error text names the
offending values (``DETAIL:  Key (phone)=(+8613912345678) already exists.``, ``Failing row contains (...)``),
and a logged traceback would print them. Every ``log.exception`` of the project goes through here.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback

_DETAIL = re.compile(r"^(\s*DETAIL:).*$", re.MULTILINE)
_KEY_VALUES = re.compile(r"(Key \([^)]*\))=\(.*?\)( already exists| is not present| conflicts)")
_FAILING_ROW = re.compile(r"(Failing row contains) \(.*?\)\.?", re.DOTALL)


def redact(text: str) -> str:
    """``text`` with the values PostgreSQL quotes in its error details replaced by ``…``."""
    text = _KEY_VALUES.sub(r"\1=(…)\2", text)
    text = _FAILING_ROW.sub(r"\1 (…).", text)
    return _DETAIL.sub(r"\1 (redacted)", text)


def log_exception(logger: logging.Logger, message: str, *args: object) -> None:
    """Log ``message`` at ERROR with the current exception's traceback, redacted (call in an ``except``)."""
    exc = sys.exc_info()[1]
    rendered = "".join(traceback.format_exception(exc)) if exc is not None else ""
    logger.error(message + "\n%s", *args, redact(rendered.rstrip()))
