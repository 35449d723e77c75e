"""Outgoing e-mail: SMTP when MAIL_URL says so (smtp://host:port), else files under mail_dir.

Sending a message has a point of no return: once the message's text has gone to the server,
a timeout or a dropped connection does not say whether the server kept it. Before that point
any error means "not sent" (the job may run again); after it, `DeliveryUnknown` (the job must
not send it again, or the payer gets the same receipt twice). `before_sending` runs just before
that point (once the server said it is ready for the message), so the caller can record it
first. An answer of "no" (4xx, 5xx) is an `smtplib.SMTPResponseException`: not taken. Once the
server said 250 the message is delivered, whatever the goodbye that follows says.
"""

from __future__ import annotations

import email.policy
import logging
import re
import smtplib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
MAIL_DOMAIN = "billing-portal.invalid"
SENDER = f"Billing Portal <no-reply@{MAIL_DOMAIN}>"
SENDER_ADDRESS = f"no-reply@{MAIL_DOMAIN}"
_UNFOLDED = email.policy.default.clone(max_line_length=998)
_OWN_HEADERS = frozenset({"from", "to", "subject", "message-id"})


class DeliveryUnknown(Exception):
    """The server had the whole message and gave no answer: it may have delivered it."""


@dataclass(frozen=True)
class Mailer:
    mail_url: str
    mail_dir: str
    timeout: float = 10.0
    message_id: str | None = None  # stable for one piece of work: a receiver can tell a repeat
    before_sending: Callable[[], None] | None = None

    def send(
        self,
        to: str,
        subject: str,
        text: str,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Send (or write) one message: plain text, and an HTML alternative when given.
        `headers` adds headers of its own (List-Unsubscribe, never From/To/Subject)."""
        # A header of its own (a link) is never folded into encoded words: a mail client reads
        # List-Unsubscribe as it is (lines may reach 998 characters, RFC 5322).
        message = EmailMessage(policy=_UNFOLDED) if headers else EmailMessage()
        message["From"] = SENDER
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = self.message_id or make_msgid(domain=MAIL_DOMAIN)
        for name, value in (headers or {}).items():
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"the mailer sets {name} itself")
            message[name] = value
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        if self.mail_url:
            self._smtp(message, to)
        else:
            folder = Path(self.mail_dir)
            folder.mkdir(parents=True, exist_ok=True)
            name = message["Message-ID"].strip("<>").replace("@", "_") + ".eml"
            if self.before_sending is not None:
                self.before_sending()
            (folder / name).write_bytes(bytes(message))  # the same name again: one file
            log.info("mail %s written to %s", message["Message-ID"], folder / name)
        # The recipient's address is not logged (personal data): the Message-ID finds the mail.
        log.info("mail %s sent: %s", message["Message-ID"], subject)
        return str(message["Message-ID"])

    def _smtp(self, message: EmailMessage, to: str) -> None:
        parts = urlsplit(self.mail_url)
        if parts.scheme not in {"smtp", "smtps"}:
            raise ValueError("MAIL_URL must be smtp://host:port or smtps://host:port")
        smtp_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
        smtp = smtp_class(parts.hostname or "127.0.0.1", parts.port or 25, timeout=self.timeout)
        try:
            if parts.username:
                smtp.login(parts.username, parts.password or "")
            smtp.ehlo_or_helo_if_needed()
            code, answer = smtp.mail(SENDER_ADDRESS)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, answer, SENDER_ADDRESS)
            code, answer = smtp.rcpt(to)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({to: (code, answer)})
            smtp.putcmd("data")
            code, answer = smtp.getreply()
            if code != 354:  # not ready for the message: nothing of it was sent
                raise smtplib.SMTPDataError(code, answer)
            if self.before_sending is not None:
                self.before_sending()
            try:
                smtp.send(_data(message))
                code, answer = smtp.getreply()
            except (OSError, smtplib.SMTPException) as error:  # no answer after the message
                raise DeliveryUnknown(f"{type(error).__name__}: {error}") from error
            if code != 250:  # it read the message and said no: not taken
                raise smtplib.SMTPDataError(code, answer)
        finally:
            _quit(smtp)  # once the server said 250 the message is its: the goodbye is a formality


def _data(message: EmailMessage) -> bytes:
    """The message as SMTP's DATA carries it: CRLF lines, a leading dot doubled, a dot to end."""
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    raw = re.sub(rb"(?m)^\.", b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException) as error:
        log.info("the mail server's goodbye failed (%s: %s)", type(error).__name__, error)
        smtp.close()
