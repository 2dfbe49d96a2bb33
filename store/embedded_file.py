"""The embedded store's file: SQLite in WAL mode, one row per key plus the store revision and
the next lease id, each write one transaction that touches only the rows it changes. Also the
one-time import of the old format (one JSON document, rewritten whole on every write).

Only ``store/embedded.py`` uses it; the semantics (revisions, leases, watches) live there.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from store.base import StoreUnavailable

log = logging.getLogger(__name__)

# the old single-JSON-document format, read only to import it
FILE_FORMAT = 1
# the SQLite layout (PRAGMA user_version)
SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL,
    created INTEGER NOT NULL, lease INTEGER
);
"""


@dataclass(slots=True)
class Entry:
    value: bytes
    revision: int
    lease: int | None
    created: int


class Database:
    """The store's file: one row per key, plus the store revision and the next lease id.
    Every ``commit`` is one transaction, so a crash leaves the state before or after it."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if _is_legacy(path):
            _import_legacy(path)
        try:
            self._conn = _connect(path, fsync)
        except sqlite3.Error as exc:
            raise _unreadable(path, exc) from exc

    def load(self) -> tuple[dict[str, Entry], int, int]:
        """(keys, revision, next lease id). Keys bound to a lease are dropped, in one new
        revision: leases do not survive a restart, etcd would have expired them by now."""
        try:
            meta = dict(self._conn.execute("SELECT name, value FROM meta"))
            revision, next_lease = int(meta.get("revision", 1)), int(meta.get("next_lease", 1))
            data: dict[str, Entry] = {}
            leased: list[str] = []
            for key, value, rev, created, lease in self._conn.execute(
                    "SELECT key, value, revision, created, lease FROM kv"):
                if lease is not None:
                    leased.append(key)
                else:
                    data[key] = Entry(bytes(value), int(rev), None, int(created))
        except sqlite3.Error as exc:
            raise _unreadable(self.path, exc) from exc
        if leased:
            revision += 1
            self.commit(revision, next_lease, deletes=leased)
            log.info("embedded store %s: dropped %d lease-bound keys on load", self.path, len(leased))
        return data, revision, next_lease

    def commit(self, revision: int, next_lease: int, *, puts: Iterable[tuple[str, Entry]] = (),
               deletes: Iterable[str] = ()) -> None:
        conn = self._conn
        try:
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO kv (key, value, revision, created, lease) VALUES (?, ?, ?, ?, ?)",
                    [(k, e.value, e.revision, e.created, e.lease) for k, e in puts])
                conn.executemany("DELETE FROM kv WHERE key = ?", [(k,) for k in deletes])
                conn.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                                 [("revision", revision), ("next_lease", next_lease)])
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"cannot write the embedded state file {self.path}: {exc}; the write was not "
                "applied (check the disk it is on)"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()  # the last connection checkpoints the WAL into the file


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _unreadable(path: Path, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(
        f"cannot read the embedded state file {path}: {exc}; restore it from a backup "
        "or move it away to start empty"
    )


def _connect(path: Path, fsync: bool) -> sqlite3.Connection:
    # autocommit mode: transactions are the explicit BEGIN/COMMIT of _transaction; one event
    # loop uses the connection, but not always from the thread that opened it
    # (a short busy timeout: only a foreign process, such as the sqlite3 shell, can hold the
    # write lock, and the event loop waits while it does)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=1.0)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StoreUnavailable(f"{path} has format {version}, this build reads {SCHEMA_VERSION}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        if version == 0:
            _create_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_schema(conn: sqlite3.Connection, revision: int = 1, next_lease: int = 1) -> None:
    with _transaction(conn):
        for statement in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(statement)
        conn.executemany("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                         [("revision", revision), ("next_lease", next_lease)])
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _is_legacy(path: Path) -> bool:
    """A non-empty file that is not a SQLite database: the old JSON format (or garbage)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return bool(head) and head != _SQLITE_MAGIC


def _import_legacy(path: Path) -> None:
    """Turn an old-format JSON state file into the database, in place and atomically: a
    crash at any step leaves the JSON file at ``path`` (imported again on the next start)
    or the finished database. The JSON file is kept as ``<name>.v1.bak``."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise StoreUnavailable(f"{path} has format {found!r}, this build reads {FILE_FORMAT} "
                               f"(to import) and {SCHEMA_VERSION}")
    try:
        revision, next_lease = int(doc["revision"]), int(doc.get("next_lease", 1))
        rows = []
        dropped = 0
        for item in doc["keys"]:
            if item.get("lease"):  # bound to a lease: gone on any restart, as load drops them
                dropped += 1
                continue
            raw = item["value"]
            value = base64.b64decode(raw) if item.get("enc") == "b64" else raw.encode()
            # files written before create revisions were kept: the mod revision stands in
            created = int(item.get("created") or item["revision"])
            rows.append((item["key"], value, int(item["revision"]), created))
    except (KeyError, TypeError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            # the dropped keys' deletion is one new revision, as the old loader made it
            _create_schema(conn, revision + (1 if dropped else 0), next_lease)
            with _transaction(conn):
                conn.executemany("INSERT INTO kv (key, value, revision, created, lease) "
                                 "VALUES (?, ?, ?, ?, NULL)", rows)
        finally:
            conn.close()
        backup = path.with_name(path.name + ".v1.bak")
        shutil.copy2(path, backup)
        for sidecar in ("-wal", "-shm"):  # never a JSON file's: they would be replayed into ours
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(path) + sidecar)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, sqlite3.Error | OSError):
            raise StoreUnavailable(f"cannot import the old embedded state file {path}: {exc}; "
                                   "nothing was changed") from exc
        raise
    log.info("embedded store %s: imported %d keys from the old JSON format (kept as %s)",
             path, len(rows), backup)

