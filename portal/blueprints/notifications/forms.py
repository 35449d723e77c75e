"""The notification preferences form: a switch per (topic, channel) and the reminder's lead."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField
from wtforms.validators import ValidationError

from portal.models import REMIND_DAYS, NotificationChannel, NotificationTopic
from portal.services.notifications import Choice


def field_name(topic: NotificationTopic, channel: NotificationChannel) -> str:
    """The checkbox of one topic on one channel: "email-invoice_issued"."""
    return f"{channel.value}-{topic.value}"


def _days(value: object) -> int:
    """The select's value as a number; anything else as 0, which no choice is."""
    try:
        return int(str(value)) if str(value).isascii() else 0
    except ValueError:
        return 0


def remind_choices() -> list[tuple[int, str]]:
    return [(days, ngettext("%(num)d day", "%(num)d days", days)) for days in REMIND_DAYS]


class PreferencesForm(FlaskForm):
    remind_days = SelectField(
        _l("Remind me before the due date"),
        coerce=_days,
        validate_choice=False,  # checked in validate_remind_days, with the page's words
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remind_days.choices = remind_choices()

    def validate_remind_days(self, field: SelectField) -> None:
        if field.data not in REMIND_DAYS:
            raise ValidationError(_l("Choose how many days before the due date."))

    def switch(self, topic: NotificationTopic, channel: NotificationChannel) -> BooleanField:
        field: BooleanField = self[field_name(topic, channel)]
        return field

    def wanted(self) -> dict[Choice, bool]:
        return {
            (topic, channel): bool(self.switch(topic, channel).data)
            for topic in NotificationTopic
            for channel in NotificationChannel
        }

    def fill(self, chosen: dict[Choice, bool], days: int) -> None:
        for (topic, channel), enabled in chosen.items():
            self.switch(topic, channel).data = enabled
        self.remind_days.data = days


for _topic in NotificationTopic:
    for _channel in NotificationChannel:
        # Each checkbox is named for assistive technology by its row's and column's headers
        # (aria-labelledby in the template): "New invoices Email".
        setattr(PreferencesForm, field_name(_topic, _channel), BooleanField())
