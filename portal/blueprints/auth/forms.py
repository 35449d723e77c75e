from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Regexp

# Shape only: one @, something on each side, a dot in the domain, no spaces. Whether the address
# exists is the sign-in's business, not the form's (and .test domains must pass).
EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _email_field() -> EmailField:
    return EmailField(
        _l("Email"),
        validators=[
            DataRequired(_l("Enter your email address.")),
            Regexp(EMAIL_SHAPE, message=_l("Enter a valid email address.")),
            Length(max=254),
        ],
        filters=[_strip],
        render_kw={"autocomplete": "username", "spellcheck": "false"},
    )


class LoginForm(FlaskForm):
    email = _email_field()
    password = PasswordField(
        _l("Password"),
        validators=[DataRequired(_l("Enter your password.")), Length(max=1024)],
        render_kw={"autocomplete": "current-password"},
    )
    next = HiddenField()


class CodeForm(FlaskForm):
    code = StringField(
        _l("Authentication code"),
        validators=[
            DataRequired(_l("Enter the 6-digit code from your authenticator app.")),
            Length(max=32),
        ],
        filters=[_strip],
        render_kw={"autocomplete": "one-time-code", "spellcheck": "false"},
    )


def _new_password_field(label: str | object) -> PasswordField:
    return PasswordField(
        label,
        validators=[DataRequired(_l("Enter a new password.")), Length(max=1024)],
        render_kw={"autocomplete": "new-password", "minlength": 12},
    )


class ForgotPasswordForm(FlaskForm):
    email = _email_field()


class NewPasswordForm(FlaskForm):
    new_password = _new_password_field(_l("New password"))
    confirm_password = PasswordField(
        _l("Confirm new password"),
        validators=[DataRequired(_l("Enter the new password again."))],
        render_kw={"autocomplete": "new-password"},
    )


class ChangePasswordForm(NewPasswordForm):
    current_password = PasswordField(
        _l("Current password"),
        validators=[DataRequired(_l("Enter your current password."))],
        render_kw={"autocomplete": "current-password"},
    )


class ConfirmPasswordForm(FlaskForm):
    current_password = PasswordField(
        _l("Current password"),
        validators=[DataRequired(_l("Enter your current password."))],
        render_kw={"autocomplete": "current-password"},
    )
