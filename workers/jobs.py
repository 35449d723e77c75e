"""Job entry points. Each takes plain ids and values, opens its own app context and session."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime


def healthcheck(token: str) -> dict[str, str]:
    """Proves a worker is consuming the queue: echoes the token with who ran it and when."""
    return {
        "token": token,
        "host": platform.node(),
        "pid": str(os.getpid()),
        "at": datetime.now(UTC).isoformat(),
    }
