"""Who used what: the usage ledger (counts per UTC day, user, key, model and backend, on SQLite or
PostgreSQL), the token budgets per key and per user that read it, and the Flask side of both."""
