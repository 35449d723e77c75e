"""Operator actions on invoices and disputes (`/api/ar/…`)."""

from __future__ import annotations
