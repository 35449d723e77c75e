"""Paying invoices, the application layer: the only code that talks to the payment gateway,
the job queue and mail for payments and saved payment methods.

Routes (portal/blueprints/payments, payment_methods, webhooks) and jobs (workers/jobs.py) call
these with the runtime (portal/runtime.py) and a session; the domain (portal.services.payments)
stays free of Flask and of gateways. Each function leaves the commit to its caller except where
a gateway call sits between two commits: a payment row is committed before the gateway hears of
it, so a crash in between leaves a row to reconcile.

- `charging`: charge a payment, apply a gateway's answer, reconcile one left processing;
- `scheduling`: queue a scheduled payment for its day and run it then;
- `webhooks`: verify, de-duplicate and apply a gateway's event (and the sandbox's settlement);
- `mail`: tell the payer the outcome, in their language and locale;
- `methods`: add (through the gateway's hosted page) and detach saved payment methods;
- `copy`: the words for refusals, field errors and failure reasons.
"""
