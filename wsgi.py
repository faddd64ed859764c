"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``."""

from dispatch.factory import create_app

app = create_app()
