"""The data converter: every payload and failure encrypted, rotation, tamper detection, and a real
Temporal history that holds none of the canaries we put into it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from governance.keys import LocalKeyringProvider
from governance.vault import Vault, key_version_of
from schemas.errors import IntegrityError
from workers.converter import (
    CODEC_TENANT,
    ENCODING,
    KEY_ID_METADATA,
    VaultPayloadCodec,
    make_data_converter,
)

NAMESPACE = "crmhub-test"

# ---- canaries: none of these may appear in an encrypted history --------------------------------

PII_CANARY = "ada.canary.5d1f@example.invalid"
TOKEN_CANARY = "ya29.CANARYTOKEN-8b2e71f0"
RESULT_CANARY = "activity-result-canary-41c9"
EXCEPTION_CANARY = "exception-canary-a07e"
WORKFLOW_FAILURE_CANARY = "workflow-failure-canary-3b6d"
SUMMARY_CANARY = "summary-canary-6c0b"
STACK_TRACE_CANARY = "stack_frame_canary_e91d"  # a function name that only a stack trace shows
ALL_CANARIES = (
    PII_CANARY,
    TOKEN_CANARY,
    RESULT_CANARY,
    EXCEPTION_CANARY,
    WORKFLOW_FAILURE_CANARY,
    STACK_TRACE_CANARY,
    SUMMARY_CANARY,
)


class BatchRef(BaseModel):
    """What crosses Temporal in a sync: a reference to a staged batch (about 300 bytes as JSON)."""

    tenant: str
    sync: str
    batch: str
    blob_key: str
    records: int
    bytes_sealed: int
    cursor: str | None
    pulled_at: datetime
    pages: list[int]


def _batch_ref() -> BatchRef:
    return BatchRef(
        tenant="acme-eu",
        sync="sf-to-hubspot-contacts",
        batch="b-000042",
        blob_key="staging/acme-eu/sf-to-hubspot-contacts/b-000042.bin",
        records=2000,
        bytes_sealed=1_048_576,
        cursor="2026-01-31T12:00:00Z|0035g00000XyZabCDE",
        pulled_at=datetime(2026, 1, 31, 12, 0, tzinfo=UTC),
        pages=[41, 42, 43, 44],
    )


@dataclasses.dataclass
class Point:
    x: int
    y: float


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyringProvider:
    return LocalKeyringProvider(tmp_path / "keyring.json")


@pytest.fixture
def vault(db_engine, provider) -> Vault:
    return Vault(db_engine, provider)


@pytest.fixture
def codec(vault: Vault) -> VaultPayloadCodec:
    return VaultPayloadCodec(vault, NAMESPACE)


# ---- payloads --------------------------------------------------------------------------------


VALUES: list[tuple[Any, Any]] = [
    (None, type(None)),
    ("plain ascii", str),
    ("Ünïcödé ✓ 日本語 " + PII_CANARY, str),
    ("", str),
    (0, int),
    (-(2**62), int),
    (3.25, float),
    (True, bool),
    (b"\x00\x01\xffbinary" + TOKEN_CANARY.encode(), bytes),
    ([1, "two", 3.0, None], list),
    ({"email": PII_CANARY, "nested": {"token": TOKEN_CANARY}}, dict),
    (_batch_ref(), BatchRef),
    (Point(1, 2.5), Point),
    (datetime(2026, 2, 1, 8, 30, tzinfo=UTC), datetime),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID),
    (Decimal("12.50"), Decimal),
    ("x" * 1_000_000, str),
]


def test_round_trip_of_many_types_every_payload_encrypted(vault: Vault) -> None:
    converter = make_data_converter(VaultPayloadCodec(vault, NAMESPACE))
    values = [v for v, _ in VALUES]

    async def go() -> tuple[list[Payload], list[Any]]:
        payloads = await converter.encode(values)
        return payloads, await converter.decode(payloads, [t for _, t in VALUES])

    payloads, decoded = asyncio.run(go())
    assert decoded == values
    assert len(payloads) == len(values)
    for p in payloads:
        assert set(p.metadata) == {"encoding", KEY_ID_METADATA}
        assert p.metadata["encoding"] == ENCODING
        assert p.metadata[KEY_ID_METADATA] == b"1"
        assert key_version_of(p.data) == 1
        for canary in (PII_CANARY, TOKEN_CANARY, "plain ascii", "acme-eu"):
            assert canary.encode() not in p.SerializeToString()


def test_failure_message_and_stack_trace_are_encrypted(vault: Vault) -> None:
    converter = make_data_converter(VaultPayloadCodec(vault, NAMESPACE))

    def raise_it() -> None:
        raise ApplicationError(f"{EXCEPTION_CANARY} for {PII_CANARY}", {"token": TOKEN_CANARY}, type="Boom")

    try:
        raise_it()
    except ApplicationError as exc:
        error = exc

    async def go() -> tuple[Failure, BaseException]:
        failure = Failure()
        await converter.encode_failure(error, failure)
        encoded = Failure()
        encoded.CopyFrom(failure)  # decode_failure decodes in place
        return encoded, await converter.decode_failure(failure)

    failure, back = asyncio.run(go())
    assert failure.message == "Encoded failure"
    assert failure.stack_trace == ""
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    raw = failure.SerializeToString()
    for canary in (EXCEPTION_CANARY, PII_CANARY, TOKEN_CANARY, "raise_it"):
        assert canary.encode() not in raw
    assert failure.application_failure_info.type == "Boom"  # type names stay readable
    assert isinstance(back, ApplicationError)
    assert back.message == f"{EXCEPTION_CANARY} for {PII_CANARY}"
    assert back.details == ({"token": TOKEN_CANARY},)
    assert "raise_it" in failure_stack(back)


def failure_stack(exc: BaseException) -> str:
    assert isinstance(exc, ApplicationError) and exc.failure is not None
    return exc.failure.stack_trace


def test_rotation_old_payloads_decode_new_use_newest_key(db_engine, provider, vault: Vault) -> None:
    codec = VaultPayloadCodec(vault, NAMESPACE)
    old = asyncio.run(codec.encode([Payload(data=b"sealed under v1")]))
    assert old[0].metadata[KEY_ID_METADATA] == b"1"

    assert vault.rotate(CODEC_TENANT) == 2
    new = asyncio.run(codec.encode([Payload(data=b"sealed under v2")]))
    assert new[0].metadata[KEY_ID_METADATA] == b"2"
    assert key_version_of(new[0].data) == 2

    # another process (fresh vault, fresh codec) reads both and seals with v2
    other = VaultPayloadCodec(Vault(db_engine, provider), NAMESPACE)
    assert [p.data for p in asyncio.run(other.decode(old + new))] == [b"sealed under v1", b"sealed under v2"]
    assert asyncio.run(other.encode([Payload(data=b"x")]))[0].metadata[KEY_ID_METADATA] == b"2"


def test_every_bit_flip_of_the_ciphertext_raises(codec: VaultPayloadCodec) -> None:
    [sealed] = codec.encode_sync([Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')])
    data = sealed.data
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[i] ^= bit
            bad = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
            with pytest.raises(IntegrityError):
                codec.decode_sync([bad])


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p: p.metadata.__setitem__(KEY_ID_METADATA, b"2"), id="key-id-mismatch"),
        pytest.param(lambda p: p.metadata.__delitem__(KEY_ID_METADATA), id="key-id-missing"),
        pytest.param(lambda p: setattr(p, "data", p.data[:-1]), id="truncated"),
        pytest.param(lambda p: setattr(p, "data", b""), id="empty"),
        pytest.param(
            lambda p: setattr(p, "data", b'{"not": "ciphertext"}' * 3), id="plaintext-with-our-encoding"
        ),
    ],
)
def test_tampered_payload_with_our_encoding_raises_never_passes_through(
    codec: VaultPayloadCodec, tamper
) -> None:
    [sealed] = codec.encode_sync([Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')])
    tamper(sealed)
    with pytest.raises(IntegrityError):
        asyncio.run(codec.decode([sealed]))


def test_payload_from_another_namespace_does_not_decode(vault: Vault, codec: VaultPayloadCodec) -> None:
    sealed = codec.encode_sync([Payload(data=b"ns one")])
    with pytest.raises(IntegrityError):
        VaultPayloadCodec(vault, "another-namespace").decode_sync(sealed)


def test_shredded_codec_key_makes_history_unreadable(vault: Vault, codec: VaultPayloadCodec) -> None:
    sealed = codec.encode_sync([Payload(data=b"bye")])
    vault.shred(CODEC_TENANT)
    with pytest.raises(IntegrityError, match="destroyed"):
        codec.decode_sync(sealed)


def test_payloads_without_our_encoding_pass_through_unchanged(codec: VaultPayloadCodec) -> None:
    foreign = [
        Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}'),
        Payload(metadata={"encoding": b"binary/null"}),
        Payload(data=b"no metadata at all"),
    ]
    assert asyncio.run(codec.decode(foreign)) == foreign


def test_codec_work_runs_off_the_event_loop_thread(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    codec = VaultPayloadCodec(vault, NAMESPACE)
    seal, open_ = vault.seal, vault.open
    threads: list[int] = []

    def spy_seal(*a: Any, **kw: Any) -> bytes:
        threads.append(threading.get_ident())
        return seal(*a, **kw)

    def spy_open(*a: Any, **kw: Any) -> bytes:
        threads.append(threading.get_ident())
        return open_(*a, **kw)

    monkeypatch.setattr(vault, "seal", spy_seal)
    monkeypatch.setattr(vault, "open", spy_open)

    async def go() -> int:
        await codec.decode(await codec.encode([Payload(data=b"a"), Payload(data=b"b")]))
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert len(threads) == 4
    assert loop_thread not in threads


def test_first_use_creates_the_codec_key_at_construction(vault: Vault) -> None:
    assert vault.list_keys(CODEC_TENANT) == []
    VaultPayloadCodec(vault, NAMESPACE)
    [key] = vault.list_keys(CODEC_TENANT)
    assert (key.kind, key.version, key.status) == ("data", 1, "active")


# ---- a real Temporal history ----------------------------------------------------------------


class CanaryInput(BaseModel):
    email: str
    oauth_token: str
    fail: bool = False


class CanaryResult(BaseModel):
    echoed_email: str
    note: str


@activity.defn
async def echo_canary(inp: CanaryInput) -> CanaryResult:
    return CanaryResult(echoed_email=inp.email, note=RESULT_CANARY)


def stack_frame_canary_e91d(email: str) -> None:
    """Raises; its name shows up only in a stack trace (not an activity or workflow type)."""
    raise ApplicationError(
        f"{EXCEPTION_CANARY} while writing {email}", type="CanaryError", non_retryable=True
    )


@activity.defn
async def fail_with_canary(inp: CanaryInput) -> None:
    stack_frame_canary_e91d(inp.email)


@workflow.defn(sandboxed=False)  # defined in a test module (pytest imports); the sandbox is not under test
class CanaryWorkflow:
    @workflow.run
    async def run(self, inp: CanaryInput) -> CanaryResult:
        result = await workflow.execute_activity(
            echo_canary,
            inp,
            start_to_close_timeout=timedelta(seconds=30),
            summary=f"echo for {SUMMARY_CANARY}",  # user metadata is a payload too
        )
        if inp.fail:
            try:
                await workflow.execute_activity(
                    fail_with_canary,
                    inp,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            except ActivityError as err:
                raise ApplicationError(
                    f"{WORKFLOW_FAILURE_CANARY}: {result.note}", type="CanaryWorkflowFailed"
                ) from err
        return result


def _messages(msg: Message) -> Iterator[tuple[str, Message]]:
    """Every sub-message of ``msg`` (depth first) with the name of the field that holds it."""
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            items = [value]
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:  # a map
            items = [v for v in value.values() if isinstance(v, Message)]
        else:
            items = list(value)
        for item in items:
            yield field.name, item
            yield from _messages(item)


async def _run_canary_workflows(temporal_env, converter: DataConverter) -> bytes:
    """Run a succeeding and a failing canary workflow; return both histories (proto bytes + JSON)."""
    client = Client(
        temporal_env.client.service_client, namespace=temporal_env.client.namespace, data_converter=converter
    )
    task_queue = f"converter-{uuid.uuid4()}"
    inp = CanaryInput(email=PII_CANARY, oauth_token=TOKEN_CANARY)
    async with Worker(
        client, task_queue=task_queue, workflows=[CanaryWorkflow], activities=[echo_canary, fail_with_canary]
    ):
        ok = await client.start_workflow(
            CanaryWorkflow.run,
            inp,
            id=f"canary-ok-{uuid.uuid4()}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )
        assert await ok.result() == CanaryResult(echoed_email=PII_CANARY, note=RESULT_CANARY)

        bad = await client.start_workflow(
            CanaryWorkflow.run,
            inp.model_copy(update={"fail": True}),
            id=f"canary-fail-{uuid.uuid4()}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )
        with pytest.raises(WorkflowFailureError) as info:
            await bad.result()
        # the client with the same converter reads the failure chain back in clear
        wf_error = info.value.cause
        assert isinstance(wf_error, ApplicationError) and WORKFLOW_FAILURE_CANARY in wf_error.message
        assert isinstance(wf_error.cause, ActivityError)
        assert isinstance(wf_error.cause.cause, ApplicationError)
        assert EXCEPTION_CANARY in wf_error.cause.cause.message

        histories = [await ok.fetch_history(), await bad.fetch_history()]
    out = b""
    seen = [0, 0]
    for h in histories:
        proto = History(events=h.events)
        out += proto.SerializeToString() + h.to_json().encode()
        if converter.payload_codec is not None:
            payloads, failures = _assert_every_payload_and_failure_encrypted(proto)
            seen = [seen[0] + payloads, seen[1] + failures]
    if converter.payload_codec is not None:  # inputs, results and the failure chain were all checked
        assert seen[0] >= 8 and seen[1] >= 3, seen
    return out


def _assert_every_payload_and_failure_encrypted(history: History) -> tuple[int, int]:
    """Assert every payload (but search attributes) and failure in ``history`` is encrypted;
    return how many of each were checked."""
    payloads = failures = 0
    for name, msg in _messages(history):
        if isinstance(msg, Payload) and name != "indexed_fields":  # search attributes are plaintext by design
            payloads += 1
            assert msg.metadata["encoding"] == ENCODING, name
        elif isinstance(msg, Failure):
            failures += 1
            assert msg.message == "Encoded failure" and msg.stack_trace == ""
            assert msg.encoded_attributes.metadata["encoding"] == ENCODING
    return payloads, failures


@pytest.mark.integration
@pytest.mark.parametrize("encrypted", [True, False], ids=["codec", "no-codec-control"])
def test_history_holds_no_canary_when_encrypted(temporal_env, vault: Vault, encrypted: bool) -> None:
    converter = (
        make_data_converter(VaultPayloadCodec(vault, temporal_env.client.namespace))
        if encrypted
        else pydantic_data_converter
    )
    history = asyncio.run(_run_canary_workflows(temporal_env, converter))
    hits = {c: history.count(c.encode()) for c in ALL_CANARIES}
    if encrypted:
        assert hits == dict.fromkeys(ALL_CANARIES, 0)
    else:  # the control: the same search finds every canary when nothing is encrypted
        assert all(n > 0 for n in hits.values()), hits
