"""Pieces shared by the dispatcher API, the PDA API and the console: auth, errors, schemas, idempotency."""
