"""The signed-in home: what is owed and how much credit is left."""

from __future__ import annotations

from flask import Blueprint, redirect, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock
from portal.extensions import db_session
from portal.runtime import current_runtime
from portal.services import payment_methods
from portal.services.dashboard import account_summary, aging, recent_activity, viewing
from portal.web import render

bp = Blueprint("dashboard", __name__, url_prefix="/portal")


@bp.get("")
@bp.get("/")
def root() -> Response:
    return redirect(url_for("dashboard.index"))


@bp.get("/dashboard")
@login_required
def index() -> Response:
    db = db_session()
    today = clock.today()
    buckets = aging(db, today)
    context = {
        "summary": account_summary(db, today),
        "viewing": viewing(db),
        "aging": buckets,
        "aging_max": max([b.amount for b in buckets] + [1]),
        "activity": recent_activity(db),
        # One indexed query: the cards this user may manage that expire within 60 days.
        "expiring_methods": payment_methods.expiring(
            db, current_user, current_runtime().gateway_name, today
        ),
        "today": today,
    }
    return render("dashboard/index.html", context)
