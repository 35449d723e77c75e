from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, SelectMultipleField, widgets
from wtforms.validators import InputRequired, ValidationError

from portal.blueprints.invoices.forms import within_bounds
from portal.models import BillingAccount, StatementFormat
from portal.statements.service import RangeProblem, range_problem


def format_choices() -> list[tuple[str, Any]]:
    return [
        (StatementFormat.PDF.value, _l("PDF")),
        (StatementFormat.XLSX.value, _l("Excel")),
        (StatementFormat.CSV.value, _l("CSV")),
    ]


class AccountsField(SelectMultipleField):
    """Billing accounts as a list of checkboxes."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class StatementForm(FlaskForm):
    start_date = DateField(
        _l("Start Date"),
        validators=[InputRequired(_l("Enter a start date.")), within_bounds],
        format="%Y-%m-%d",
    )
    end_date = DateField(
        _l("End Date"),
        validators=[InputRequired(_l("Enter an end date.")), within_bounds],
        format="%Y-%m-%d",
    )
    accounts = AccountsField(_l("Billing accounts"), coerce=str)
    format = SelectField(_l("Format"), choices=format_choices, default=StatementFormat.PDF.value)

    def __init__(
        self, *args: Any, accounts: list[BillingAccount], today: date, max_days: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.today = today
        self.max_days = max_days
        self.account_rows = accounts
        self.accounts.choices = [(a.public_id, f"{a.name} ({a.number})") for a in accounts]
        if not self.is_submitted():
            first = today.replace(day=1)
            self.start_date.data = (first - timedelta(days=1)).replace(day=1)
            self.end_date.data = today
            self.accounts.data = [a.public_id for a in accounts]
        bounds = {"max": today.isoformat()}
        self.start_date.render_kw = bounds
        self.end_date.render_kw = bounds

    def validate_accounts(self, field: AccountsField) -> None:
        if len(self.account_rows) == 1:  # nothing to choose: the one account
            field.data = [self.account_rows[0].public_id]
        if not field.data:
            raise ValidationError(_l("Choose at least one billing account."))

    def validate_end_date(self, field: DateField) -> None:
        start, end = self.start_date.data, field.data
        if start is None or end is None:
            return
        problem = range_problem(start, end, self.today, self.max_days)
        if problem is RangeProblem.ORDER:
            raise ValidationError(_l("The end date must be on or after the start date."))
        if problem is RangeProblem.FUTURE:
            raise ValidationError(_l("The end date can't be in the future."))
        if problem is RangeProblem.TOO_LONG:
            raise ValidationError(
                _l("A statement can cover at most %(days)d days.", days=self.max_days)
            )

    @property
    def account_ids(self) -> list[int]:
        chosen = set(self.accounts.data or [])
        return [a.id for a in self.account_rows if a.public_id in chosen]
