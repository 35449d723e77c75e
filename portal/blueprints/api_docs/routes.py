"""`/api/openapi.json`: the API's description, made from the same models that validate it, and
`/api/docs`: the same description as a page in the portal's layout (no script needed)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, json

from portal import api
from portal.blueprints.api_docs import reference
from portal.web import render

bp = Blueprint("api_docs", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def openapi() -> Response:
    document = api.openapi_document()
    response = current_app.response_class(
        json.dumps(document, sort_keys=False), mimetype="application/json"
    )
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/docs")
def docs() -> Response:
    document = api.openapi_document()
    context = {
        "operations": reference.operations(document),
        "version": document.get("openapi", ""),
    }
    return render("api_docs/index.html", context)
