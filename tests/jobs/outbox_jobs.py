"""Jobs for the outbox's tests, run in this process by `drain` (RQ would import them by name)."""

from __future__ import annotations

from collections import Counter

done: Counter[str] = Counter()  # side effects, by key


def count(key: str) -> str:
    done[key] += 1
    return f"counted {key}"


def fail(key: str) -> str:
    done[f"tried {key}"] += 1
    raise RuntimeError(f"{key} went wrong")
