"""Console pages (being built)."""

from __future__ import annotations

from flask import Blueprint


def register(blp: Blueprint) -> None:
    """Add this module's pages to the console blueprint."""
