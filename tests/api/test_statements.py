"""/api/portal/statements: asked for (202), listed a page at a time, polled until ready."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import tenancy
from portal.models import Statement
from tests.api.conftest import SpecCheck
from tests.conftest import Auth, QueryCounter
from tests.factories import account_named

LIST = "/api/portal/statements"
ONE = "/api/portal/statements/{public_id}"
Headers = Callable[..., dict[str, str]]


def _today(app: Flask) -> str:
    return str(app.extensions["portal.clock"].today().isoformat())


def _run(app: Flask) -> int:
    return int(app.extensions["portal.jobs"].run_due(app.extensions["portal.clock"].now()))


def _count(db: Session) -> int:
    with tenancy.system(db):
        return int(db.scalar(select(func.count(Statement.id))) or 0)


def test_request_then_poll_until_ready(
    app: Flask, client: FlaskClient, auth: Auth, bearer: Headers, spec_check: SpecCheck
) -> None:
    headers = bearer()
    body = {"start_date": "2026-01-01", "end_date": _today(app), "format": "csv"}
    response = client.post(LIST, json=body, headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    asked = spec_check(response, LIST, "post")
    assert asked["state"] == "queued" and asked["download_url"] is None
    _run(app)
    polled = client.get(asked["poll_url"], headers=headers)
    assert polled.status_code == 200
    ready = spec_check(polled, ONE)
    assert ready["state"] == "ready" and ready["progress"] == 100
    # The page's signed link: it opens for its user in the browser (after signing in).
    assert client.get(ready["download_url"]).status_code == 302
    auth.sign_in()
    download = client.get(ready["download_url"])
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    download.close()


def test_the_forms_messages_as_field_errors(
    app: Flask, client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    headers = bearer()
    cases = [
        ({"start_date": "2026-03-01", "end_date": "2026-02-01"}, "end_date"),
        ({"start_date": "2020-01-01", "end_date": "2026-01-01"}, "end_date"),
        ({"start_date": "2026-01-01", "end_date": _today(app), "account_ids": []}, "account_ids"),
    ]
    for body, field in cases:
        response = client.post(LIST, json=body, headers=headers)
        assert response.status_code == 422, body
        problem = spec_check(response, LIST, "post")
        assert field in [e["field"] for e in problem["errors"]]
    bad = client.post(LIST, json={"start_date": "not a date"}, headers=headers)
    assert bad.status_code == 400
    spec_check(bad, LIST, "post")
    assert _count(db) == 0


def test_a_restricted_user_cannot_include_another_account(
    app: Flask, client: FlaskClient, db: Session, bearer: Headers, spec_check: SpecCheck
) -> None:
    east = account_named(db, "Acme East").public_id
    body = {"start_date": "2026-01-01", "end_date": _today(app), "account_ids": [east]}
    admin = client.post(LIST, json=body, headers=bearer())
    restricted = client.post(LIST, json=body, headers=bearer("ap@acme.test"))
    assert admin.status_code == 202
    assert restricted.status_code == 422  # ap@acme.test pays for Acme West only
    problem = spec_check(restricted, LIST, "post")
    assert [e["field"] for e in problem["errors"]] == ["account_ids"]


def test_anothers_statement_is_404(
    app: Flask, client: FlaskClient, bearer: Headers, spec_check: SpecCheck
) -> None:
    body = {"start_date": "2026-01-01", "end_date": _today(app)}
    made = client.post(LIST, json=body, headers=bearer()).get_json()
    theirs = client.get(ONE.format(public_id=made["id"]), headers=bearer("ap@acme.test"))
    assert theirs.status_code == 404
    spec_check(theirs, ONE)


def test_list_pages_with_a_cursor_in_bounded_queries(
    app: Flask,
    client: FlaskClient,
    bearer: Headers,
    spec_check: SpecCheck,
    count_queries: QueryCounter,
) -> None:
    headers = bearer()
    costs = []
    for day in range(1, 8):
        body = {"start_date": f"2026-01-0{day}", "end_date": _today(app), "format": "csv"}
        assert client.post(LIST, json=body, headers=headers).status_code == 202
        app.extensions["portal.clock"].advance(__import__("datetime").timedelta(seconds=1))
        before = count_queries.count
        assert client.get(f"{LIST}?limit=3", headers=headers).status_code == 200
        costs.append(count_queries.count - before)
    assert len(set(costs)) == 1 and costs[0] <= 5, costs  # not more with more statements
    seen: list[str] = []
    url = f"{LIST}?limit=3"
    while True:
        page = spec_check(client.get(url, headers=headers), LIST)
        seen += [s["id"] for s in page["statements"]]
        if page["page"]["next_cursor"] is None:
            break
        url = f"{LIST}?limit=3&after={page['page']['next_cursor']}"
    assert len(seen) == len(set(seen)) == 7
    for cursor in ("nope", "W10", "WyJ4IiwxXQ"):
        response = client.get(f"{LIST}?after={cursor}", headers=headers)
        assert response.status_code == 400, cursor
        spec_check(response, LIST)


@pytest.mark.parametrize("path", [LIST, ONE.format(public_id="stm_x")])
def test_no_credentials_is_401(client: FlaskClient, spec_check: SpecCheck, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    spec_check(response, LIST if path == LIST else ONE)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
dates = st.one_of(st.dates().map(lambda d: d.isoformat()), json_values)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"start_date": dates, "end_date": dates},
        optional={
            "format": st.sampled_from(["pdf", "xlsx", "csv", "doc", ""]),
            "account_ids": st.one_of(json_values, st.lists(st.text(max_size=30), max_size=3)),
        },
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_any_body_is_answered_by_the_spec_never_500(
    client: FlaskClient, bearer: Headers, spec_check: SpecCheck, body: Any
) -> None:
    response = client.post(LIST, json=body, headers=bearer())
    assert response.status_code in (202, 400, 422), response.get_data(as_text=True)
    spec_check(response, LIST, "post")


def test_a_body_that_is_not_json_is_refused(
    client: FlaskClient, bearer: Headers, spec_check: SpecCheck
) -> None:
    response = client.post(LIST, data={"start_date": "2026-01-01"}, headers=bearer())
    assert response.status_code in (400, 415)  # SpecTree or the view refuses it; no 500
    spec_check(response, LIST, "post")
