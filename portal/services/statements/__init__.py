"""Statements of account, the domain side: what a statement says (`data`), how it is read
from the database (`ledger`), and its files (`render`: PDF, XLSX and CSV, the same figures in
each, labels from `labels`). Asking for one and the job are portal/statements/."""
