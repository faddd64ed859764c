"""Flask extensions, created unbound; the factory calls ``init_app``."""

from __future__ import annotations

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from dispatch.models.base import Base


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # APScheduler-owned tables are not ours to migrate (library-notes §4).
    return not (type_ == "table" and name is not None and name.startswith("apscheduler_"))


db = SQLAlchemy(model_class=Base)
migrate = Migrate(include_name=_include_name, render_as_batch=True, compare_type=True)
