"""Bad input (issue 7, scenario 7): the corpus of ``tests/chaos/corpus.py`` — the Big List of Naughty
Strings, NUL, U+2028, RTL override, 4-byte emoji, BOM, NFC/NFD-colliding ids, 2 MB values, NaN/±inf,
and malformed JSON (truncated, invalid, NaN, duplicate keys, 10k-deep nesting, BOM, lone surrogates,
not UTF-8, 2 MB bodies) — through every parser and both sync directions.

* **Parsers** (in process): the sandbox CRMs' request bodies and SOQL, the processing-instruction
  and settings YAML loaders, the web app's and audit API's bodies, the codec server's payloads.
  Malformed input → a 4xx with the vendor's error shape (sandbox) or a typed ``schemas.errors``
  kind (product); never a 500, an unhandled exception or a hang.
* **Connectors** (real dev server, sandbox over HTTPS, OAuth, ``db_url``): records whose values are
  the corpus go Salesforce → HubSpot and HubSpot → Salesforce. Every source record is accounted
  for: it landed with its values byte-identical (after the instruction's pseudonymization) or it
  was dead-lettered with a vendor or local reason; the run's counts and the ledger agree. NaN/±inf
  are refused (dead letter INVALID_NUMBER), NFC/NFD-colliding external ids land as two records,
  2 MB values are refused by the vendor's limit without failing their batch.

Reduced (CI): every corpus string once per direction (≈ 500 records each); full
(``CRMHUB_CHAOS_FULL=1``): 5 seeded shuffles of the corpus per direction.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.demo import _workers
from governance.pseudonym import Pseudonymizer
from sandbox.hubspot.objects import MAX_VALUE_CHARS
from schemas.sync import Progress, SyncMode, SyncStatus
from store import dead_letters as dead_letter_store
from tests.chaos.corpus import SPECIAL, TWO_MB, naughty_strings, nfc_nfd_pair
from tests.chaos.support import size
from tests.sync_support import Direction, World, check_ledger, create_sync, source_records

pytestmark = [pytest.mark.chaos]

SEED = 7
ROUNDS = size(1, 5)  # passes over the corpus per direction


def corpus_values(rounds: int = ROUNDS, seed: int = SEED) -> list[str]:
    """Every naughty and special string ``rounds`` times, each pass in a seeded order."""
    base = [*naughty_strings(), *SPECIAL.values()]
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(rounds):
        out += rng.sample(base, len(base))
    return out


# -- the end-to-end syncs -------------------------------------------------------------------------


# The directions' plumbing (tenant, OAuth connections, instruction v1 = exactly the mapped fields,
# the sync, a run) is tests/sync_support.py's.
SF_TO_HS = Direction(
    tenant="naughty-sf",
    source="salesforce",
    source_stream="Contact",
    destination="hubspot",
    destination_stream="contacts",
    mapping={
        "FirstName": "firstname",
        "LastName": "lastname",
        "MailingCountry": "country",
        "Email": "email",
        "Phone": "phone",
        "Lead_Score__c": "lead_score",
    },
    source_key="External_Id__c",
    destination_id="external_id",
    cursor_field="SystemModstamp",
    pseudonymize=("Phone",),
)
HS_TO_SF = Direction(
    tenant="naughty-hs",
    source="hubspot",
    source_stream="contacts",
    destination="salesforce",
    destination_stream="Contact",
    mapping={
        "firstname": "FirstName",
        "lastname": "LastName",
        "country": "MailingCountry",
        "score_text": "Lead_Score__c",  # a text property into a Salesforce number
    },
    source_key="hs_object_id",
    destination_id="External_Id__c",
    cursor_field="lastmodifieddate",
)
ID_FIELD = {"salesforce": "Id", "hubspot": "hs_object_id"}  # what dead letters and lineage hash


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 2, "continue_as_new_after_batches": 3}


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _same(landed: Any, sent: Any) -> bool:
    """Byte-identical text; numbers by value (HubSpot stores them as decimal strings)."""
    if _blank(sent):
        return _blank(landed)
    if isinstance(sent, float | int) and not isinstance(sent, bool):
        return landed is not None and float(landed) == float(sent)
    if isinstance(landed, float | int) and not isinstance(landed, bool):  # Salesforce numbers
        return float(sent) == float(landed)
    return isinstance(landed, str) and landed.encode("utf-8") == str(sent).encode("utf-8")


@dataclass
class Accounting:
    landed: set[str]
    dead: Counter[str]  # error code → records
    dead_keys: set[str]


def _account(world: World, d: Direction, source: list[dict[str, Any]]) -> Accounting:
    """Each source record landed intact or was dead-lettered — exactly one of the two."""
    vault = world.connected.vault
    pseudonyms = Pseudonymizer(vault)
    with world.connected.engine.connect() as conn:
        letters = dead_letter_store.list_dead_letters(conn, d.tenant, d.sync_id, limit=100_000)
    by_hash = {dl.record_key_hash: dl for dl in letters}
    assert len(by_hash) == len(letters), "a record was dead-lettered twice"
    dest = world.crm(d.destination).live_records(d.destination_stream)
    dest_keys = [r.get(d.destination_id) for r in dest]
    duplicated = [k for k, n in Counter(dest_keys).items() if n > 1]
    assert not duplicated, f"{len(duplicated)} external ids duplicated at the destination"
    by_key = {r.get(d.destination_id): r for r in dest}
    landed: set[str] = set()
    dead: Counter[str] = Counter()
    for rec in source:
        rid = str(rec[ID_FIELD[d.source]])
        key = str(rec[d.source_key])
        kh = pseudonyms.keyed_hash(d.tenant, rid)
        letter = by_hash.get(kh)
        got = by_key.get(key)
        if letter is not None:
            assert got is None, f"record {rid} was dead-lettered ({letter.error_code}) yet landed"
            assert letter.error_code and letter.error_message, f"dead letter of {rid} without a reason"
            dead[letter.error_code] += 1
            continue
        assert got is not None, f"record {rid} neither landed nor was dead-lettered"
        for src, dst in d.mapping.items():
            sent = rec.get(src)
            if src in d.pseudonymize and not _blank(sent):
                sent = pseudonyms.pseudonymize(d.tenant, sent)
            assert _same(got.get(dst), sent), f"{dst} of record {rid} is not the source {src} intact"
        landed.add(rid)
    assert len(landed) == len(dest), "the destination holds records that are not from the source"
    return Accounting(landed, dead, {dl.record_key_hash for dl in letters})


def _check_counts(world: World, d: Direction, progress: Progress, n: int, acc: Accounting) -> None:
    assert progress.status is SyncStatus.COMPLETED, progress
    assert progress.counts.pulled == n
    assert progress.counts.pushed == len(acc.landed)
    quarantined = acc.dead[dead_letter_store.QUARANTINED]  # held at the pull: the value does not fit its type
    refused = sum(acc.dead.values()) - quarantined  # refused at the push (vendor or local reason)
    assert progress.counts.failed == refused
    assert progress.counts.quarantined == quarantined
    assert len(acc.landed) + refused + quarantined == n  # nothing filtered in these syncs
    counts = check_ledger(world, d)  # verifies offline too
    assert counts["pull.records"] == n
    assert counts["push.pushed"] == len(acc.landed)
    assert counts.get("push.failed", 0) == refused
    assert counts.get("quarantine.records", 0) == quarantined


async def _sync_and_account(world: World, d: Direction, n: int) -> tuple[list[dict[str, Any]], Accounting]:
    """A full sync of ``d``'s ``n`` source records; each accounted for, and counts = lineage."""
    await create_sync(world, d)
    async with _workers(world.settings):
        progress = await world.run(d, SyncMode.FULL)
    source = source_records(world, d)
    assert len(source) == n
    acc = _account(world, d, source)
    _check_counts(world, d, progress, n, acc)
    return source, acc


@pytest.mark.integration
async def test_salesforce_to_hubspot_accounts_for_every_naughty_record(world: World) -> None:
    d = SF_TO_HS
    sf = world.sandbox.salesforce
    values = corpus_values()
    rng = random.Random(SEED)
    nfc, nfd = nfc_nfd_pair()
    special: dict[str, dict[str, Any]] = {
        # (A Salesforce number cannot be NaN; these arrive as the strings a broken source would send.)
        "nan": {"Lead_Score__c": "NaN"},
        "inf": {"Lead_Score__c": "Infinity"},
        "-inf": {"Lead_Score__c": "-Infinity"},
        "huge-finite": {"Lead_Score__c": 1e300},
        "two-mb": {"FirstName": "x" * TWO_MB},
        "at-limit": {"LastName": "y" * MAX_VALUE_CHARS},
        "bad-email": {"Email": "not an email \u202e@\U0001f600"},
        "id-" + nfc: {"FirstName": "composed"},
        "id-" + nfd: {"FirstName": "decomposed"},
        "id-\U0001f600\u2028\u202e": {"FirstName": "emoji id"},
        "   ": {"FirstName": "blank external id"},
    }
    for i, v in enumerate(values):
        fields = {
            "External_Id__c": f"ext-{i}",
            "FirstName": v,
            "LastName": values[(i * 7 + 3) % len(values)],
            "MailingCountry": values[(i * 13 + 5) % len(values)],
            "Phone": v if i % 3 == 0 else None,
            "Email": f"c{i}@example.test",
            "Lead_Score__c": rng.choice([None, 0, -1.5, 42, 1e15]),
        }
        sf.create_record("Contact", fields)
    for key, extra in special.items():
        sf.create_record("Contact", {"External_Id__c": key, "LastName": "Special", **extra})
    source, acc = await _sync_and_account(world, d, len(values) + len(special))
    by_ext = {r["External_Id__c"]: str(r["Id"]) for r in source}
    assert {by_ext["nan"], by_ext["inf"], by_ext["-inf"], by_ext["   "]}.isdisjoint(acc.landed)
    # NaN, inf, -inf in a number field: refused with a reason (quarantined by the pull's type contract)
    assert acc.dead[dead_letter_store.QUARANTINED] == 3, acc.dead
    assert acc.dead["MISSING_EXTERNAL_ID"] >= 1, acc.dead
    assert by_ext["two-mb"] not in acc.landed and acc.dead["INVALID_LONG_STRING"] >= 1, acc.dead
    assert by_ext["at-limit"] in acc.landed  # exactly at the vendor's limit: lands
    assert by_ext["huge-finite"] in acc.landed
    # NFC/NFD-colliding external ids: two records, neither merged into the other.
    assert {by_ext["id-" + nfc], by_ext["id-" + nfd]} <= acc.landed
    assert unicodedata.normalize("NFC", nfd) == nfc
    # Most of the corpus lands: what is refused is refused for a stated reason, not wholesale.
    assert len(acc.landed) >= len(values) * 0.9, acc.dead


@pytest.mark.integration
async def test_hubspot_to_salesforce_accounts_for_every_naughty_record(world: World) -> None:
    d = HS_TO_SF
    hs = world.sandbox.hubspot
    hs.add_property("contacts", "score_text")
    values = corpus_values()
    for i, v in enumerate(values):
        hs.create_record(
            "contacts",
            {"firstname": v, "lastname": values[(i * 7 + 3) % len(values)], "country": f"{i}:{v}"},
        )
    special = [
        {"firstname": "long", "lastname": "z" * MAX_VALUE_CHARS},  # over Salesforce's 80
        {"firstname": "nameless"},  # LastName is required by Salesforce
        {"firstname": SPECIAL["nul"], "lastname": SPECIAL["rtl_override"]},
        *({"lastname": "Score", "score_text": t} for t in ("NaN", "Infinity", "-Infinity", "1e999")),
        {"lastname": "Score", "score_text": "42"},
    ]
    for fields in special:
        hs.create_record("contacts", fields)
    _, acc = await _sync_and_account(world, d, len(values) + len(special))
    assert acc.dead["STRING_TOO_LONG"] >= 1 and acc.dead["REQUIRED_FIELD_MISSING"] >= 1, acc.dead
    assert acc.dead["INVALID_TYPE_ON_FIELD_IN_RECORD"] == 4, acc.dead  # NaN, ±Infinity, 1e999 refused
    expected = {"STRING_TOO_LONG", "REQUIRED_FIELD_MISSING", "INVALID_TYPE_ON_FIELD_IN_RECORD"}
    assert set(acc.dead) <= expected, acc.dead


# -- the parsers ------------------------------------------------------------------------------------

HS_BODY_PATHS = [
    *(f"/crm/v3/objects/contacts/batch/{op}" for op in ("read", "create", "update", "upsert", "archive")),
    "/crm/v3/objects/contacts/search",
    "/crm/v3/objects/contacts",
    "/crm/v3/properties/contacts",
]
SF_V = "/services/data/v59.0"
SF_BODY_CALLS = [
    ("POST", f"{SF_V}/composite/sobjects"),
    ("PATCH", f"{SF_V}/composite/sobjects"),
    ("PATCH", f"{SF_V}/composite/sobjects/Contact/External_Id__c"),
    ("POST", f"{SF_V}/sobjects/Contact"),
    ("PATCH", f"{SF_V}/sobjects/Contact/External_Id__c/ext-1"),
    ("POST", f"{SF_V}/jobs/query"),
]


def _hubspot_error(body: Any) -> bool:
    return isinstance(body, dict) and body.get("status") == "error" and bool(body.get("category"))


def _salesforce_error(body: Any) -> bool:
    return isinstance(body, list) and bool(body) and all("errorCode" in e and "message" in e for e in body)


def _clients() -> tuple[Any, dict[str, str], Any, dict[str, str]]:
    from starlette.testclient import TestClient

    from sandbox.hubspot.app import HubSpotSandbox
    from sandbox.salesforce.app import SalesforceSandbox

    hs = HubSpotSandbox(burst_limit=None, search_per_second=None)
    sf = SalesforceSandbox()
    hs_auth = {"authorization": f"Bearer {hs.issue_private_app_token()}", "content-type": "application/json"}
    sf_auth = {"authorization": f"Bearer {sf.issue_token()}", "content-type": "application/json"}
    return (
        TestClient(hs.app(), raise_server_exceptions=False),
        hs_auth,
        TestClient(sf.app(), raise_server_exceptions=False),
        sf_auth,
    )


def test_sandbox_parsers_answer_malformed_json_with_vendor_errors() -> None:
    """Every body of the corpus at every body-taking endpoint: a 2xx or a 4xx in the vendor's error
    shape — never a 5xx. NaN/Infinity, too-deep nesting and unpaired surrogates are 400s."""
    from tests.chaos.corpus import BAD_JSON

    hs, hs_auth, sf, sf_auth = _clients()
    refused = Counter[str]()
    for name, body in BAD_JSON.items():
        for path in HS_BODY_PATHS:
            r = hs.post(path, content=body, headers=hs_auth)
            assert r.status_code < 500, (path, name, r.status_code)
            if r.status_code >= 400:
                assert _hubspot_error(r.json()), (path, name, r.text[:200])
                refused[name] += 1
        r = hs.patch("/crm/v3/objects/contacts/1", content=body, headers=hs_auth)
        assert r.status_code < 500, ("patch", name, r.status_code)
        for method, path in SF_BODY_CALLS:
            r = sf.request(method, path, content=body, headers=sf_auth)
            assert r.status_code < 500, (method, path, name, r.status_code)
            if r.status_code >= 400:
                assert _salesforce_error(r.json()), (path, name, r.text[:200])
                refused[name] += 1
    body_calls = len(HS_BODY_PATHS) + len(SF_BODY_CALLS)
    for name in ("truncated", "invalid", "nan", "infinity", "overflow", "deep_arrays", "deep_objects"):
        assert refused[name] == body_calls, (name, refused[name])
    for name in ("lone_surrogate", "not_utf8", "raw_nul"):
        assert refused[name] == body_calls, (name, refused[name])


def test_sandbox_parsers_take_naughty_values_and_soql_literals() -> None:
    """Each naughty string as a property value, an id, a search value and a SOQL literal: 2xx or a
    vendor-shaped 4xx; what a 2xx stored reads back byte-identical."""
    from connectors.salesforce.soql import quote

    hs, hs_auth, sf, sf_auth = _clients()
    for i, text in enumerate([*naughty_strings(), *SPECIAL.values()]):
        upsert = {"inputs": [{"idProperty": "external_id", "id": f"x{i}", "properties": {"firstname": text}}]}
        r = hs.post("/crm/v3/objects/contacts/batch/upsert", json=upsert, headers=hs_auth)
        assert r.status_code in (200, 400), (i, r.status_code)
        if r.status_code == 200:
            assert (r.json()["results"][0]["properties"].get("firstname") or "") == text, i
        else:
            assert _hubspot_error(r.json()), i
        search = {
            "filterGroups": [{"filters": [{"propertyName": "firstname", "operator": "EQ", "value": text}]}]
        }
        r = hs.post("/crm/v3/objects/contacts/search", json=search, headers=hs_auth)
        assert r.status_code < 500, (i, r.status_code)
        record = {"attributes": {"type": "Contact"}, "LastName": text or "-", "External_Id__c": f"x{i}"}
        r = sf.patch(
            f"{SF_V}/composite/sobjects/Contact/External_Id__c",
            json={"allOrNone": False, "records": [record]},
            headers=sf_auth,
        )
        assert r.status_code == 200, (i, r.status_code)
        soql = f"SELECT Id, LastName FROM Contact WHERE LastName = {quote(text or '-')}"  # noqa: S608 - quote() escapes
        r = sf.get(f"{SF_V}/query", params={"q": soql}, headers=sf_auth)
        assert r.status_code == 200, (i, r.status_code, r.text[:200])
        if r.json()["totalSize"]:
            # Salesforce compares strings case-insensitively; byte-identical up to case.
            assert {rec["LastName"].lower() for rec in r.json()["records"]} == {(text or "-").lower()}, i
    # deep nesting within the 16,384-byte URI limit: the parser refuses it, vendor-shaped
    deep = "SELECT Id FROM Contact WHERE " + "(" * 2500 + "LastName = 'x'" + ")" * 2500
    r = sf.get(f"{SF_V}/query", params={"q": deep}, headers=sf_auth)
    assert r.status_code == 400 and _salesforce_error(r.json())
    # past the limit, Salesforce answers 414 before any parsing (sandbox/salesforce, the URI rule)
    deeper = "SELECT Id FROM Contact WHERE " + "(" * 5000 + "LastName = 'x'" + ")" * 5000
    assert sf.get(f"{SF_V}/query", params={"q": deeper}, headers=sf_auth).status_code == 414


YAML_CASES: dict[str, bytes] = {
    "not_utf8": b"tenant: \xff\xfe\n",
    "deep_flow": b"tenant: " + b"[" * 10_000 + b"]" * 10_000 + b"\n",
    "deep_block": b"".join(b"  " * i + b"a:\n" for i in range(3_000)),
    "nul": b"tenant: a\x00b\n",
    "nan_version": b"tenant: t\nversion: .nan\n",
    "inf_retention": b"tenant: t\nversion: 1\nretention_days: .inf\n",
    "duplicate_key": b"tenant: acme\nversion: 1\ntenant: other\n",
    "python_tag": b"tenant: !!python/object/apply:os.system ['true']\n",
    "truncated": b"tenant: acme\nallowed_fields:\n  Contact: [Id, Em",
    "list_top": b"- a\n- b\n",
    "two_mb": b"tenant: " + b"x" * TWO_MB + b"\n",
}


def test_yaml_loaders_refuse_bad_files_with_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processing instruction and temporal.yaml: every bad file is a ConfigError (never a
    RecursionError, UnicodeDecodeError …); a key given twice in an instruction is refused."""
    from governance.policy import load_instruction
    from schemas.errors import ConfigError
    from schemas.settings import load_settings

    for name, data in YAML_CASES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(data)
        with pytest.raises(ConfigError):
            load_instruction(path)
        monkeypatch.setenv("CRMHUB_CONFIG", str(path))
        with pytest.raises(ConfigError):
            load_settings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="'tenant' appears twice"):
        load_instruction(tmp_path / "duplicate_key.yaml")
