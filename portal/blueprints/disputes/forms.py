from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import Field, MultipleFileField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from portal.models import DisputeReason
from portal.payments.copy import amount_error
from portal.services.money import AmountError, parse_amount


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
    """The amount is read by the payment form's rule (`money.parse_amount`), in the invoice's
    currency and the reader's locale; `minor_amount` holds it once the form validates (None:
    the whole balance)."""

    reason = SelectField(_l("Reason"), choices=reason_choices)
    amount = StringField(_l("Amount in question"), render_kw={"inputmode": "decimal"})
    message = TextAreaField(
        _l("What happened?"),
        validators=[
            DataRequired(_l("Tell us what is wrong with this invoice.")),
            Length(max=2000, message=_l("Keep it under 2,000 characters.")),
        ],
        render_kw={"rows": 5},
    )

    def __init__(self, *args: Any, currency: str, locale: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.locale = locale
        self.minor_amount: int | None = None

    def validate_amount(self, field: Field) -> None:
        raw = (field.data or "").strip()
        if not raw:
            self.minor_amount = None
            return
        parsed = parse_amount(raw, self.currency, self.locale)
        if parsed == 0:
            parsed = AmountError.NOT_POSITIVE
        if isinstance(parsed, AmountError):
            raise ValidationError(amount_error(parsed, self.currency))
        self.minor_amount = parsed


class ReplyForm(FlaskForm):
    """A message in a dispute's thread: text (up to 5,000 characters), needed unless files come
    with it; the files themselves are checked by the service (by their content)."""

    message = TextAreaField(
        _l("Your message"),
        validators=[Length(max=5000, message=_l("Keep it under 5,000 characters."))],
        render_kw={"rows": 5, "maxlength": 5000},
    )
    attachments = MultipleFileField(
        _l("Attachments"),
        render_kw={"accept": "application/pdf,image/png,image/jpeg"},
    )


class WithdrawForm(FlaskForm):
    """Only its CSRF token: the confirmation is the page that shows it."""
