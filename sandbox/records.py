"""The sandbox's record store: SQLite, so a million seeded records are served page by page without
ever being loaded into Python objects at once.

One table holds every object of one emulated org/portal::

    records(obj, id, num, modstamp, created, deleted, data)

``id`` is the vendor id (text, BINARY collation = byte order), ``num`` a numeric key (HubSpot ids
are numbers and sort numerically; for Salesforce it is the insertion sequence), ``modstamp`` and
``created`` are epoch milliseconds, ``deleted`` the soft-delete flag (Salesforce recycle bin /
HubSpot archive), ``data`` the record's vendor fields as JSON. Vendor apps build their queries with
:meth:`RecordStore.select` using SQL fragments over those columns and ``json_extract(data, '$.F')``,
always with bound parameters.

Thread-safety: one connection guarded by a lock (the ASGI server thread and the test's control
handle both use it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Clock", "RecordRow", "RecordStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    obj TEXT NOT NULL,
    id TEXT NOT NULL,
    num INTEGER NOT NULL,
    modstamp INTEGER NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,
    PRIMARY KEY (obj, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_modstamp ON records (obj, deleted, modstamp, id);
-- queryAll / incremental reads page over live and deleted rows together by (modstamp, id).
CREATE INDEX IF NOT EXISTS records_all_by_modstamp ON records (obj, modstamp, id);
CREATE INDEX IF NOT EXISTS records_by_num ON records (obj, deleted, num);
CREATE TABLE IF NOT EXISTS sequences (obj TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Clock:
    """Milliseconds since the epoch; real time unless frozen (tests use it to create timestamp ties)."""

    def __init__(self) -> None:
        self._frozen: int | None = None

    def now_ms(self) -> int:
        return self._frozen if self._frozen is not None else int(time.time() * 1000)

    def freeze(self, ms: int | None = None) -> None:
        """Stop the clock at ``ms`` (default: now): every write until :meth:`unfreeze` shares it."""
        self._frozen = self.now_ms() if ms is None else ms

    def unfreeze(self) -> None:
        self._frozen = None


@dataclass(frozen=True, slots=True)
class RecordRow:
    obj: str
    id: str
    num: int
    modstamp: int
    created: int
    deleted: bool
    data: dict[str, Any]


def _row(r: Sequence[Any]) -> RecordRow:
    return RecordRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), json.loads(r[6]))


_COLUMNS = "obj, id, num, modstamp, created, deleted, data"


class RecordStore:
    """Records of one emulated CRM tenant, in SQLite (``:memory:`` by default, or a file)."""

    def __init__(self, path: str = ":memory:", *, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=MEMORY" if path == ":memory:" else "PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._indexed_fields: set[tuple[str, str]] = set()

    # -- writes -------------------------------------------------------------------------------

    def next_num(self, obj: str, count: int = 1) -> int:
        """Reserve ``count`` consecutive numbers for ``obj``; returns the first."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO sequences(obj, value) VALUES (?, ?) "
                "ON CONFLICT(obj) DO UPDATE SET value = value + ? RETURNING value",
                (obj, count, count),
            )
            last = int(cur.fetchone()[0])
            return last - count + 1

    def insert(
        self,
        obj: str,
        id: str,
        data: Mapping[str, Any],
        *,
        num: int,
        modstamp: int | None = None,
        created: int | None = None,
    ) -> RecordRow:
        now = self.clock.now_ms()
        row = RecordRow(obj, id, num, modstamp or now, created or modstamp or now, False, dict(data))
        with self._lock:
            self._db.execute(
                f"INSERT INTO records({_COLUMNS}) VALUES (?,?,?,?,?,0,?)",
                (obj, id, num, row.modstamp, row.created, json.dumps(row.data, ensure_ascii=False)),
            )
        return row

    def insert_many(self, rows: Iterable[tuple[str, str, int, int, int, Mapping[str, Any]]]) -> int:
        """Bulk insert ``(obj, id, num, modstamp, created, data)`` tuples in one transaction."""
        count = 0

        def params() -> Iterator[tuple[Any, ...]]:
            nonlocal count
            for obj, id_, num, modstamp, created, data in rows:
                count += 1
                yield (obj, id_, num, modstamp, created, json.dumps(data, ensure_ascii=False))

        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(f"INSERT INTO records({_COLUMNS}) VALUES (?,?,?,?,?,0,?)", params())
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return count

    def update(
        self,
        obj: str,
        id: str,
        changes: Mapping[str, Any],
        *,
        modstamp: int | None = None,
        drop_none: bool = False,
    ) -> RecordRow | None:
        """Merge ``changes`` into a live record and bump its modstamp; None if absent or deleted.
        With ``drop_none`` a ``None`` change removes the field (a cleared value is stored as absent,
        as on insert)."""
        with self._lock:
            current = self.get(obj, id)
            if current is None:
                return None
            data = {**current.data, **changes}
            if drop_none:
                data = {k: v for k, v in data.items() if v is not None}
            stamp = modstamp or self.clock.now_ms()
            self._db.execute(
                "UPDATE records SET data = ?, modstamp = ? WHERE obj = ? AND id = ?",
                (json.dumps(data, ensure_ascii=False), stamp, obj, id),
            )
            return RecordRow(obj, id, current.num, stamp, current.created, False, data)

    def set_deleted(self, obj: str, id: str, deleted: bool, *, modstamp: int | None = None) -> bool:
        """Soft-delete (or restore) a record, bumping its modstamp. False if no such record."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE records SET deleted = ?, modstamp = ? WHERE obj = ? AND id = ? AND deleted = ?",
                (int(deleted), modstamp or self.clock.now_ms(), obj, id, int(not deleted)),
            )
            return cur.rowcount == 1

    def purge(self, obj: str, id: str) -> bool:
        """Remove a record for good (empty recycle bin / GDPR delete)."""
        with self._lock:
            return self._db.execute("DELETE FROM records WHERE obj = ? AND id = ?", (obj, id)).rowcount == 1

    def purge_all(self, obj: str) -> int:
        """Remove every record of ``obj`` for good and give the space back (``VACUUM``), so a store
        emptied of a million rows answers like a fresh one; returns how many went."""
        with self._lock:
            gone = self._db.execute("DELETE FROM records WHERE obj = ?", (obj,)).rowcount
            self._db.execute("VACUUM")
            return int(gone)

    # -- reads --------------------------------------------------------------------------------

    def get(self, obj: str, id: str, *, include_deleted: bool = False) -> RecordRow | None:
        with self._lock:
            r = self._db.execute(
                f"SELECT {_COLUMNS} FROM records WHERE obj = ? AND id = ?"
                + ("" if include_deleted else " AND deleted = 0"),
                (obj, id),
            ).fetchone()
        return _row(r) if r else None

    @staticmethod
    def _field_index_name(obj: str, field: str) -> str:
        return "records_field_" + hashlib.sha256(f"{obj}.{field}".encode()).hexdigest()[:16]

    def ensure_field_index(self, obj: str, field: str) -> None:
        """Index ``json_extract(data, '$.field')`` so lookups by an external id stay fast at 1M rows."""
        if (obj, field) in self._indexed_fields:
            return
        if not field.replace("_", "").isalnum():
            raise ValueError(f"not a field name: {field!r}")
        name = self._field_index_name(obj, field)
        with self._lock:
            self._db.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON records (obj, json_extract(data, '$.{field}'))"
            )
        self._indexed_fields.add((obj, field))

    def find(self, obj: str, field: str, value: Any, *, include_deleted: bool = False) -> list[RecordRow]:
        """Records whose ``field`` equals ``value`` (uses an expression index, see above)."""
        self.ensure_field_index(obj, field)
        # INDEXED BY: without statistics SQLite prefers the primary key's ``obj`` prefix (a scan of
        # every record of the object) over the expression index.
        sql = (
            f"SELECT {_COLUMNS} FROM records INDEXED BY {self._field_index_name(obj, field)} "
            f"WHERE obj = ? AND json_extract(data, '$.{field}') = ?"
        )
        if not include_deleted:
            sql += " AND deleted = 0"
        with self._lock:
            return [_row(r) for r in self._db.execute(sql, (obj, value)).fetchall()]

    def select(
        self,
        obj: str,
        where: str = "1",
        params: Sequence[Any] = (),
        *,
        order_by: str = "modstamp, id",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RecordRow]:
        """Rows of ``obj`` matching an SQL ``where`` fragment (bound ``params``), in ``order_by``.

        Callers build ``where``/``order_by`` only from their own vetted fragments, never from
        request text; values always go through ``params``.
        """
        sql = f"SELECT {_COLUMNS} FROM records WHERE obj = ? AND ({where}) ORDER BY {order_by}"
        args: list[Any] = [obj, *params]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self._lock:
            return [_row(r) for r in self._db.execute(sql, args).fetchall()]

    def count(self, obj: str, where: str = "1", params: Sequence[Any] = ()) -> int:
        with self._lock:
            r = self._db.execute(
                f"SELECT COUNT(*) FROM records WHERE obj = ? AND ({where})", [obj, *params]
            ).fetchone()
        return int(r[0])

    def objects(self) -> dict[str, int]:
        """Live record count per object."""
        with self._lock:
            rows = self._db.execute(
                "SELECT obj, COUNT(*) FROM records WHERE deleted = 0 GROUP BY obj"
            ).fetchall()
        return {str(o): int(c) for o, c in rows}

    def dump(self, obj: str, *, include_deleted: bool = True) -> Iterator[RecordRow]:
        """Every record of ``obj`` in id order, streamed in chunks (for whole-state checks)."""
        last = ""
        while True:
            chunk = self.select(
                obj,
                "id > ?" + ("" if include_deleted else " AND deleted = 0"),
                (last,),
                order_by="id",
                limit=5000,
            )
            if not chunk:
                return
            yield from chunk
            last = chunk[-1].id

    def close(self) -> None:
        with self._lock:
            self._db.close()
