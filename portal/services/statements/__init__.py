"""Statements of account: asked for on a page, built by a background job, delivered by link.

- `data`: what a statement says (sections per billing account and currency: opening balance,
  movements with a running balance, closing balance, aging), the one input of every format;
- `ledger`: reads it from the database;
- `render_pdf`, `render_xlsx`, `render_csv`: write it in a format, the same figures in each;
- `service`: asking for one, listing them, retrying, and the page's view of one;
- `generate`: the job's work (progress on the row, the file through the storage, one mail).
"""
