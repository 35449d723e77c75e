"""Response headers that every page carries."""

from __future__ import annotations

from flask import Flask, Response, current_app

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)


def common_headers(is_development: bool) -> dict[str, str]:
    """What every answer carries: the pages here, the static files (portal/assets.py) too."""
    headers = {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(self)",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if not is_development:
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return headers


def _headers(response: Response) -> Response:
    headers = response.headers
    for name, value in common_headers(current_app.config["SETTINGS"].is_development).items():
        headers.setdefault(name, value)
    if response.mimetype == "text/html":
        headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    app.after_request(_headers)
