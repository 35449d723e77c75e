"""What the password forms say: a current password checked, a new one refused (shared by
reset, change, the e-mail change and new recovery codes)."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_login import current_user
from wtforms import Field

from portal.blueprints.auth.forms import ChangePasswordForm, NewPasswordForm
from portal.extensions import password_hasher
from portal.services.credentials import ChangeProblem
from portal.services.passwords import verify_password


def current_password_ok(field: Field) -> bool:
    """Whether `field` holds the signed-in user's password; when not, the field says so."""
    if verify_password(current_user.password_hash, field.data or "", password_hasher()):
        return True
    field.errors = [_("Your current password is incorrect.")]
    return False


def explain(form: NewPasswordForm, problem: ChangeProblem) -> None:
    """Put the refusal on the field it is about, in words a person can act on."""
    messages = {
        ChangeProblem.WRONG_CURRENT: _("Your current password is incorrect."),
        ChangeProblem.MISMATCH: _("The two new passwords don't match."),
        ChangeProblem.SAME_AS_CURRENT: _("Choose a password different from your current one."),
        ChangeProblem.TOO_SHORT: _("Use at least 12 characters."),
        ChangeProblem.TOO_LONG: _("Use at most 1024 characters."),
        ChangeProblem.TOO_COMMON: _(
            "That password is too easy to guess. Try a longer phrase of unrelated words."
        ),
    }
    if problem is ChangeProblem.WRONG_CURRENT and isinstance(form, ChangePasswordForm):
        field = form.current_password
    elif problem is ChangeProblem.MISMATCH:
        field = form.confirm_password
    else:
        field = form.new_password
    field.errors = [*field.errors, messages[problem]]
    form.new_password.data = form.confirm_password.data = ""
