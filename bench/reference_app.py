"""The benchmark's references, served by the same gunicorn settings as the portal.

`/hello`: bare Flask. `/floor`: bare Flask + SQLAlchemy Core + Jinja, no session, no layout: the
customer's newest 25 invoices and their count from the same database as the portal's list,
read the way the list reads them (the count from `invoice_tallies`, which the database keeps:
an exact count(*) would make the floor, not the page, grow with the customer's history).
DATABASE_URL and BENCH_COMPANY_ID come from the environment.
"""

from __future__ import annotations

import os

from flask import Flask
from jinja2 import Environment
from sqlalchemy import MetaData, Table, create_engine, func, select

engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
invoices = Table("invoices", MetaData(), autoload_with=engine)
tallies = Table("invoice_tallies", MetaData(), autoload_with=engine)
COMPANY = int(os.environ["BENCH_COMPANY_ID"])
TEMPLATE = Environment(autoescape=True).from_string(
    """<!doctype html><title>Invoices</title><p>{{ total }} invoices</p>
<table>{% for row in rows %}<tr><td>{{ row.number }}</td><td>{{ row.issue_date }}</td>
<td>{{ row.due_date }}</td><td>{{ row.status }}</td><td>{{ "%.2f"|format(row.total / 100) }}</td>
<td>{{ "%.2f"|format(row.balance_due / 100) }}</td></tr>{% endfor %}</table>"""
)
NEWEST = (
    select(invoices)
    .where(invoices.c.company_id == COMPANY)
    .order_by(invoices.c.issue_date.desc(), invoices.c.id.desc())
    .limit(25)
)
COUNT = select(func.coalesce(func.sum(tallies.c.invoice_count), 0)).where(
    tallies.c.company_id == COMPANY
)

app = Flask(__name__)


@app.get("/hello")
def hello() -> str:
    return "Hello, World!"


@app.get("/floor")
def floor() -> str:
    with engine.connect() as connection:
        total = connection.execute(COUNT).scalar_one()
        rows = connection.execute(NEWEST).all()
    return TEMPLATE.render(rows=rows, total=total)
