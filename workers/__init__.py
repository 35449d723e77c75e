"""RQ job entry points and worker set-up. Jobs take ids, never ORM objects."""
