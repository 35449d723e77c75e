"""Statements of account, the domain side: what a statement says (`data`) and how it is read
from the database (`ledger`). Asking for one, the job and the formats are portal/statements/."""
