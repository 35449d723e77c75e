"""Outgoing e-mail: SMTP when MAIL_URL says so (smtp://host:port), else files under mail_dir."""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
SENDER = "Billing Portal <no-reply@billing-portal.invalid>"


@dataclass(frozen=True)
class Mailer:
    mail_url: str
    mail_dir: str

    def send(self, to: str, subject: str, text: str) -> str:
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="billing-portal.invalid")
        message.set_content(text)
        if self.mail_url:
            parts = urlsplit(self.mail_url)
            if parts.scheme not in {"smtp", "smtps"}:
                raise ValueError("MAIL_URL must be smtp://host:port or smtps://host:port")
            smtp_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
            with smtp_class(parts.hostname or "127.0.0.1", parts.port or 25, timeout=10) as smtp:
                if parts.username:
                    smtp.login(parts.username, parts.password or "")
                smtp.send_message(message)
        else:
            folder = Path(self.mail_dir)
            folder.mkdir(parents=True, exist_ok=True)
            name = message["Message-ID"].strip("<>").replace("@", "_") + ".eml"
            (folder / name).write_bytes(bytes(message))
            log.info("mail to %s written to %s", to, folder / name)
        log.info("mail sent to %s: %s", to, subject)
        return str(message["Message-ID"])
