"""The receivables side's routes (`/api/ar/…`): the blueprint (blueprint.py) with the event
feed (events.py) and the operator actions (actions.py) registered on it."""

from __future__ import annotations

from portal.blueprints.api_ar import actions, events
from portal.blueprints.api_ar.blueprint import TAGS, bp

__all__ = ["TAGS", "actions", "bp", "events"]
