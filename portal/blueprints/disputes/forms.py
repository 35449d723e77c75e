from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DecimalField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from portal.models import DisputeReason


def reason_choices() -> list[tuple[str, Any]]:
    labels = {
        DisputeReason.INCORRECT_AMOUNT: _l("The amount is wrong"),
        DisputeReason.NOT_RECEIVED: _l("We didn't receive the goods or service"),
        DisputeReason.DUPLICATE: _l("We were billed twice"),
        DisputeReason.QUALITY: _l("A problem with quality"),
        DisputeReason.OTHER: _l("Something else"),
    }
    return [(reason.value, labels[reason]) for reason in DisputeReason]


class DisputeForm(FlaskForm):
    reason = SelectField(_l("Reason"), choices=reason_choices)
    amount = DecimalField(
        _l("Amount in question"),
        places=2,
        validators=[Optional(), NumberRange(min=0.01, message=_l("Enter an amount above zero."))],
        render_kw={"inputmode": "decimal"},
    )
    message = TextAreaField(
        _l("What happened?"),
        validators=[
            DataRequired(_l("Tell us what is wrong with this invoice.")),
            Length(max=2000, message=_l("Keep it under 2,000 characters.")),
        ],
        render_kw={"rows": 5},
    )
