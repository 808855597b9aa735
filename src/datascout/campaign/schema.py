"""The campaign database: SQLite in WAL mode, a versioned schema (``PRAGMA user_version``) and
forward-only migrations. Nothing is pickled: every value is a column or a JSON string."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from datascout.exceptions import ValidationError

DB_NAME = "campaign.db"

# Each migration takes the database from version i to i + 1. Never edit a released one: append.
MIGRATIONS: list[str] = [
    # 0 -> 1: the core tables
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE items (
        pos INTEGER PRIMARY KEY,            -- row in the embeddings file
        id TEXT NOT NULL UNIQUE,            -- what users see
        kind TEXT NOT NULL CHECK (kind IN ('text', 'image')),
        payload TEXT NOT NULL               -- the text, or the image path
    );
    CREATE TABLE annotators (name TEXT PRIMARY KEY, created REAL NOT NULL);
    CREATE TABLE rounds (
        round INTEGER PRIMARY KEY,
        strategy TEXT NOT NULL,
        settings TEXT NOT NULL,             -- JSON
        metrics TEXT NOT NULL,              -- JSON: model quality when the round was selected
        created REAL NOT NULL
    );
    CREATE TABLE selections (
        pos INTEGER NOT NULL UNIQUE REFERENCES items(pos),   -- an item is selected at most once
        round INTEGER NOT NULL REFERENCES rounds(round),
        rank INTEGER NOT NULL,
        score REAL,
        PRIMARY KEY (round, rank)
    );
    CREATE TABLE labels (
        label_id INTEGER PRIMARY KEY AUTOINCREMENT,
        pos INTEGER NOT NULL REFERENCES items(pos),
        class INTEGER,                      -- NULL = skipped
        annotator TEXT NOT NULL,
        time REAL NOT NULL,
        round INTEGER,                      -- NULL for imported labels
        source TEXT NOT NULL                -- 'web', 'import', ...
    );
    CREATE INDEX labels_pos ON labels(pos);
    """,
    # 1 -> 2: leases per (item, annotator), kept after expiry so a late answer is still accepted
    """
    CREATE TABLE leases (
        pos INTEGER NOT NULL REFERENCES items(pos),
        annotator TEXT NOT NULL REFERENCES annotators(name),
        expires REAL NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (pos, annotator)
    );
    CREATE INDEX leases_annotator ON leases(annotator, done);
    CREATE INDEX labels_annotator ON labels(annotator, pos);
    """,
    # 2 -> 3: why each item was chosen and what the model said of it; the audit sample
    """
    ALTER TABLE selections ADD COLUMN audit INTEGER NOT NULL DEFAULT 0;  -- 1: uniform random, never trained on
    ALTER TABLE selections ADD COLUMN pred_class INTEGER;                -- the model's guess when selected
    ALTER TABLE selections ADD COLUMN pred_prob REAL;
    """,
    # 3 -> 4: the review queue: labels the audit suspects, asked again of other annotators (blind)
    """
    CREATE TABLE reviews (
        pos INTEGER PRIMARY KEY REFERENCES items(pos),
        round INTEGER NOT NULL,             -- the round whose retraining flagged it
        reason TEXT NOT NULL,               -- why the audit flagged it (the reasons, comma-free text)
        score REAL NOT NULL,                -- higher = more likely wrong
        suggested INTEGER,                  -- the class the model suggests
        first_class INTEGER,                -- the label under suspicion
        created REAL NOT NULL
    );
    """,
    # 4 -> 5: the Label Studio sync state: which item is which task in which project (a row is
    # written, 'sending', before the tasks are posted, and set 'pushed' once Label Studio is seen
    # to hold them), every Label Studio annotation taken in (so none is taken twice), and the
    # members' emails by user id
    """
    CREATE TABLE ls_tasks (
        target TEXT NOT NULL,               -- the Label Studio URL and project: 'URL#ID'
        pos INTEGER NOT NULL REFERENCES items(pos),
        task_id INTEGER,                    -- NULL while 'sending'
        round INTEGER,
        state TEXT NOT NULL CHECK (state IN ('sending', 'pushed')),
        time REAL NOT NULL,
        PRIMARY KEY (target, pos)
    );
    CREATE TABLE ls_annotations (
        target TEXT NOT NULL,
        annotation_id INTEGER NOT NULL,
        updated TEXT NOT NULL,              -- Label Studio's updated_at when it was taken in
        pos INTEGER NOT NULL REFERENCES items(pos),
        annotator TEXT NOT NULL,
        class INTEGER,                      -- NULL: cancelled (a skip), or no choice
        PRIMARY KEY (target, annotation_id)
    );
    CREATE TABLE ls_users (
        server TEXT NOT NULL,               -- the Label Studio URL
        user_id INTEGER NOT NULL,
        email TEXT NOT NULL,
        PRIMARY KEY (server, user_id)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path, *, create: bool = False) -> sqlite3.Connection:
    """Open the campaign database (WAL, foreign keys, a busy timeout) and migrate it forward."""
    path = Path(path)
    if not create and not path.is_file():
        raise ValidationError(f"expected a campaign database at {str(path)!r} but none exists "
                              "(run 'datascout campaign init' first)")
    con = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")  # a label is on disk before the API answers
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("PRAGMA busy_timeout=30000")
    migrate(con)
    return con


def migrate(con: sqlite3.Connection) -> int:
    """Apply the migrations the database lacks; returns the version it ends at."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ValidationError(f"the campaign database has schema version {version} but this datascout "
                              f"knows versions up to {SCHEMA_VERSION}: upgrade datascout")
    while version < SCHEMA_VERSION:
        con.execute("BEGIN IMMEDIATE")
        try:
            current = con.execute("PRAGMA user_version").fetchone()[0]
            if current == version:  # another process may have migrated meanwhile
                for stmt in MIGRATIONS[version].split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                con.execute(f"PRAGMA user_version={version + 1}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        version = con.execute("PRAGMA user_version").fetchone()[0]
    return version
