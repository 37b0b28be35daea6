"""`webhooks`: endpoints that receive export events, their deliveries and attempts."""

from __future__ import annotations

import click

from sealexports.cli import Group, State, cli, pass_state, print_table
from sealexports.storage import accounts
from sealexports.storage import webhooks as store
from sealexports.webhooks import endpoints


@cli.group(cls=Group)
def webhooks() -> None:
    """Send export events (export.completed, export.failed) to URLs, signed.

    \b
    Example:
        SECRET=$(sealexports webhooks add https://hooks.example.com/sealexports --account acme)
        sealexports webhooks list && sealexports webhooks deliveries
    """


@webhooks.command("add")
@click.argument("url")
@click.option("--account", required=True, help="The account whose exports it hears of.")
@click.option("--events", help=f"Comma-separated event types (default: all: {','.join(store.EVENTS)}).")
@pass_state
def webhooks_add(state: State, url: str, account: str, events: str | None) -> None:
    """Add an endpoint and print its signing secret (only the secret, on stdout). It is not
    shown again.

    \b
    Example:
        SECRET=$(sealexports webhooks add https://hooks.example.com/x --account acme \\
            --events export.completed)
    """
    owner = accounts.get_account(state.conn, account)
    wanted = events.split(",") if events is not None else None
    if wanted is not None and not any(e.strip() for e in wanted):
        wanted = [""]  # refused below with the list of event types
    _, secret = endpoints.add(state.conn, state.settings, owner.id, url, wanted)
    click.echo(secret)


@webhooks.command("list")
@pass_state
def webhooks_list(state: State) -> None:
    """List endpoints (never their secrets).

    \b
    Example:
        sealexports webhooks list
    """
    names = {a.id: a.name for a in (s.account for s in accounts.list_sites(state.conn))}
    print_table(
        ["id", "account", "url", "events", "status", "created_at"],
        [
            (e.endpoint_id, names.get(e.account_id, e.account_id), e.url, e.events,
             f"disabled: {e.disabled_reason}" if e.disabled_at else "active", e.created_at)
            for e in store.list_endpoints(state.conn)
        ],
    )  # fmt: skip


@webhooks.command("remove")
@click.argument("endpoint_id")
@pass_state
def webhooks_remove(state: State, endpoint_id: str) -> None:
    """Remove an endpoint, its pending deliveries and its history.

    \b
    Example:
        sealexports webhooks remove wh_0123456789ab
    """
    store.remove_endpoint(state.conn, store.get_endpoint(state.conn, endpoint_id))
    click.echo(f"Removed {endpoint_id}")


@webhooks.command("test")
@click.argument("endpoint_id")
@pass_state
def webhooks_test(state: State, endpoint_id: str) -> None:
    """Queue a webhook.test event for the endpoint; print its delivery id. The workers send it
    (see `webhooks deliveries`).

    \b
    Example:
        sealexports webhooks test wh_0123456789ab
    """
    click.echo(endpoints.send_test(state.conn, store.get_endpoint(state.conn, endpoint_id)).delivery_id)


@webhooks.command("deliveries")
@click.argument("endpoint_id", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@pass_state
def webhooks_deliveries(state: State, endpoint_id: str | None, limit: int) -> None:
    """The latest deliveries (of one endpoint, or all), newest first, one line per attempt
    with its HTTP status (or error) and response time.

    \b
    Example:
        sealexports webhooks deliveries wh_0123456789ab
    """
    endpoint = None if endpoint_id is None else store.get_endpoint(state.conn, endpoint_id)
    rows: list[tuple[object, ...]] = []
    for d in store.list_deliveries(state.conn, endpoint=endpoint, limit=limit):
        tries: list[store.Attempt | None] = [*store.attempts(state.conn, d)] or [None]
        for a in tries:
            rows.append(
                (d.delivery_id, d.event_type, d.job_id or "-", d.status,
                 a.attempt if a else 0, a.started_at if a else "-", a.status_code if a else "-",
                 f"{a.duration_ms:.0f}" if a else "-", (a.error if a else None) or "")
            )  # fmt: skip
    print_table(["delivery", "event", "job_id", "status", "attempt", "at", "http", "ms", "error"], rows)


@webhooks.command("replay")
@click.argument("delivery_id")
@pass_state
def webhooks_replay(state: State, delivery_id: str) -> None:
    """Send a delivery's event again (a new delivery, same body data); print the new id.

    \b
    Example:
        sealexports webhooks replay whd_0123456789abcdef01234567
    """
    click.echo(endpoints.replay(state.conn, store.get_delivery(state.conn, delivery_id)).delivery_id)


@webhooks.command("rotate")
@click.argument("endpoint_id")
@pass_state
def webhooks_rotate(state: State, endpoint_id: str) -> None:
    """Give the endpoint a new secret and print it (only it). For 24 hours deliveries carry two
    v1 signatures, with the new secret and the old one.

    \b
    Example:
        NEW_SECRET=$(sealexports webhooks rotate wh_0123456789ab)
    """
    click.echo(endpoints.rotate(state.conn, store.get_endpoint(state.conn, endpoint_id)))
