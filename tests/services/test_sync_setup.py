"""services.sync_setup: the one create-sync check of ``crmhub sync create`` and the web app's
``POST /syncs`` — tenant, instruction version, both connections existing *and the tenant's*, the
destination another connection unless meant, objects among the connections' live streams, every
mapped field a live one the instruction allows, required destination fields mapped, and a region
known for each connection; a refusal names the field and the fix (exact texts below) and stores
nothing. The connections here are in-memory CRMs with fixed schemas (the checks only call
``streams``/``describe``/``hosting_instance``); against the sandbox CRMs the same checks run in
tests/api/web/test_web_new_sync.py, through the CLI in tests/api/test_cli_sync_create.py, and a
sync created with every optional field left empty runs in tests/e2e/test_first_sync.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from api.demo import demo_instruction
from connectors.base import Connector
from governance.policy import ProcessingInstruction
from governance.registry import load_registry
from schemas.connector import (
    CheckResult,
    FieldSpec,
    Page,
    Record,
    StreamSchema,
    StreamSpec,
    StreamState,
    WriteMode,
    WriteResult,
)
from schemas.errors import ConfigError
from services.sync_setup import NewSyncRefused, SyncSetup, suggest, type_mismatch
from services.wiring import default_subprocessors_file
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from tests.api.web.conftest import make_tenant


def _f(name: str, type_: str, label: str = "", **kw: Any) -> FieldSpec:
    return FieldSpec(name=name, type=type_, label=label, writable=kw.pop("writable", True), **kw)


SF_CONTACT = StreamSchema(
    stream="Contact",
    fields=(
        _f("Id", "id", "Contact ID", nullable=False, writable=False),
        _f("Email", "email", "Email", external_id=True),
        _f("FirstName", "string", "First Name"),
        _f("LastName", "string", "Last Name", nullable=False, required=True),
        _f("Phone", "phone", "Business Phone"),
        _f("MailingCountry", "string", "Mailing Country"),
        _f("Rating", "picklist", "Rating"),
        _f("Birthdate", "date", "Birthdate"),
        _f("AccountId", "reference", "Account ID"),
        _f("SystemModstamp", "datetime", "System Modstamp", nullable=False, writable=False),
    ),
)
HS_CONTACTS = StreamSchema(
    stream="contacts",
    fields=(
        _f("email", "string", "Email", unique=True, external_id=True),
        _f("firstname", "string", "First Name"),
        _f("lastname", "string", "Last Name"),
        _f("phone", "string", "Phone Number"),
        _f("rating", "number", "Rating"),
        _f("date_of_birth", "date", "Date of birth"),
        _f("hs_object_id", "number", "Record ID", nullable=False, writable=False),
    ),
)
SF_STREAMS = [StreamSpec(name=n, primary_key="Id") for n in ("Account", "Contact", "Lead")]
HS_STREAMS = [
    StreamSpec(name="contacts", primary_key="hs_object_id", default_external_id="email"),
    StreamSpec(name="companies", primary_key="hs_object_id"),
]


class FixedCRM(Connector):
    """A connection whose streams and schemas are fixed; reads and writes are not the check's."""

    name: ClassVar[str] = "fixed"
    config_model: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, provider: str, hosted: str | None) -> None:
        self.provider = provider
        self.hosted = hosted

    def check(self) -> CheckResult:
        return CheckResult(ok=True, message="fixed")

    def streams(self) -> list[StreamSpec]:
        return SF_STREAMS if self.provider == "salesforce" else HS_STREAMS

    def describe(self, stream: str) -> StreamSchema:
        schema = SF_CONTACT if self.provider == "salesforce" else HS_CONTACTS
        assert schema.stream == stream, f"the check described {stream} after the streams check"
        return schema

    def hosting_instance(self) -> str | None:
        return self.hosted

    def read_page(self, stream: str, state: StreamState, page_size: int, fields: Sequence[str]) -> Page:
        raise AssertionError("the new-sync check never reads records")

    def write_batch(
        self, stream: str, records: Sequence[Record], mode: WriteMode, *, external_id: str
    ) -> WriteResult:
        raise AssertionError("the new-sync check never writes records")


class FixedConnectors:
    """Connectors of the test's connections; ``hosted`` is what each vendor says at :meth:`locate`
    (stored with the connection, as :meth:`ConnectionConnectors.locate` does)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hosted: dict[str, str | None] = {}
        self.located: list[str] = []

    def _provider(self, connection_id: str) -> str:
        with self.engine.connect() as conn:
            row = connection_store.get_connection(conn, connection_id)
        assert row is not None
        return row.provider

    def __call__(self, connection_id: str) -> Connector:
        return FixedCRM(self._provider(connection_id), self.hosted.get(connection_id))

    def locate(self, connection_id: str) -> str | None:
        self.located.append(connection_id)
        instance = self.hosted.get(connection_id)
        if instance is not None:
            with self.engine.begin() as conn:
                connection_store.set_region_instance(conn, connection_id, instance, now=datetime.now(UTC))
        return instance


def add_connection(
    engine: Engine, tenant: str, connection_id: str, provider: str, region: str | None
) -> None:
    with engine.begin() as conn:
        connection_store.insert_connection(
            conn,
            id=connection_id,
            tenant=tenant,
            provider=provider,
            instance_url="https://acme.my.salesforce.com"
            if provider == "salesforce"
            else "https://127.0.0.1:9999",  # a host no registry endpoint names (like the sandbox's)
            scopes=("api",),
            access_token_sealed=b"sealed-a",
            refresh_token_sealed=b"sealed-r",
            access_expires_at=None,
            now=datetime.now(UTC),
        )
        connection_store.set_region_instance(conn, connection_id, region, now=datetime.now(UTC))


def add_instruction(engine: Engine, ins: ProcessingInstruction) -> None:
    with engine.begin() as conn:
        instruction_store.add_instruction(
            conn,
            tenant=ins.tenant,
            version=ins.version,
            content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash,
            now=datetime.now(UTC),
        )


def both_ways(tenant: str, version: int) -> ProcessingInstruction:
    """The demo's instruction plus HubSpot contacts fields (for HubSpot → Salesforce)."""
    data = demo_instruction(tenant, version).model_dump(mode="json")
    data["allowed_fields"]["contacts"] = ["email", "firstname", "phone"]
    return ProcessingInstruction.model_validate(data)


@pytest.fixture
def two_tenants(db_engine: Engine) -> Engine:
    """acme and globex, each with instruction v1 (the demo's), v2 (both ways), a Salesforce (EU) and
    a HubSpot (eu1) connection whose regions were read at connect."""
    for tenant in ("acme", "globex"):
        make_tenant(db_engine, tenant)
        add_instruction(db_engine, demo_instruction(tenant, 1))
        add_instruction(db_engine, both_ways(tenant, 2))
        add_connection(db_engine, tenant, f"{tenant}-sf", "salesforce", "eu")
        add_connection(db_engine, tenant, f"{tenant}-hs", "hubspot", "eu1")
    return db_engine


@pytest.fixture
def connectors(two_tenants: Engine) -> FixedConnectors:
    return FixedConnectors(two_tenants)


@pytest.fixture
def setup(two_tenants: Engine, connectors: FixedConnectors) -> SyncSetup:
    return SyncSetup(two_tenants, connectors, load_registry(default_subprocessors_file()))


def definition(**change: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tenant": "acme",
        "id": "contacts",
        "source_connection_id": "acme-sf",
        "source_stream": "Contact",
        "destination_connection_id": "acme-hs",
        "destination_stream": "contacts",
        "mapping": {"Email": "email", "FirstName": "firstname"},
        "destination_id_property": "email",
        "source_key_property": "Email",
        "instruction_version": 1,
    }
    return {**spec, **change}


def spec_of(**change: Any) -> sync_store.SyncSpec:
    return sync_store.SyncSpec.model_validate(definition(**change))


def syncs_of(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(sync_store.syncs)).scalar_one())


def refusal(setup: SyncSetup, spec: sync_store.SyncSpec, **kw: Any) -> NewSyncRefused:
    with pytest.raises(NewSyncRefused) as err:
        setup.create(spec, **kw)
    assert syncs_of(setup.engine) == 0
    return err.value


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        ({"tenant": "initech"}, "tenant", "crmhub tenant create initech"),
        ({"instruction_version": 4}, "instruction_version", "crmhub instruction load FILE"),
        ({"source_connection_id": "nope"}, "source_connection_id", "crmhub connections list --tenant acme"),
        (
            {"source_connection_id": "globex-sf"},
            "source_connection_id",
            "crmhub connections list --tenant acme",
        ),
        ({"destination_connection_id": "globex-hs"}, "destination_connection_id", "crmhub connect PROVIDER"),
    ],
)
def test_the_store_check_names_the_field_and_the_fix_and_stores_nothing(
    setup: SyncSetup, change: dict[str, Any], field: str, fix: str
) -> None:
    err = refusal(setup, spec_of(**change))
    assert err.field == field and err.message.startswith(f"{field}: ") and fix in err.message
    assert err.unknown
    assert "'globex'" not in err.message  # another tenant's connection is not said to be one
    if field.endswith("connection_id"):  # reads exactly like an unknown id
        same = refusal(setup, spec_of(**{field: "unknown-id"}))
        assert same.message == err.message.replace(str(change[field]), "unknown-id")


def test_a_sync_of_the_tenants_own_connections_is_stored_once(setup: SyncSetup) -> None:
    spec = spec_of()
    row = setup.create(spec)
    assert row.spec == spec and row.cursor is None
    with pytest.raises(ConfigError, match="already exists"):
        setup.create(spec)
    assert syncs_of(setup.engine) == 1


def test_the_destination_must_be_another_connection_unless_meant(setup: SyncSetup) -> None:
    into_itself = spec_of(
        destination_connection_id="acme-sf",
        destination_stream="Contact",
        mapping={"Email": "Email", "LastName": "LastName"},
        destination_id_property="Email",
    )
    err = refusal(setup, into_itself)
    assert err.message == (
        "destination_connection_id: the destination is the source connection (acme-sf); pick another "
        "destination connection, or, if you mean to sync salesforce into itself, say so (web form: "
        "tick 'same connection'; CLI: --same-connection)"
    )
    assert not err.unknown
    assert setup.create(into_itself, same_connection=True).spec == into_itself


def test_a_typo_in_an_object_is_refused_with_the_closest_names(setup: SyncSetup) -> None:
    err = refusal(setup, spec_of(source_stream="Contacts"))
    assert err.field == "source_stream" and not err.unknown
    assert err.message == (
        "source_stream: the salesforce connection has no object 'Contacts'; did you mean Contact? "
        "(its objects: Account, Contact, Lead)"
    )
    err = refusal(setup, spec_of(destination_stream="contact"))
    assert err.message == (
        "destination_stream: the hubspot connection has no object 'contact'; did you mean contacts? "
        "(its objects: companies, contacts)"
    )
    err = refusal(setup, spec_of(source_stream="Opportunity"))  # nothing close: no guess
    assert err.message.startswith("source_stream: the salesforce connection has no object 'Opportunity' (")


def test_unknown_and_unallowed_source_fields(setup: SyncSetup) -> None:
    err = refusal(setup, spec_of(mapping={"Emial": "email"}))
    assert err.message == "mapping: the salesforce object Contact has no field 'Emial'; did you mean Email?"
    err = refusal(setup, spec_of(source_key_property="EMail"))
    assert err.message == (
        "source_key_property: the salesforce object Contact has no field 'EMail'; did you mean Email?"
    )
    err = refusal(setup, spec_of(mapping={"Email": "email", "Birthdate": "date_of_birth"}))
    assert err.field == "mapping"
    assert err.message == (
        "mapping: instruction v1 does not allow Contact.Birthdate, which sync 'contacts' reads through its "
        "mapping (→ date_of_birth); fix: allow Birthdate in allowed_fields.Contact of a new instruction "
        "version, or drop it from the sync's mapping"
    )


def test_unknown_read_only_and_required_destination_fields(setup: SyncSetup) -> None:
    err = refusal(setup, spec_of(mapping={"Email": "email", "FirstName": "frstname"}))
    assert (
        err.message
        == "mapping: the hubspot object contacts has no field 'frstname'; did you mean firstname or lastname?"
    )
    err = refusal(setup, spec_of(mapping={"Email": "email", "Phone": "hs_object_id"}))
    assert err.message == (
        "mapping: field hs_object_id of the hubspot object contacts is read-only; map a writable field"
    )
    err = refusal(setup, spec_of(destination_id_property="e-mail"))
    assert (
        err.message
        == "destination_id_property: the hubspot object contacts has no field 'e-mail'; did you mean email?"
    )
    to_sf = spec_of(
        source_connection_id="acme-hs",
        source_stream="contacts",
        destination_connection_id="acme-sf",
        destination_stream="Contact",
        mapping={"email": "Email", "firstname": "FirstName"},
        source_key_property="email",
        destination_id_property="Email",
        instruction_version=2,
    )
    err = refusal(setup, to_sf)
    assert (
        err.message
        == "mapping: the salesforce object Contact requires LastName on create; map a source field to it"
    )


def test_the_region_comes_from_the_vendor_and_is_asked_again_when_unknown(
    setup: SyncSetup, connectors: FixedConnectors
) -> None:
    with setup.engine.begin() as conn:  # the connect could not read it (vendor down, say)
        connection_store.set_region_instance(conn, "acme-hs", None, now=datetime.now(UTC))
    err = refusal(setup, spec_of())
    assert connectors.located == ["acme-hs"]
    assert err.message == (
        "destination_endpoint: hubspot did not say where connection acme-hs's data is hosted; name its "
        "endpoint instance (destination_endpoint: one of eu1, na1)"
    )
    connectors.hosted["acme-hs"] = "ap1"  # a location the registry does not list
    err = refusal(setup, spec_of())
    assert err.message == (
        "destination_endpoint: the subprocessor registry lists no hubspot endpoint 'ap1'; its hubspot "
        "endpoints: eu1, na1 (register 'ap1' in the registry if the data lives there)"
    )
    err = refusal(setup, spec_of(source_endpoint="euu"))  # a typo in a named endpoint
    assert err.message == (
        "source_endpoint: the subprocessor registry lists no salesforce endpoint 'euu'; did you mean eu?; "
        "its salesforce endpoints: eu, na, uk (register 'euu' in the registry if the data lives there)"
    )
    with setup.engine.begin() as conn:  # unknown again; this time the vendor answers eu1
        connection_store.set_region_instance(conn, "acme-hs", None, now=datetime.now(UTC))
    connectors.hosted["acme-hs"] = "eu1"
    row = setup.create(spec_of())  # every optional field left empty
    assert row.spec.source_endpoint is None and row.spec.destination_endpoint is None
    with setup.engine.connect() as conn:
        stored = connection_store.get_connection(conn, "acme-hs")
    assert stored is not None and stored.region_instance == "eu1"


def test_the_mapping_editor_lists_allowed_fields_auto_matched_with_flags(setup: SyncSetup) -> None:
    draft = setup.draft("acme", 1, ("acme-sf", "Contact"), ("acme-hs", "contacts"))
    rows = {r.source.name: r for r in draft.rows}
    assert sorted(rows) == sorted(
        ["Id", "Email", "FirstName", "LastName", "Phone", "MailingCountry", "SystemModstamp"]
    )
    assert "Birthdate" not in rows and "Rating" not in rows  # outside the instruction: not offered
    assert draft.suggested() == {
        "Email": "email",
        "FirstName": "firstname",
        "LastName": "lastname",
        "Phone": "phone",
    }
    assert rows["Phone"].source.type == "phone" and rows["Phone"].mismatch is None
    assert "hs_object_id" not in {f.name for f in draft.destination_fields}  # read-only
    assert (draft.destination_id, draft.source_key) == ("email", "Email")
    assert draft.required == ()

    back = setup.draft("acme", 2, ("acme-hs", "contacts"), ("acme-sf", "Contact"))
    assert back.required == ("LastName",)
    assert back.unmapped_required(back.suggested()) == ("LastName",)
    assert back.suggested() == {"email": "Email", "firstname": "FirstName", "phone": "Phone"}

    with pytest.raises(NewSyncRefused) as err:
        setup.draft("acme", 1, ("acme-sf", "Contacts"), ("acme-hs", "contacts"))
    assert "did you mean Contact?" in err.value.message
    with pytest.raises(NewSyncRefused) as err:
        setup.draft("acme", 1, ("acme-sf", "Lead"), ("acme-hs", "contacts"))
    assert err.value.message == (
        "source_stream: instruction v1 allows no field of Lead; list the fields in allowed_fields.Lead of "
        "a new instruction version (Instruction page), or pick an object it covers (Contact)"
    )


def test_type_mismatches_and_suggestions() -> None:
    assert type_mismatch("picklist", "number") == "picklist values into a number field"
    assert type_mismatch("double", "string") is None  # anything fits a text field
    assert type_mismatch("date", "datetime") is None  # converted (connectors.values)
    assert type_mismatch("boolean", "bool") is None
    assert type_mismatch("string", "date") == "string values into a date field"
    assert suggest("Contacts", ["Account", "Contact", "Lead"]) == "; did you mean Contact?"
    assert suggest("zzz", ["Account"]) == ""


def test_a_custom_object_is_suggested_by_name_and_by_its_vendor_id(
    setup: SyncSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    projects = StreamSpec(
        name="projects",
        primary_key="hs_object_id",
        default_external_id="project_code",
        custom=True,
        aliases=("2-1000001", "p24681357_projects"),
    )
    monkeypatch.setattr(f"{__name__}.HS_STREAMS", [*HS_STREAMS, projects])
    err = refusal(setup, spec_of(destination_stream="2-1000001"))
    assert err.field == "destination_stream" and err.message == (
        "destination_stream: the hubspot connection has no object '2-1000001'; did you mean projects? "
        "(2-1000001 is its hubspot id; a sync names the object) (its objects: companies, contacts, projects)"
    )
    err = refusal(setup, spec_of(destination_stream="project"))
    assert "did you mean projects?" in err.message
    err = refusal(setup, spec_of(destination_stream="2-1000010"))  # a near miss of the objectTypeId
    assert "did you mean projects?" in err.message
    assert (
        suggest("2-100001", ["contacts", "2-1000001"], {"2-1000001": "projects"})
        == "; did you mean projects?"
    )


def test_a_relationship_is_no_destination_field(setup: SyncSetup) -> None:
    """``{lookup: "@companies"}`` declares a relationship (workflows.associations): the destination
    check does not look for a property ``@companies`` (the plan checks its parent sync), while the
    lookup field is checked like any mapped source field (live at the source, allowed)."""
    err = refusal(setup, spec_of(mapping={"Email": "email", "Emial": "@companies"}))
    assert err.message == "mapping: the salesforce object Contact has no field 'Emial'; did you mean Email?"
    row = setup.create(spec_of(mapping={"Email": "email", "FirstName": "@companies"}))
    assert row.spec.mapping["FirstName"] == "@companies"
    assert syncs_of(setup.engine) == 1


def test_a_relationship_read_at_the_source_is_no_source_field(setup: SyncSetup) -> None:
    """``{"@companies": lookup}`` reads a relationship at the source (workflows.reverse_links): the
    source check does not look for a property ``@companies``, the instruction must allow it like any
    field, and the destination lookup field is checked like any mapped destination field."""
    data = both_ways("acme", 3).model_dump(mode="json")
    data["allowed_fields"]["contacts"] = ["email", "firstname", "lastname"]
    add_instruction(setup.engine, ProcessingInstruction.model_validate({**data, "version": 3}))
    data["allowed_fields"]["contacts"] += ["@companies"]
    add_instruction(setup.engine, ProcessingInstruction.model_validate({**data, "version": 4}))
    mapping = {"email": "Email", "firstname": "FirstName", "lastname": "LastName", "@companies": "AccountId"}
    to_sf = {
        "source_connection_id": "acme-hs", "source_stream": "contacts",
        "destination_connection_id": "acme-sf", "destination_stream": "Contact", "mapping": mapping,
        "source_key_property": "email",
        "destination_id_property": "Email",
    }  # fmt: skip
    err = refusal(setup, spec_of(**to_sf, instruction_version=3))
    assert err.field == "mapping" and "@companies" in err.message
    typo = {**to_sf, "mapping": {**mapping, "@companies": "AccountIdd"}}
    err = refusal(setup, spec_of(**typo, instruction_version=4))
    assert err.message.startswith("mapping: the salesforce object Contact has no field 'AccountIdd'")
    row = setup.create(spec_of(**to_sf, instruction_version=4))
    assert row.spec.mapping["@companies"] == "AccountId"


def test_an_association_stream_takes_its_two_ends_and_no_field(setup: SyncSetup) -> None:
    """``companies/contacts`` is an association stream (workflows.junctions): both ends must be
    writable objects of the destination, the lookups are checked like any mapped source field, and a
    mapped field that is no end is refused (an association has no properties to write it to)."""
    junction = {"destination_stream": "companies/contacts", "destination_id_property": "external_id"}
    err = refusal(setup, spec_of(**junction, mapping={"Email": "@contacts", "FirstName": "lastname"}))
    assert err.field == "mapping" and "companies/contacts is an association stream" in err.message
    err = refusal(setup, spec_of(**{**junction, "destination_stream": "companies/contact"}))
    assert err.field == "destination_stream" and "did you mean contacts?" in err.message
    err = refusal(setup, spec_of(**junction, mapping={"Email": "@contacts", "Emial": "@companies"}))
    assert err.message == "mapping: the salesforce object Contact has no field 'Emial'; did you mean Email?"
    row = setup.create(spec_of(**junction, mapping={"Email": "@contacts", "FirstName": "@companies"}))
    assert row.spec.destination_stream == "companies/contacts" and syncs_of(setup.engine) == 1


def test_a_label_is_taken_on_an_association_stream_only(setup: SyncSetup) -> None:
    """``@label`` (workflows.junction_labels) labels an association pair: refused on a sync into
    records, taken on a junction sync (its source field checked like any mapped one)."""
    err = refusal(setup, spec_of(mapping={"Email": "email", "LastName": "@label"}))
    assert err.field == "mapping" and "@label labels association pairs" in err.message
    junction = {"destination_stream": "companies/contacts", "destination_id_property": "external_id"}
    labeled = {"Email": "@contacts", "FirstName": "@companies", "LastNmae": "@label"}
    err = refusal(setup, spec_of(**junction, mapping=labeled))
    assert err.message.startswith("mapping: the salesforce object Contact has no field 'LastNmae'")
    row = setup.create(spec_of(**junction, mapping={"Email": "@contacts", "FirstName": "@companies",
                                                    "LastName": "@label"}))  # fmt: skip
    assert row.spec.mapping["LastName"] == "@label"
