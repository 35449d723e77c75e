from __future__ import annotations

from datetime import date
from typing import Any

from flask_babel import lazy_gettext as _l
from wtforms import DateField, IntegerField, SearchField, SelectField
from wtforms.validators import Optional

from portal import i18n
from portal.blueprints.invoices.forms import DATE_BOUNDS, ListFilterForm, within_bounds
from portal.services.documents import DocumentQuery


def kind_labels() -> dict[str, Any]:
    """A document type's words (the filter's choices and each row's badge)."""
    return {
        "contract": _l("Contract"),
        "credit_note": _l("Credit note"),
        "tax_form": _l("Tax form"),
        "delivery_note": _l("Delivery note"),
        "other": _l("Other"),
    }


def kind_choices() -> list[tuple[str, Any]]:
    return [("all", _l("All types")), *kind_labels().items()]


class DocumentFilterForm(ListFilterForm):
    """The library's GET form: every control is a query parameter, so URLs can be shared."""

    class Meta:
        csrf = False

    q = SearchField(
        _l("Search"),
        filters=[lambda v: v.strip()[:100] if isinstance(v, str) else v],
        render_kw={
            "placeholder": _l("Title or file name"),
            "autocomplete": "off",
            "spellcheck": "false",
        },
    )
    kind = SelectField(_l("Type"), choices=kind_choices, default="all", name="type")
    date_from = DateField(
        _l("Date from"), validators=[Optional(), within_bounds], name="from", render_kw=DATE_BOUNDS
    )
    date_to = DateField(
        _l("Date to"), validators=[Optional(), within_bounds], name="to", render_kw=DATE_BOUNDS
    )
    # Its choices are the accounts in the user's scope (set by the route); shown when several.
    account = SelectField(
        _l("Billing account"), choices=lambda: [("", _l("All accounts"))], default=""
    )
    page = IntegerField(validators=[Optional()], default=1)

    def set_accounts(self, accounts: list[tuple[str, str]]) -> None:
        self.account.choices = [("", _l("All accounts")), *accounts]

    ARGS = (
        ("type", "kind"),
        ("q", "q"),
        ("from", "date_from"),
        ("to", "date_to"),
        ("account", "account"),
    )

    def to_query(self) -> DocumentQuery:
        """What the list shows; a field that failed validation is left out, the rest applies."""

        def ok(field: Any) -> bool:
            return not field.errors

        start: date | None = self.date_from.data if ok(self.date_from) else None
        end: date | None = self.date_to.data if ok(self.date_to) else None
        return DocumentQuery(
            kind=(self.kind.data if ok(self.kind) else None) or "all",
            q=self.q.data or "",
            date_from=start,
            date_to=end,
            account=(self.account.data if ok(self.account) else None) or "",
            page=(self.page.data if ok(self.page) else None) or 1,
            zone=i18n.user_zone(),  # the days of the dates the list shows
        )
