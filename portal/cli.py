"""Operator commands: `flask --app wsgi db upgrade | seed demo | seed clean | flags set ... |
jobs worker | jobs drain | jobs list | jobs sweep | keys reencrypt | users reset-mfa EMAIL |
tallies check | disputes list|show|attachment|reply|resolve|reject | import FILE |
ar-keys create|list|revoke`."""

from __future__ import annotations

import getpass
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from portal import clock, db, flags, migrate, tenancy
from portal import disputes as dispute_app
from portal import security_alerts as alerts
from portal.extensions import Database, settings
from portal.models import DEFAULT_FLAGS, ArKey, Dispute, FeatureFlag, PortalUser
from portal.runtime import SEND_INVITATION, SWEEPS, current_runtime
from portal.services import api_tokens, audit, auth, mfa, outbox, receivables, tallies, users
from portal.services import disputes as dispute_service
from portal.services import seed as seed_service
from portal.services.disputes import ActionRefusal, Upload
from portal.services.money import AmountError, format_money, parse_amount
from portal.services.passwords import hasher
from portal.services.storage import StorageError
from workers.queue import job_name, resolve

log = logging.getLogger(__name__)


def register_cli(app: Flask) -> None:
    _db_commands(app)
    _seed_commands(app)
    _flags_commands(app)
    _jobs_commands(app)
    _keys_commands(app)
    _users_commands(app)
    _tallies_commands(app)
    _disputes_commands(app)
    _import_command(app)
    _ar_keys_commands(app)


def _db_commands(app: Flask) -> None:
    @app.cli.group("db")
    def db_group() -> None:
        """Database schema."""

    @db_group.command("upgrade")
    def db_upgrade() -> None:
        """Apply every migration."""
        migrate.upgrade(settings().database_url)
        click.echo("database is at the latest schema")

    @db_group.command("downgrade")
    @click.argument("revision")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def db_downgrade(revision: str, yes: bool) -> None:
        """Undo the migrations after REVISION (its id, e.g. 0021; `-- -1` for one step). What
        they added (tables, columns, their data) is dropped: back up first."""
        if not yes:
            click.confirm(
                f"Undo the migrations after {revision}? What they added is dropped", abort=True
            )
        migrate.downgrade(revision, settings().database_url)
        click.echo(f"database downgraded to {revision}")


def _seed_commands(app: Flask) -> None:
    @app.cli.group("seed")
    def seed_group() -> None:
        """Demo data."""

    @seed_group.command("demo")
    def seed_demo() -> None:
        """Create the contract's demo companies, users, invoices and payments (idempotent)."""
        config = settings()
        with Database.get().sessionmaker() as session:
            created = seed_service.DemoSeeder(
                session,
                today=clock.today(),
                ph=hasher(config.argon2_time_cost, config.argon2_memory_cost),
                secret_key=config.secret_key,
                storage_dir=Path(config.storage_dir),
            ).run()
            session.commit()
        click.echo(f"seeded: {', '.join(created)}" if created else "demo data already present")

    @seed_group.command("clean")
    def seed_clean() -> None:
        """Remove the demo companies and everything they own."""
        with Database.get().sessionmaker() as session:
            removed = seed_service.purge_companies(session)
            session.commit()
        click.echo(f"removed {removed} demo companies")


FLAG_EFFECTS = {
    "m25_portal": "the whole portal (off: maintenance page, API 503, customer mail jobs wait)",
    "m25_portal_payment": "online payment (off: pay actions gone, scheduled charges wait)",
    "m25_portal_statements": "statements (off: page, API and downloads refused)",
    "m25_portal_documents": "documents library (off: page, API and downloads refused)",
}


def _operator() -> str:
    """Who ran a command, for the log: the login behind sudo, else the user."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        who = f"uid {os.getuid()}"
    return os.environ.get("SUDO_USER") or who


def _flags_commands(app: Flask) -> None:
    @app.cli.group("flags")
    def flags_group() -> None:
        """Feature flags (the runbook's rollout switches)."""

    @flags_group.command("set")
    @click.argument("assignment")
    def flags_set(assignment: str) -> None:
        """NAME=on|off: every web and job process sees it within FLAGS_REFRESH_SECONDS."""
        name, _, value = assignment.partition("=")
        known = ", ".join(DEFAULT_FLAGS)
        if name not in DEFAULT_FLAGS:
            raise click.ClickException(
                f"unknown flag {name!r}: use NAME=on|off with NAME one of: {known}"
            )
        if value not in {"on", "off"}:
            raise click.ClickException(
                f"{name} takes on or off, not {value!r}: use NAME=on|off with NAME one of: {known}"
            )
        with Database.get().sessionmaker() as session:
            flag = session.get(FeatureFlag, name)
            before = DEFAULT_FLAGS[name] if flag is None else flag.enabled
            flag = flag or FeatureFlag(name=name, enabled=before)
            flag.enabled = value == "on"
            session.add(flag)
            session.commit()
        flags.cache().forget()
        log.warning(
            "flag %s set %s (was %s) by %s",
            name,
            value,
            "on" if before else "off",
            _operator(),
        )
        refresh = settings().flags_refresh_seconds
        click.echo(f"{name} is {value} (every process sees it within {refresh:g} s)")

    @flags_group.command("list")
    def flags_list() -> None:
        """Every known flag, on or off, and what it switches."""
        with Database.get().sessionmaker() as session, tenancy.system(session):
            current = flags.read(session)
        for name, on in current.items():
            click.echo(f"{name}={'on' if on else 'off'}  {FLAG_EFFECTS.get(name, '')}".rstrip())


def _jobs_commands(app: Flask) -> None:
    @app.cli.group("jobs")
    def jobs_group() -> None:
        """Background jobs."""

    @jobs_group.command("worker")
    @click.option("--burst", is_flag=True, help="Run what is due now, then stop.")
    def jobs_worker(burst: bool) -> None:
        """An RQ worker on REDIS_URL, with the dispatcher that hands it the outbox's work and
        runs the recurring sweep (workers/worker.py)."""
        resolve("workers.worker.serve")(app, burst=burst)

    @jobs_group.command("drain")
    def jobs_drain() -> None:
        """Run every piece of work that is due, here, without Redis (for when Redis is gone)."""
        click.echo(f"{resolve('workers.dispatch.drain')(app)} piece(s) of work run")

    @jobs_group.command("list")
    def jobs_list() -> None:
        """The outbox's unfinished work: when, what, its state and attempts."""
        with Database.get().sessionmaker() as session:
            for row in outbox.unfinished(session):
                click.echo(
                    f"{row.id}\t{row.run_after.isoformat()}\t{job_name(row.job)}\t"
                    f"{row.state.value}\t{row.attempts}\t{row.outcome or ''}"
                )

    @jobs_group.command("sweep")
    def jobs_sweep() -> None:
        """Run the sweeps once, here (the worker's own functions, by name: portal/runtime.py)."""
        click.echo(str({name: resolve(job)() for name, job in SWEEPS.items()}))


def _ar_keys_commands(app: Flask) -> None:
    """Operator keys of the receivables system (`Authorization: Bearer ark_…` on /api/ar/)."""

    @app.cli.group("ar-keys")
    def ar_keys_group() -> None:
        """Operator keys for /api/ar/: create (shown once), list, revoke."""

    @ar_keys_group.command("create")
    @click.argument("name")
    def ar_keys_create(name: str) -> None:
        """Create a key named NAME and print it (once: only its hash is kept)."""
        name = name.strip()
        if not name or len(name) > 100:
            raise click.ClickException("give a name of 1 to 100 characters")
        with Database.get().sessionmaker() as session:
            if session.scalar(select(ArKey.id).where(ArKey.name == name)) is not None:
                raise click.ClickException(f"a key named {name} exists: revoke it or pick another")
            _key, raw = api_tokens.create_key(session, name=name, now=clock.now())
            session.commit()
        click.echo(raw)
        click.echo(f"key {name} created: store it now, it is not shown again", err=True)

    @ar_keys_group.command("list")
    def ar_keys_list() -> None:
        """Every key: name, prefix, created, last used, revoked."""
        with Database.get().sessionmaker() as session:
            for key in session.scalars(select(ArKey).order_by(ArKey.id)):
                used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                click.echo(
                    f"{key.name}  {key.prefix}…  created {key.created_at:%Y-%m-%d}  "
                    f"used {used}  {state}"
                )

    @ar_keys_group.command("revoke")
    @click.argument("name")
    def ar_keys_revoke(name: str) -> None:
        """Revoke the key named NAME (at once: its next request answers 401)."""
        with Database.get().sessionmaker() as session:
            key = session.scalar(select(ArKey).where(ArKey.name == name))
            if key is None:
                raise click.ClickException(f"no key named {name}")
            if key.revoked_at is not None:
                click.echo(f"key {name} was already revoked")
                return
            key.revoked_at = clock.now()
            session.commit()
        click.echo(f"key {name} revoked")


def _keys_commands(app: Flask) -> None:
    @app.cli.group("keys")
    def keys_group() -> None:
        """SECRET_KEY rotation (docs/operations.md)."""

    @keys_group.command("reencrypt")
    def keys_reencrypt() -> None:
        """Store every TOTP secret under the current SECRET_KEY (run with the old key in
        SECRET_KEY_FALLBACKS; afterwards the old key is no longer needed for them)."""
        with Database.get().sessionmaker() as session:
            rewritten, unreadable = mfa.reencrypt_secrets(session, keys=settings().keyring)
            session.commit()
        click.echo(f"re-encrypted {rewritten} secret(s) under the current key")
        if unreadable:
            raise click.ClickException(
                f"{unreadable} secret(s) open with none of the configured keys: add the key "
                "they were made with to SECRET_KEY_FALLBACKS, or reset those users' two-step "
                "verification (flask --app wsgi users reset-mfa EMAIL)"
            )


def _users_commands(app: Flask) -> None:
    @app.cli.group("users")
    def users_group() -> None:
        """Portal users."""

    @users_group.command("reset-mfa")
    @click.argument("email")
    def users_reset_mfa(email: str) -> None:
        """Forget EMAIL's two-step verification and recovery codes and end their sessions: they
        enrol again at their next sign-in (after their password)."""
        with Database.get().sessionmaker() as session:
            user = auth.find_user_by_email(session, email)
            if user is None:
                raise click.ClickException(f"no user with the e-mail {email}")
            request = audit.RequestInfo(user_agent="flask users reset-mfa")
            users.reset_mfa(session, user, now=clock.now(), request=request, by="operator")
            alerts.alert(current_runtime(), session, user, alerts.Kind.MFA_RESET, request=request)
            session.commit()
        click.echo(f"{user.email} will set up two-step verification at their next sign-in")


def _tallies_commands(app: Flask) -> None:
    @app.cli.group("tallies")
    def tallies_group() -> None:
        """The invoice tallies the database keeps (portal.services.tallies)."""

    @tallies_group.command("check")
    def tallies_check() -> None:
        """Compare every company's tallies with a count of its invoices; exit 1 if they differ."""
        with Database.get().sessionmaker() as session, tenancy.system(session):
            kept, counted = tallies.kept(session), tallies.recount(session)
        differ = sorted(set(kept) ^ set(counted) | {k for k in kept if kept[k] != counted.get(k)})
        for key in differ:
            account, currency, status, due = key
            click.echo(
                f"account {account} {currency} {status} due {due}: "
                f"kept {kept.get(key, (0, 0))}, counted {counted.get(key, (0, 0))}"
            )
        if differ:
            raise click.ClickException(f"{len(differ)} tallies differ from the invoices")
        click.echo(f"{len(kept)} tallies match the invoices")


def _disputes_commands(app: Flask) -> None:
    """The receivables team's side of disputes (portal/disputes): answer, resolve, reject."""

    @app.cli.group("disputes")
    def disputes_group() -> None:
        """Customer disputes: list them, reply, resolve with a credit note, reject."""

    def _find(session: Session, public_id: str) -> Dispute:
        found = dispute_service.get_dispute(session, public_id)
        if found is None:
            raise click.ClickException(f"no dispute {public_id}")
        return found

    @disputes_group.command("list")
    def disputes_list() -> None:
        """The newest disputes (200 at most), open ones and closed ones."""
        with Database.get().sessionmaker() as session, tenancy.system(session):
            for dispute in dispute_service.list_all(session):
                invoice = dispute.invoice
                click.echo(
                    f"{dispute.public_id}  {invoice.number}  {dispute.status.value}  "
                    f"{dispute.reason.value}  {dispute.amount_disputed} {invoice.currency}  "
                    f"{dispute.created_at:%Y-%m-%d}"
                )

    @disputes_group.command("show")
    @click.argument("public_id")
    def disputes_show(public_id: str) -> None:
        """A dispute: its invoice, state and amount, then the thread oldest first (author,
        time, text, and each attachment's id, name and size)."""
        with Database.get().sessionmaker() as session, tenancy.system(session):
            dispute = _find(session, public_id)
            invoice = dispute.invoice
            click.echo(f"dispute  {dispute.public_id}")
            click.echo(f"invoice  {invoice.number} ({invoice.status.value})")
            click.echo(f"status   {dispute.status.value}")
            click.echo(f"reason   {dispute.reason.value}")
            click.echo(f"amount   {_amount(dispute.amount_disputed, invoice.currency)}")
            click.echo(f"opened   {dispute.created_at:%Y-%m-%d %H:%M} UTC")
            if dispute.resolved_at is not None:
                click.echo(f"closed   {dispute.resolved_at:%Y-%m-%d %H:%M} UTC")
            if dispute.outcome_reason:
                click.echo(f"outcome  {dispute.outcome_reason}")
            for message in sorted(dispute.messages, key=lambda m: (m.created_at, m.id)):
                author = message.author
                who = f"{author.name} <{author.email}>" if author else "Billing team"
                click.echo(f"\n--- {message.created_at:%Y-%m-%d %H:%M} UTC  {who}")
                if message.body:
                    click.echo(message.body)
                for attachment in message.attachments:
                    click.echo(
                        f"[attachment {attachment.public_id}] {attachment.filename} "
                        f"({attachment.content_type}, {attachment.size_bytes} bytes)"
                    )

    @disputes_group.command("attachment")
    @click.argument("public_id")
    @click.option(
        "--out",
        "out",
        required=True,
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        help="The file to write.",
    )
    @click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
    def disputes_attachment(public_id: str, out: Path, force: bool) -> None:
        """Write an attachment (its id is in `disputes show`) to OUT."""
        if out.exists() and not force:
            raise click.ClickException(f"{out} exists: give another --out, or --force")
        with Database.get().sessionmaker() as session, tenancy.system(session):
            found = dispute_service.attachment_for_download(session, public_id)
        if found is None:
            raise click.ClickException(f"no attachment {public_id}")
        # Written beside OUT, then renamed over it: a failure leaves OUT as it was.
        partial = out.with_name(f".{out.name}.part")
        try:
            with current_runtime().store.open(found.key) as source, partial.open("wb") as target:
                shutil.copyfileobj(source, target)
            partial.replace(out)
        except (OSError, StorageError) as error:
            partial.unlink(missing_ok=True)
            raise click.ClickException(f"could not write {out}: {error}") from error
        click.echo(f"wrote {found.filename} to {out}")

    @disputes_group.command("reply")
    @click.argument("public_id")
    @click.option("--message", required=True, help="The reply's text.")
    @click.option("--attach", "attach", multiple=True, type=click.Path(exists=True, dir_okay=False))
    def disputes_reply(public_id: str, message: str, attach: tuple[str, ...]) -> None:
        """Answer a dispute as the billing team (it is under review from then on)."""
        with ExitStack() as files, _unit() as session:
            uploads = [_open_attachment(files, Path(p)) for p in attach]
            outcome = dispute_app.staff_reply(
                current_runtime(),
                session,
                _find(session, public_id),
                body=message,
                uploads=uploads,
                now=clock.now(),
            )
            if outcome.refusal is not None:
                raise click.ClickException(f"refused: {outcome.refusal.value}")
            session.commit()
        click.echo(f"replied to {public_id}")

    @disputes_group.command("resolve")
    @click.argument("public_id")
    @click.option("--credit", required=True, help="The credit, e.g. 120.00 (invoice currency).")
    @click.option("--reason", default="", help="Why, shown to the customer.")
    def disputes_resolve(public_id: str, credit: str, reason: str) -> None:
        """Resolve a dispute with a credit note against its invoice (its balance falls)."""
        with _unit() as session:
            dispute = _find(session, public_id)
            amount = parse_amount(credit, dispute.invoice.currency, "en")
            if isinstance(amount, AmountError):
                raise click.ClickException(f"not an amount: {credit} ({amount.value})")
            outcome = dispute_app.resolve_with_credit(
                current_runtime(), session, dispute, amount=amount, reason=reason, now=clock.now()
            )
            if outcome.refusal is not None:
                why = outcome.credit_refusal or outcome.refusal
                raise click.ClickException(f"refused: {why.value}{_explain(why.value)}")
            session.commit()
            note = dispute.credit_note
            click.echo(f"{public_id} resolved: credit note {note.number if note else '?'}")

    @disputes_group.command("reject")
    @click.argument("public_id")
    @click.option("--reason", required=True, help="Why, shown to the customer.")
    def disputes_reject(public_id: str, reason: str) -> None:
        """Reject a dispute: its invoice is due again."""
        if not reason.strip():
            raise click.ClickException("give a --reason: the customer reads why it was rejected")
        with _unit() as session:
            outcome = dispute_app.reject(
                current_runtime(),
                session,
                _find(session, public_id),
                reason=reason,
                now=clock.now(),
            )
            if outcome.refusal is not None:
                why = outcome.refusal.value
                raise click.ClickException(f"refused: {why}{_explain(why)}")
            session.commit()
        click.echo(f"{public_id} rejected")


def _import_command(app: Flask) -> None:
    @app.cli.command("import")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--kind", type=click.Choice(receivables.KINDS), help="What a CSV file holds.")
    @click.option(
        "--format", "fmt", type=click.Choice(["csv", "json"]), help="Default: by the suffix."
    )
    @click.option("--dry-run", is_flag=True, help="Check and apply, then roll back.")
    @click.option(
        "--invite/--no-invite",
        default=True,
        help="Mail new users their invitation (through the outbox). Default: yes.",
    )
    def import_file(
        file: Path, kind: str | None, fmt: receivables.Format | None, dry_run: bool, invite: bool
    ) -> None:
        """Import FILE from the receivables system: companies, billing accounts, users,
        invoices with lines, credit notes and documents (docs/receivables.md). All or
        nothing: any bad row and nothing is written; every bad row is listed; exit 1."""
        is_csv = fmt == "csv" or (fmt is None and file.suffix.lower() == ".csv")
        if is_csv and kind is None:
            raise click.UsageError("a CSV file holds one kind of record: give --kind")
        batch = receivables.read_file(file, kind=kind, fmt=fmt)
        runtime = current_runtime()
        with db.unit_of_work(writes=True), Database.get().sessionmaker() as session:
            report = receivables.upsert(
                session, batch, now=clock.now(), store=runtime.store, base_dir=file.parent
            )
            if not report.ok:
                session.rollback()
                for error in report.errors:
                    click.echo(str(error), err=True)
                click.echo(
                    f"{file}: {len(report.errors)} bad row(s); nothing was imported", err=True
                )
                raise SystemExit(1)
            if dry_run:
                session.rollback()
                receivables.discard_files(runtime.store, report)
                click.echo(f"dry run, nothing written: {report.summary()}")
                return
            try:
                if invite:
                    with tenancy.system(session):
                        for user_id in report.invited:
                            user = session.get(PortalUser, user_id)
                            locale = user.company.locale if user is not None else "en"
                            runtime.hand_off(session, SEND_INVITATION, user_id, locale)
                session.commit()
            except BaseException:
                session.rollback()
                receivables.discard_files(runtime.store, report)
                raise
        click.echo(f"imported {file}: {report.summary()}")
        if report.invited:
            mailed = "invitations mailed" if invite else "not mailed (--no-invite)"
            click.echo(f"{len(report.invited)} new user(s) invited, {mailed}")


# What a refusal of the receivables team's commands means, where its name does not say it.
_EXPLAINED = {
    ActionRefusal.CLOSED.value: " (the dispute already has its outcome: nothing was changed)",
    ActionRefusal.NO_REASON.value: " (give a --reason: the customer reads it)",
    "too_much": " (more than the invoice owes, less what payments on their way hold)",
    "duplicate": " (that credit note number is taken: run the command again)",
}


def _explain(refusal: str) -> str:
    return _EXPLAINED.get(refusal, "")


@contextmanager
def _unit() -> Iterator[Session]:
    """A session across companies for one of the receivables team's commands; a write that
    collides with another at the same moment (a unique number taken, a lock given up) is
    rolled back and said in a sentence, never a traceback."""
    with Database.get().sessionmaker() as session, tenancy.system(session):
        try:
            yield session
        except (IntegrityError, OperationalError) as error:
            session.rollback()
            raise click.ClickException(
                "another change to this dispute or its invoice was saved at the same moment: "
                "nothing was changed; look at it again (disputes show) and run the command again"
            ) from error


def _amount(minor_units: int, currency: str) -> str:
    return format_money(minor_units, currency, "en")


def _open_attachment(files: ExitStack, path: Path) -> Upload:
    """A file for a reply, open for reading in chunks; one over the customers' limit (10 MB)
    or one that cannot be read is refused in a sentence."""
    try:
        stream = files.enter_context(path.open("rb"))
        size = os.fstat(stream.fileno()).st_size
    except OSError as error:
        raise click.ClickException(f"could not read {path}: {error.strerror or error}") from error
    if size > dispute_service.MAX_ATTACHMENT:
        raise click.ClickException(f"{path.name} is larger than 10 MB: attach a smaller file")
    return Upload(path.name, stream, size)
