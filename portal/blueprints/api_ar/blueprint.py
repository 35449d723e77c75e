"""The receivables system's side (`/api/ar/…`): operator keys only (`Authorization: Bearer
ark_…`, made by `flask --app wsgi ar-keys create`). It feeds the portal (upserts, voids,
credits, dispute answers) and learns what happened (`/api/ar/events`). Its routes act for any
company: each opens `tenancy.system(db)` where it must cross companies, else binds the
company it acts on (`tenancy.bind(db, tenancy.Scope(...))`)."""

from __future__ import annotations

from flask import Blueprint

from portal import api
from portal.extensions import csrf

bp = Blueprint("api_ar", __name__, url_prefix="/api/ar")
csrf.exempt(bp)
bp.before_request(api.authenticate_operator)

TAGS = ["receivables"]
