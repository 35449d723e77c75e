"""/portal/security: the user's sessions, and ending them from elsewhere."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Auth, csrf_token

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _second_device(app: Flask, email: str = "admin@acme.test") -> FlaskClient:
    other = app.test_client()
    other.environ_base["HTTP_USER_AGENT"] = FIREFOX
    Auth(app, other).sign_in(email)
    return other


def _session_ids(page: str) -> list[str]:
    return re.findall(r"/portal/security/sessions/(ses_[\w-]+)/end", page)


def test_lists_sessions_and_ends_another_one(app: Flask, client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    other = _second_device(app)
    page = client.get("/portal/security").get_data(as_text=True)
    assert "Firefox on Windows" in page and "This device" in page
    [other_id] = _session_ids(page)
    token = csrf_token(client, "/portal/security")
    response = client.post(f"/portal/security/sessions/{other_id}/end", data={"csrf_token": token})
    assert response.headers["Location"] == "/portal/security"
    assert other.get("/portal/dashboard").status_code == 302  # refused on its next request
    assert client.get("/portal/dashboard").status_code == 200


def test_sign_out_all_others(app: Flask, client: FlaskClient, auth: Auth) -> None:
    auth.sign_in()
    others = [_second_device(app), _second_device(app)]
    token = csrf_token(client, "/portal/security")
    client.post("/portal/security/sessions/end-others", data={"csrf_token": token})
    assert all(o.get("/portal/dashboard").status_code == 302 for o in others)
    assert client.get("/portal/dashboard").status_code == 200
    assert _session_ids(client.get("/portal/security").get_data(as_text=True)) == []


def test_another_users_session_is_not_found(app: Flask, client: FlaskClient, auth: Auth) -> None:
    other = _second_device(app, "admin@globex.test")
    globex_second = _second_device(app, "admin@globex.test")
    foreign = _session_ids(globex_second.get("/portal/security").get_data(as_text=True))
    assert foreign
    auth.sign_in()
    token = csrf_token(client, "/portal/security")
    response = client.post(
        f"/portal/security/sessions/{foreign[0]}/end", data={"csrf_token": token}
    )
    assert response.status_code == 404
    assert other.get("/portal/dashboard").status_code == 200


def test_security_page_needs_sign_in(client: FlaskClient) -> None:
    assert client.get("/portal/security").status_code == 302
