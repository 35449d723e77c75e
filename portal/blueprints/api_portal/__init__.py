"""The portal's JSON API: `routes` holds the blueprint; each module here adds its endpoints."""

from portal.blueprints.api_portal import account as account
