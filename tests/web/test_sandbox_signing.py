"""The sandbox's webhooks are signed with a key of this instance's own: nobody can forge one.

The development key used to be a constant in the source, so anyone could sign a sandbox
`charge.succeeded` for a `make run` instance and mark invoices paid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from portal import config
from portal.gateways import sandbox
from tests.conftest import Backend
from tests.web.security_helpers import app_as, dispose, shared_transaction

OLD_DEVELOPMENT_KEY = "dev-only-secret-not-for-production"  # what the source used to hold


@pytest.fixture
def development(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    """`make run`: development, no SECRET_KEY set (its key file under a folder of the test's)."""
    monkeypatch.setattr(config, "INSTANCE_DIR", tmp_path / "instance")
    app = app_as(backend, "development", secret_key="")
    with shared_transaction(app):
        yield app
    dispose(app)


def _charge_succeeded() -> bytes:
    event = {
        "id": f"evt_forged_{time.time_ns()}",
        "type": "charge.succeeded",
        "data": {"reference": "sandbox_ch_anything", "status": "succeeded"},
    }
    return json.dumps(event).encode()


def _deliver(app: Flask, body: bytes, key: str) -> int:
    signature = sandbox.sign(body, sandbox.signing_secret(key), int(time.time()))
    answer = app.test_client().post(
        "/webhooks/sandbox",
        data=body,
        headers={sandbox.SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
    )
    return answer.status_code


def test_a_webhook_signed_with_the_old_constant_is_refused(
    development: Flask, tmp_path: Path
) -> None:
    assert development.config["SECRET_KEY"] != OLD_DEVELOPMENT_KEY
    assert _deliver(development, _charge_succeeded(), OLD_DEVELOPMENT_KEY) == 400
    # Only this instance's own key, kept in its instance folder, signs a webhook it accepts.
    own = (tmp_path / "instance" / "secret_key").read_text().strip()
    assert own == development.config["SECRET_KEY"]
    assert _deliver(development, _charge_succeeded(), own) == 200
