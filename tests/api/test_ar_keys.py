"""`flask --app wsgi ar-keys create|list|revoke`: operator keys for /api/ar/."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session


def _key(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("ark_"))


def test_create_list_revoke(app: Flask, client: FlaskClient, db: Session) -> None:
    cli = app.test_cli_runner()
    created = cli.invoke(args=["ar-keys", "create", "ledger"])
    assert created.exit_code == 0, created.output
    raw = _key(created.output)
    headers = {"Authorization": f"Bearer {raw}"}
    assert client.get("/api/ar/events", headers=headers).status_code == 200

    again = cli.invoke(args=["ar-keys", "create", "ledger"])
    assert again.exit_code != 0 and "exists" in again.output
    listed = cli.invoke(args=["ar-keys", "list"])
    assert "ledger" in listed.output and "active" in listed.output
    assert raw not in listed.output  # shown once, at creation

    revoked = cli.invoke(args=["ar-keys", "revoke", "ledger"])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert client.get("/api/ar/events", headers=headers).status_code == 401
    assert "already" in cli.invoke(args=["ar-keys", "revoke", "ledger"]).output
    assert cli.invoke(args=["ar-keys", "revoke", "nobody"]).exit_code != 0
    assert "revoked" in cli.invoke(args=["ar-keys", "list"]).output
    assert cli.invoke(args=["ar-keys", "create", " "]).exit_code != 0
