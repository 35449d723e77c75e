from __future__ import annotations

from typing import Any

from babel import Locale
from babel.numbers import format_decimal
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError

from portal import i18n
from portal.blueprints.auth.forms import EMAIL_SHAPE
from portal.services import profile


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def zone_choices() -> dict[str, list[tuple[str, str]]]:
    """The IANA zones grouped by their region ("Europe": "Europe/Berlin" …), for <optgroup>s."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in profile.time_zones():
        region, _sep, place = name.partition("/")
        groups.setdefault(region if place else "UTC", []).append(
            (name, place.replace("_", " ") if place else name)
        )
    return groups


def number_choices() -> list[tuple[str, Any]]:
    sample = 1234567.89
    choices: list[tuple[str, Any]] = [("", _l("Follow language"))]
    for code in i18n.NUMBER_LOCALES:
        name = Locale.parse(code).get_display_name(code) or code
        choices.append((code, f"{name} ({format_decimal(sample, locale=code)})"))
    return choices


class ProfileForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Enter your name.")), Length(max=200)],
        filters=[_strip],
        render_kw={"autocomplete": "name", "maxlength": 200},
    )
    phone = StringField(
        _l("Phone"),
        validators=[Optional(), Length(max=40, message=_l("Enter a valid phone number"))],
        filters=[_strip],
        render_kw={"autocomplete": "tel", "type": "tel"},
    )
    job_title = StringField(
        _l("Job title"),
        validators=[Optional(), Length(max=100)],
        filters=[_strip],
        render_kw={"autocomplete": "organization-title", "maxlength": 100},
    )
    locale = SelectField(_l("Language"))
    timezone = SelectField(_l("Time zone"), validate_choice=False)
    number_locale = SelectField(_l("Number format"))

    def __init__(self, *args: Any, region: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.region = region
        self.phone_e164: str | None = None
        self.locale.choices = i18n.language_choices()
        self.timezone.choices = zone_choices()
        self.number_locale.choices = number_choices()

    def validate_phone(self, field: StringField) -> None:
        if not field.data:
            self.phone_e164 = None
            return
        self.phone_e164 = profile.parse_phone(field.data, self.region)
        if self.phone_e164 is None:
            raise ValidationError(_l("Enter a valid phone number"))

    def validate_timezone(self, field: SelectField) -> None:
        if not profile.valid_time_zone(str(field.data or "")):
            raise ValidationError(_l("Choose a time zone from the list."))

    def values(self) -> dict[str, str | None]:
        return {
            "name": self.name.data,
            "phone": self.phone_e164,
            "job_title": self.job_title.data or None,
            "locale": self.locale.data,
            "timezone": self.timezone.data,
            "number_locale": self.number_locale.data or None,
        }


class EmailChangeForm(FlaskForm):
    new_email = EmailField(
        _l("New email"),
        validators=[
            DataRequired(_l("Enter your new email address.")),
            Regexp(EMAIL_SHAPE, message=_l("Enter a valid email address.")),
            Length(max=254),
        ],
        filters=[_strip],
        render_kw={"autocomplete": "email", "spellcheck": "false"},
    )
    current_password = PasswordField(
        _l("Current password"),
        validators=[DataRequired(_l("Enter your current password.")), Length(max=1024)],
        render_kw={"autocomplete": "current-password"},
    )
