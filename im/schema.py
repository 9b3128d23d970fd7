"""Create or upgrade the schema in place (`im initdb` and every server start).

`schema.sql` is idempotent and describes version 1; each later version appends one entry to
UPGRADES. Concurrent starters serialise on an advisory lock.
"""

import logging
from pathlib import Path

from im.db import Pool

log = logging.getLogger("im.schema")

SCHEMA_FILE = Path(__file__).with_name("schema.sql")
LOCK_ID = 0x696D  # "im"

# version -> SQL that upgrades from version-1; append, never edit.
UPGRADES: dict[int, str] = {}


def apply(pool: Pool) -> int:
    """Bring the database to the newest schema; returns the resulting version."""
    with pool.transaction() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        cur.execute(SCHEMA_FILE.read_text(encoding="utf-8"))
        cur.execute("SELECT version FROM schema_version WHERE id = 1")
        version = cur.fetchone()[0]
        for target in sorted(v for v in UPGRADES if v > version):
            log.info("upgrading schema to version %d", target)
            cur.execute(UPGRADES[target])
            cur.execute("UPDATE schema_version SET version = %s WHERE id = 1", (target,))
            version = target
    return version
