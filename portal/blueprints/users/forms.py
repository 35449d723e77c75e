"""The forms of company user administration."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, SelectField, SelectMultipleField, StringField, widgets
from wtforms.validators import DataRequired, Length, Regexp, ValidationError

from portal.blueprints.auth.forms import EMAIL_SHAPE, NewPasswordForm
from portal.models import BillingAccount, Role


def role_choices() -> list[tuple[str, Any]]:
    return [
        (Role.CUSTOMER.value, _l("Member (customer)")),
        (Role.ADMIN.value, _l("Administrator (customer.admin)")),
    ]


class AccountsField(SelectMultipleField):
    """Billing accounts as a list of checkboxes."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class AccessForm(FlaskForm):
    """A role and, for role customer, the billing accounts granted."""

    role = SelectField(_l("Role"), choices=role_choices, default=Role.CUSTOMER.value)
    accounts = AccountsField(_l("Billing accounts"), coerce=str)

    def __init__(self, *args: Any, account_rows: list[BillingAccount], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.account_rows = account_rows
        self.accounts.choices = [(a.public_id, f"{a.name} ({a.number})") for a in account_rows]

    def validate_accounts(self, field: AccountsField) -> None:
        if self.role.data == Role.CUSTOMER.value and not field.data:
            raise ValidationError(_l("Choose at least one billing account for a member."))

    @property
    def chosen_role(self) -> Role:
        return Role(self.role.data)

    @property
    def account_ids(self) -> list[int]:
        if self.chosen_role is Role.ADMIN:
            return []
        wanted = set(self.accounts.data or [])
        return [a.id for a in self.account_rows if a.public_id in wanted]


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


class InviteForm(AccessForm):
    email = EmailField(
        _l("Email"),
        validators=[
            DataRequired(_l("Enter the email address of the person to invite.")),
            Regexp(EMAIL_SHAPE, message=_l("Enter a valid email address.")),
            Length(max=254, message=_l("Use at most 254 characters.")),
        ],
        filters=[_strip],
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )


class AcceptForm(NewPasswordForm):
    name = StringField(
        _l("Your name"),
        validators=[DataRequired(_l("Enter your name.")), Length(max=200)],
        render_kw={"autocomplete": "name"},
    )
