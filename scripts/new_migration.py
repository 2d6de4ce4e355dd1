"""Write a new Alembic revision from the difference between storage/models.py and the migrations.

    .venv/bin/python scripts/new_migration.py "what changed"

It upgrades a scratch SQLite database to the current head and autogenerates against it; review the file it
writes (server defaults for new NOT NULL columns, data back-fills) before committing.
"""

from __future__ import annotations

import argparse
import tempfile

from alembic import command
from sqlalchemy import create_engine

from mentiondesk.storage.db import alembic_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("message")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/scratch.db")
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            command.revision(cfg, message=args.message, autogenerate=True)
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
