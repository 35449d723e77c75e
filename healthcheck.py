"""The container's health check: `python healthcheck.py` exits 0 when this host's web process
answers /healthz with 200 (Dockerfile HEALTHCHECK; nothing but the standard library).

It asks 127.0.0.1 on PORT (8000) by the name in PUBLIC_URL: production answers to no other.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit


def healthy(port: str, public_url: str, timeout: float = 3.0) -> bool:
    host = urlsplit(public_url).hostname or "localhost"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


if __name__ == "__main__":
    ok = healthy(os.environ.get("PORT", "8000"), os.environ.get("PUBLIC_URL", ""))
    sys.exit(0 if ok else 1)
