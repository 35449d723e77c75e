"""Statements of account, the application side: asked for on a page, built by a background job,
delivered by a signed link (the figures and the formats are portal/services/statements/).

- `service`: asking for one, listing them, retrying, opening the file;
- `generate`: the job's work (progress on the row, the file through the store, one mail) and
  the sweep's part (stuck statements failed, files past retention removed);
- `delivery`: the "Statement ready" mail.
"""
