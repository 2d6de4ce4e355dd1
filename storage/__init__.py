"""Persistence: models, the database engine, migrations and the queries the daemon runs."""
