"""`/api/openapi.json`: the API's description, made from the same models that validate it."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, json

from portal import api

bp = Blueprint("api_docs", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def openapi() -> Response:
    document = api.openapi_document()
    response = current_app.response_class(
        json.dumps(document, sort_keys=False), mimetype="application/json"
    )
    response.headers["Cache-Control"] = "no-cache"
    return response
