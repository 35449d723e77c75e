"""The language switcher: remembered in the session, and in the profile when signed in."""

from __future__ import annotations

from flask import Blueprint, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from portal.i18n import LANGUAGE_KEY, SUPPORTED_LOCALES
from portal.web import safe_next

bp = Blueprint("language", __name__)


@bp.post("/language")
def change() -> Response:
    language = request.form.get("language", "")
    back = safe_next(request.form.get("next")) or url_for("dashboard.index")
    if language not in SUPPORTED_LOCALES:
        return redirect(back)
    session[LANGUAGE_KEY] = language
    user = g.get("user")
    if user is not None:
        user.locale = language  # kept by the request's commit (portal/web.py)
    return redirect(back)
