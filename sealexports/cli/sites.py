"""`sites` and `keys`: sites (and their accounts and plans) and API keys."""

from __future__ import annotations

import click

from sealexports.cli import Group, State, cli, pass_state, print_table
from sealexports.config import PLAN_NAMES
from sealexports.jobs import lifecycle
from sealexports.storage import accounts


@cli.group(cls=Group)
def sites() -> None:
    """Create, list, update and delete sites.

    \b
    Example:
        sealexports sites create shop --timezone Europe/Madrid && sealexports sites list
    """


@sites.command("create")
@click.argument("site")
@click.option("--name", help="Display name (default: the site id).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of the site.")
@click.option("--plan", type=click.Choice(PLAN_NAMES), help="The account's plan (default: free).")
@click.option("--account", help="Account name (default: the site id).")
@pass_state
def sites_create(
    state: State, site: str, name: str | None, timezone: str, plan: str | None, account: str | None
) -> None:
    """Create SITE, and its account if new.

    \b
    Example:
        sealexports sites create shop --timezone Europe/Madrid --plan pro --account acme
    """
    s = accounts.create_site(state.conn, site, name=name, timezone=timezone, plan=plan, account=account)
    click.echo(f"Created site {s.site_id} (account {s.account.name}, plan {s.account.plan}, {s.timezone})")


@sites.command("list")
@pass_state
def sites_list(state: State) -> None:
    """List sites with their account, plan and time zone.

    \b
    Example:
        sealexports sites list
    """
    print_table(
        ["site_id", "name", "account", "plan", "timezone"],
        [
            (s.site_id, s.name, s.account.name, s.account.plan, s.timezone)
            for s in accounts.list_sites(state.conn)
        ],
    )


@sites.command("update")
@click.argument("site")
@click.option("--name", help="A new display name.")
@click.option("--timezone", help="A new IANA time zone: only while the site has no events.")
@pass_state
def sites_update(state: State, site: str, name: str | None, timezone: str | None) -> None:
    """Rename SITE, or change its time zone.

    Events are filed by the local day of the site's time zone when they arrive, so the time
    zone changes only while the site has none: for a site with data, create a new site in the
    new zone and import the events there.

    \b
    Example:
        sealexports sites update shop --name "Shop (EU)" --timezone Europe/Paris
    """
    if name is None and timezone is None:
        raise click.UsageError("give --name, --timezone or both")
    s = accounts.update_site(state.conn, site, name=name, timezone=timezone)
    click.echo(f"Updated site {s.site_id} (name {s.name!r}, {s.timezone})")


@sites.command("delete")
@click.argument("site")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def sites_delete(state: State, site: str, yes: bool) -> None:
    """Delete SITE with its events, its export jobs and their files, and the keys bound to it.
    Its account stays. There is no undo.

    \b
    Example:
        sealexports sites delete shop --yes
    """
    conn = state.conn
    s = accounts.get_site(conn, site)
    question = f"Delete site {s.site_id} ({s.name}) with all its events, export jobs and files?"
    if not yes and not click.confirm(question, err=True):
        raise click.ClickException(f"site {site} was not deleted")
    jobs = lifecycle.delete_site_jobs(conn, state.settings.exports_dir, site)
    accounts.delete_site(conn, site)
    click.echo(f"Deleted site {site} and its {jobs} export jobs")


@cli.group("accounts", cls=Group)
def accounts_group() -> None:
    """List accounts and change their plans.

    \b
    Example:
        sealexports accounts list && sealexports accounts set-plan acme pro
    """


@accounts_group.command("list")
@pass_state
def accounts_list(state: State) -> None:
    """List accounts with their plan, number of sites and of active keys.

    \b
    Example:
        sealexports accounts list
    """
    print_table(
        ["account", "plan", "sites", "keys", "created_at"],
        [(a.name, a.plan, a.sites, a.keys, a.created_at) for a in accounts.list_accounts(state.conn)],
    )


@accounts_group.command("set-plan")
@click.argument("name")
@click.argument("plan", type=click.Choice(PLAN_NAMES))
@pass_state
def accounts_set_plan(state: State, name: str, plan: str) -> None:
    """Change account NAME's plan; its limits apply from the next request on.

    \b
    Example:
        sealexports accounts set-plan acme pro
    """
    accounts.set_plan(state.conn, name, plan)
    click.echo(f"Account {name} is now on the {plan} plan")


@cli.group(cls=Group)
def keys() -> None:
    """Create, list and revoke API keys.

    \b
    Example:
        sealexports keys create --site demo --name ci && sealexports keys list
    """


@keys.command("create")
@click.option("--site", help="The one site the key works on (its account's other sites: 404).")
@click.option("--account", help="An account: the key works on every site of it.")
@click.option("--name", help="A label for the key.")
@click.option(
    "--scope", type=click.Choice(accounts.SCOPES), default="read", show_default=True,
    help="read: exports. write: sending events (POST /api/v1/events), nothing else.",
)  # fmt: skip
@pass_state
def keys_create(state: State, site: str | None, account: str | None, name: str | None, scope: str) -> None:
    """Create an API key for one site (--site) or a whole account (--account) and print it
    (only the key, on stdout). It is not shown again.

    \b
    Example:
        KEY=$(sealexports keys create --site demo --name ci)
        INGEST_KEY=$(sealexports keys create --site demo --scope write --name tracker)
        ALL_SITES=$(sealexports keys create --account acme --name reports)
    """
    if (site is None) == (account is None):
        raise click.UsageError("give --site SITE (one site) or --account NAME (every site), not both")
    click.echo(accounts.create_key(state.conn, site, name, scope, account=account))


@keys.command("list")
@pass_state
def keys_list(state: State) -> None:
    """List keys by prefix (never the keys themselves). `site`: the one site a key works on,
    or * for every site of its account.

    \b
    Example:
        sealexports keys list
    """
    print_table(
        ["prefix", "account", "site", "scope", "name", "created_at", "last_used_at", "revoked_at"],
        [
            (k.prefix, k.account, k.site or "*", k.scope, k.name, k.created_at, k.last_used_at, k.revoked_at)
            for k in accounts.list_keys(state.conn)
        ],
    )


@keys.command("revoke")
@click.argument("prefix")
@pass_state
def keys_revoke(state: State, prefix: str) -> None:
    """Revoke the key starting with PREFIX (as shown by `keys list`).

    \b
    Example:
        sealexports keys revoke sm_AbCdEfGh
    """
    accounts.revoke_key(state.conn, prefix)
    click.echo(f"Revoked {prefix}")
