"""Notifications on the web (the domain is portal/services/notifications.py): the preferences
page, the notification centre with its unread badge in the header, and the one-click
unsubscribe page a mail links to (no sign-in: the signed link is the authority)."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, flash, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from portal import clock, i18n
from portal.blueprints.notifications.forms import PreferencesForm, field_name
from portal.extensions import csrf, db_session, limiter, settings
from portal.models import NotificationChannel, NotificationTopic
from portal.notifications import messages
from portal.services import notifications
from portal.web import go, is_htmx, or_404, render, request_info, safe_next

bp = Blueprint("notifications", __name__)
PREFERENCES = {"notification-preferences": "notifications/_preferences.html"}
LIST = {"notification-list": "notifications/_list.html"}


# preferences -------------------------------------------------------------------------------


def _preferences_page(form: PreferencesForm, status: int = 200) -> Response:
    context = {
        "form": form,
        "topics": [(topic, messages.topic_label(topic)) for topic in NotificationTopic],
        "channels": list(NotificationChannel),
        "field_name": field_name,
        "always_on": notifications.ALWAYS_ON,
    }
    return render("notifications/show.html", context, fragments=PREFERENCES, status=status)


@bp.route("/portal/notifications", methods=["GET", "POST"])
@login_required
def show() -> Response:
    db = db_session()
    form = PreferencesForm()
    if not form.is_submitted():
        form.fill(
            notifications.preferences(db, current_user), notifications.remind_days(db, current_user)
        )
        return _preferences_page(form)
    if not form.validate():
        return _preferences_page(form, status=422)
    notifications.update_preferences(
        db, current_user, form.wanted(), form.remind_days.data, request=request_info()
    )
    flash(_("Notification preferences updated successfully"), "info")
    return go(url_for("notifications.show"))


# the centre --------------------------------------------------------------------------------


def _page_number(value: str | None) -> int:
    try:
        return min(max(1, int(value or "1")), 10_000) if (value or "1").isascii() else 1
    except ValueError:
        return 1


def _centre(page_number: int, news: str | None = None) -> Response:
    db = db_session()
    page = notifications.inbox(db, current_user, page_number)
    locale = i18n.format_locale()
    items = [
        (item, messages.render(item.topic, item.params, locale), safe_next(item.link))
        for item in page.items
    ]
    context: dict[str, Any] = {"page": page, "items": items, "news": news}
    return render("notifications/inbox.html", context, fragments=LIST)


@bp.get("/portal/notifications/inbox")
@login_required
def inbox() -> Response:
    return _centre(_page_number(request.args.get("page")))


def _after_marking(news: str) -> Response:
    """htmx gets the list again (the header's count out of band); a plain form goes back to
    the page it was posted from, the news as a toast."""
    number = _page_number(request.form.get("page"))
    if is_htmx():
        return _centre(number, news)
    flash(news, "info")
    return go(url_for("notifications.inbox", page=number if number > 1 else None))


@bp.post("/portal/notifications/inbox/<public_id>/read")
@login_required
def mark_read(public_id: str) -> Response:
    db = db_session()
    found = or_404(notifications.find(db, current_user, public_id), _("Notification not found."))
    notifications.mark_read(db, current_user, [found], clock.now())
    return _after_marking(_("Notification marked as read."))


@bp.post("/portal/notifications/inbox/read-all")
@login_required
def mark_all_read() -> Response:
    notifications.mark_all_read(db_session(), current_user, clock.now())
    return _after_marking(_("All notifications marked as read."))


# one-click unsubscribe ---------------------------------------------------------------------


UNSUBSCRIBE_LIMIT = "10 per minute"


def _unsubscribe_key() -> str:
    """The link's own allowance, not the IP's: RFC 8058 one-click POSTs come from a mail
    provider's few shared servers on behalf of many recipients, and the signed token, not
    the address posting it, is the authority."""
    token = str((request.view_args or {}).get("token", ""))
    return "unsubscribe:" + hashlib.sha256(token.encode()).hexdigest()[:32]


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: a mail client posts with no cookie and no token; the link is signed
@limiter.limit(UNSUBSCRIBE_LIMIT, methods=["POST"], key_func=_unsubscribe_key)
def unsubscribe(token: str) -> Response:
    db = db_session()
    keys = settings().keyring
    link = notifications.read_unsubscribe(token, keys=keys, now=clock.now())
    user = notifications.unsubscriber(db, link, keys=keys) if link is not None else None
    if link is None or user is None:
        return render("notifications/unsubscribe.html", {"state": "invalid"}, status=404)
    if link.topic in notifications.ALWAYS_ON:  # security alerts cannot be turned off
        context = {"state": "always_on", "topic": messages.topic_label(link.topic)}
        return render("notifications/unsubscribe.html", context, status=409)
    context = {
        "state": "ask",
        "topic": messages.topic_label(link.topic),
        "email": notifications.masked_email(user.email),
    }
    if request.method == "POST":
        notifications.unsubscribe(db, user, link.topic, request=request_info())
        context["state"] = "done"
    return render("notifications/unsubscribe.html", context)
