"""The data-subject suppression list: keyed hashes only, an erasure overrides a restriction and is
never lifted, a restriction never downgrades an erasure, tenants apart.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from store import suppressions as suppression_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _h(i: int) -> str:
    return f"kh_{i:032x}"


def test_erasure_overrides_restriction_and_is_never_lifted(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        add = suppression_store.add_suppressions
        assert add(conn, "acme", [_h(1), _h(2), _h(2)], reason="restrict", request_id="r1", now=T0) == 2
        assert add(conn, "acme", [_h(2), _h(3)], reason="erase", request_id="r2", now=T0) == 2
        add(conn, "acme", [_h(3)], reason="object", request_id="r3", now=T0)  # erasure stays
        add(conn, "other", [_h(9)], reason="object", request_id="r4", now=T0)
        assert suppression_store.suppressed_keys(conn, "acme") == {_h(1), _h(2), _h(3)}
        assert suppression_store.count_suppressions(conn, "acme") == {"restrict": 1, "erase": 2}
        t = suppression_store.suppressions
        rows = dict(conn.execute(select(t.c.key_hash, t.c.request_id).where(t.c.tenant == "acme")).all())
        assert rows == {_h(1): "r1", _h(2): "r2", _h(3): "r2"}
        # lifting removes the restriction only; the erased subject stays suppressed
        assert suppression_store.lift_suppressions(conn, "acme", [_h(1), _h(2), _h(3)]) == 1
        assert suppression_store.suppressed_keys(conn, "acme") == {_h(2), _h(3)}
        assert suppression_store.suppressed_keys(conn, "other") == {_h(9)}
        assert add(conn, "acme", [], reason="erase", request_id="r5", now=T0) == 0
        with pytest.raises(ValueError, match="suppression reason must be one of erase, restrict, object"):
            add(conn, "acme", [_h(4)], reason="forget", request_id="r6", now=T0)
