"""The domain. Functions take (session, scope, ...), flush but never commit, and import no Flask."""
