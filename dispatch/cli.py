"""Flask commands: seed-demo, create-user, create-api-key, run-scheduler (CONTRACT §1)."""

from __future__ import annotations

import click
from flask import Flask, current_app

from dispatch.actors import Actor
from dispatch.errors import DispatchError
from dispatch.vocabulary import API_KEY_SCOPES, ROLES

CLI_ACTOR = Actor.system(name="cli", source="cli")


def _fail(exc: DispatchError) -> None:
    detail = f" {exc.errors}" if exc.errors else ""
    raise click.ClickException(f"{exc.message}{detail}")


@click.command("create-user")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password", required=True)
@click.option("--engineer-code", default=None, help="links an engineer login to that engineer")
def create_user_command(username: str, role: str, password: str, engineer_code: str | None) -> None:
    """Create a login for the console (or the PDA, with --role engineer)."""
    from dispatch.services.auth import create_user

    try:
        user = create_user(
            username, role=role, password=password, engineer_code=engineer_code, actor=CLI_ACTOR
        )
    except DispatchError as exc:
        _fail(exc)
    click.echo(f"created user {user.username} ({user.role})")


@click.command("create-api-key")
@click.argument("name")
@click.option("--scope", "scopes", required=True, multiple=True, type=click.Choice(API_KEY_SCOPES))
def create_api_key_command(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key for the intake or billing system; the key is printed once, on the last line."""
    from dispatch.services.auth import create_api_key

    try:
        raw, key = create_api_key(name, list(scopes), actor=CLI_ACTOR)
    except DispatchError as exc:
        _fail(exc)
    click.echo(
        f"created API key {key.name} (scopes: {', '.join(key.scopes)}); store it now, it is not shown again:"
    )
    click.echo(raw)


@click.command("seed-demo")
def seed_demo_command() -> None:
    """Load the Kunming demo data (districts, teams, engineers, users, orders in every status); idempotent."""
    from dispatch.demo import seed_demo

    summary = seed_demo()
    click.echo(summary)


@click.command("run-scheduler")
def run_scheduler_command() -> None:
    """Run the scheduler process (SLA tick, SMS sender, feed relay) until interrupted."""
    from dispatch.scheduling import run_scheduler

    run_scheduler(current_app._get_current_object())  # type: ignore[attr-defined]


def register(app: Flask) -> None:
    for command in (create_user_command, create_api_key_command, seed_demo_command, run_scheduler_command):
        app.cli.add_command(command)
