"""The security page's API token form: a name, what it may do, and how long it lives."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, Length, ValidationError

from portal.models import TokenScope
from portal.services.api_tokens import PERSONAL_LIFETIMES


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _days(value: object) -> int:
    try:
        return int(str(value)) if str(value).isascii() else 0
    except ValueError:
        return 0


class ApiTokenForm(FlaskForm):
    name = StringField(
        _l("Token name"),
        validators=[
            DataRequired(_l("Name the token, e.g. the script that will use it.")),
            Length(max=100, message=_l("Use at most 100 characters.")),
        ],
        filters=[_strip],
        render_kw={"maxlength": 100, "autocomplete": "off"},
    )
    scope = SelectField(_l("Access"), default=TokenScope.READ.value)
    expires_in = SelectField(_l("Expires after"), coerce=_days, validate_choice=False, default=90)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scope.choices = [
            (TokenScope.READ.value, _l("Read only")),
            (TokenScope.PAY.value, _l("Read and pay")),
        ]
        self.expires_in.choices = [
            (days, ngettext("%(num)d day", "%(num)d days", days)) for days in PERSONAL_LIFETIMES
        ]

    def validate_expires_in(self, field: SelectField) -> None:
        if field.data not in PERSONAL_LIFETIMES:
            raise ValidationError(_l("Choose how long the token lives."))
