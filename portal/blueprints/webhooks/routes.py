"""Gateways' webhooks: signature checked first, then applied once whatever the order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from flask import Blueprint, abort, jsonify, request
from werkzeug.wrappers import Response

from portal.extensions import csrf, db_session
from portal.gateways import InvalidSignature
from portal.payments import webhooks
from portal.runtime import current_runtime

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _receive(name: str) -> Response:
    if current_runtime().gateway_name != name:
        abort(404)
    session = db_session()
    try:
        outcome = webhooks.receive(
            current_runtime(),
            session,
            request.get_data(cache=False),
            cast(Mapping[str, str], request.headers),
        )
    except InvalidSignature:
        session.rollback()
        response = jsonify(error="invalid signature")
        response.status_code = 400
        return response
    return jsonify(received=True, outcome=outcome.value)  # committed at the request's edge


@bp.post("/stripe")
@csrf.exempt
def stripe() -> Response:
    return _receive("stripe")


@bp.post("/sandbox")
@csrf.exempt
def sandbox() -> Response:
    return _receive("sandbox")
