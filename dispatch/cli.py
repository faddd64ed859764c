"""Flask commands: seed-demo, create-user, create-api-key, run-scheduler (CONTRACT §1), billing-settlement."""

from __future__ import annotations

from datetime import date, datetime, timedelta

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


def _previous_business_day() -> date:
    from dispatch.clock import utcnow
    from dispatch.timeutil import business_day

    return business_day(utcnow()) - timedelta(days=1)


@click.command("billing-settlement")
@click.option("--day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="default: yesterday")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default=None, help="default: SETTLEMENT_DIR"
)
@click.option("--verify", "verify_path", type=click.Path(exists=True, dir_okay=False), default=None)
def billing_settlement_command(day: datetime | None, out_dir: str | None, verify_path: str | None) -> None:
    """Write the settlement file of a business day (DISPATCH_TZ) for BOSS, or check one with --verify."""
    from dispatch.billing import settlement
    from dispatch.clock import utcnow

    if verify_path is not None:
        try:
            checked = settlement.read_settlement(verify_path)
        except settlement.SettlementFileError as exc:
            raise click.ClickException(f"{verify_path}: {exc}") from None
        click.echo(f"{verify_path}: ok, {len(checked.details)} records for {checked.day:%Y-%m-%d}")
        click.echo(checked.trailer)
        return
    written = settlement.write_settlement(
        day.date() if day is not None else _previous_business_day(),
        out_dir or current_app.config["SETTLEMENT_DIR"],
        now=utcnow(),
    )
    click.echo(str(written.path))
    click.echo(written.trailer)


@click.command("kpi-verify")
@click.option("--from", "start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="first business day")
@click.option("--to", "end", required=True, type=click.DateTime(["%Y-%m-%d"]), help="last business day")
def kpi_verify_command(start: datetime, end: datetime) -> None:
    """Recompute each day's KPI totals from the events and compare with the rollup; exit 1 on a difference."""
    from dispatch.reporting import recompute

    day, bad = start.date(), 0
    while day <= end.date():
        differences = recompute.differences(day)
        for (grouping, _, key, order_type, metric), (have, want) in differences.items():
            click.echo(
                f"{day} {grouping}={key or '-'} {order_type or '-'} {metric}: rollup {have}, events {want}"
            )
        bad += len(differences)
        day += timedelta(days=1)
    if bad:
        raise click.ClickException(f"{bad} totals differ from the events")
    click.echo(f"KPI rollup matches the events from {start.date()} to {end.date()}")


def register(app: Flask) -> None:
    for command in (
        kpi_verify_command,
        create_user_command,
        create_api_key_command,
        seed_demo_command,
        run_scheduler_command,
        billing_settlement_command,
    ):
        app.cli.add_command(command)
