"""The web console for dispatchers, the acceptance desk, managers and admins: server-rendered pages.

Pages are Jinja templates under templates/console/, with a little plain JavaScript (static/console.js:
countdowns, the board's refresh, confirmations); every asset is in this repository (no CDN: the console
works on a closed network). A page route is as thin as an API route: it reads its form, calls one service
with the signed-in user as the actor, and renders or redirects (after a POST, so a reload repeats nothing).
"""

from __future__ import annotations

from flask import Flask

from api.console import admin, board, desk, kpi, plans, session
from api.console.session import blp


def register(app: Flask) -> None:
    # The blueprint is module-level: a second app in the same process (tests) must not add its routes again.
    if not blp._got_registered_once:
        for module in (board, plans, desk, kpi, admin):
            module.register(blp)
    session.configure(app)
    app.register_blueprint(blp)
