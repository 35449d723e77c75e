"""Cards about to expire: told once per card and expiry to those who may manage it.

The hourly job `workers.jobs.send_card_expiry_notices` lists the active users of every company
(`reminders.recipients`), then for each, in a session bound to their scope, asks `tell`: the
configured gateway's cards they may manage (`payment_methods.may_manage`: the one who added it,
and the company's admins) that are expiring by the one rule (`payment_methods.is_expiring`,
their own "today") are told through `notify` as CARD_EXPIRING, keyed
`card:<method>:<YYYY-MM>` (a card replaced by one with a later expiry is a new key), with a link
to the payment methods page; within LAST_CALL days of the end of its month (or once it has
ended), if still there, once more (`card:<method>:<YYYY-MM>:last`): at most two notices. The
UNIQUE (user, topic, key) makes a second or concurrent run tell nothing more, and preferences
are honoured by `notify`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from portal.models import NotificationTopic, PortalUser
from portal.notifications import notify
from portal.notifications.reminders import local_today
from portal.runtime import Runtime
from portal.services import payment_methods

LAST_CALL = timedelta(days=7)  # a second notice this close to the end of the expiry month
LINK = "/portal/payment-methods"


def tell(runtime: Runtime, session: Session, user_id: int, *, now: datetime) -> int:
    """Tell one user (`session` bound to their scope) of the cards they may manage that are
    about to expire (or have); how many notifications are new. Never commits."""
    user = session.get(PortalUser, user_id)
    if user is None or not user.is_active:
        return 0
    today = local_today(user, now)
    told = 0
    for method in payment_methods.expiring(session, user, runtime.gateway_name, today):
        end = payment_methods.expires_on(method)
        assert end is not None  # expiring cards have an expiry
        month = f"{end:%Y-%m}"
        params: dict[str, str | int] = {
            "brand": method.brand,
            "last4": method.last4,
            "month": month,
            "expired": int(end < today),
        }
        # One key per phase: at most two notices per card and expiry, never one a run.
        last_call = end - today <= LAST_CALL
        key = f"card:{method.public_id}:{month}" + (":last" if last_call else "")
        told += (
            notify(
                runtime,
                session,
                user,
                NotificationTopic.CARD_EXPIRING,
                key=key,
                params=params,
                link=LINK,
            )
            is not None
        )
    return told
