"""Subprocessor and transfer registry: who processes tenant data, where, and on what legal basis.

Loaded from YAML (see ``examples/subprocessors.yaml``): regions (and whether each is in the EEA),
the processor itself and its subprocessors (entity, service, country, regions), the region of every
connector endpoint (e.g. Salesforce EU/NA instances, HubSpot ``eu1``/``na1``), recorded transfer
routes (from region, to region, subprocessor, mechanism, reference) and tenants (home region,
authorised subprocessors).

Transfer rule (fail closed), applied by :meth:`Registry.check_transfer`:

* an unknown region → :class:`TransferNotPermitted`; an unknown or unauthorised subprocessor, or
  one that does not operate in the destination region → :class:`PolicyError`;
* EEA tenant data is processed and stored in the EEA: a destination outside the EEA needs a route
  recorded for that subprocessor with an adequacy decision or SCCs, even when the data is already
  there (then the route from the tenant's home region is the one that must exist);
* any other move between different regions needs a recorded route too; staying in one region,
  moving to the tenant's home region, moving between EEA regions and bringing an EEA tenant's
  data back into the EEA need none (mechanism ``none``).

Every permitted cross-region move must be recorded: :meth:`Registry.transfer_for` checks a run's
move and returns the ``transfer`` lineage event to append (built by
:meth:`RunRef.transfer <governance.lineage.RunRef.transfer>`); :meth:`Registry.transfer` and
:func:`transfer_event` are the same with the run cited field by field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Unpack

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from governance.lineage import MoveFields, RunRef
from schemas.errors import ConfigError, PolicyError, TransferNotPermitted
from schemas.lineage import LineageEvent, TransferMechanism

__all__ = [
    "ContactPerson",
    "Endpoint",
    "PartyContact",
    "Region",
    "Registry",
    "Subprocessor",
    "TenantResidency",
    "TransferFields",
    "TransferRoute",
    "load_registry",
    "transfer_event",
]

EEA = "eea"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Region(_Model):
    """A processing region; ``eea`` says whether it lies in the European Economic Area."""

    name: str
    eea: bool


class Subprocessor(_Model):
    """An entity that processes tenant data (``role: processor`` marks crmhub itself)."""

    id: str = Field(min_length=1)
    entity: str
    service: str
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2 of the entity")
    regions: tuple[str, ...] = Field(min_length=1)
    role: Literal["processor", "subprocessor", "infrastructure"] = "subprocessor"
    """``infrastructure``: a provider crmhub itself runs on (hosting, database, Temporal); it
    processes every tenant's data in the tenant's home region, so it needs no per-tenant
    authorisation but must operate there (Art. 28(2): a change to it is a subprocessor change)."""


class ContactPerson(_Model):
    """A named contact: a representative (Art. 27) or a data protection officer (Art. 37)."""

    name: str = Field(min_length=1)
    email: str = Field(min_length=3)
    address: str | None = None


class PartyContact(_Model):
    """A party's Art. 30(2)(a) details: name and contact, its representative and DPO (if any)."""

    name: str = Field(min_length=1)
    address: str = Field(min_length=1)
    email: str = Field(min_length=3)
    representative: ContactPerson | None = None
    dpo: ContactPerson | None = None


class Endpoint(_Model):
    """A connector endpoint (vendor instance/data centre) and the region its data lives in."""

    connector: str
    instance: str
    region: str
    subprocessor: str
    host: str | None = None


class TransferRoute(_Model):
    """A recorded lawful route: ``subprocessor`` may receive data moved ``from`` → ``to``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_region: str = Field(alias="from")
    to_region: str = Field(alias="to")
    subprocessor: str
    mechanism: Literal[TransferMechanism.ADEQUACY, TransferMechanism.SCC]
    reference: str = Field(min_length=1, description="the decision or agreement relied on")


class TenantResidency(_Model):
    """A tenant's home region and the subprocessors the controller authorised."""

    tenant: str
    home_region: str
    authorised_subprocessors: tuple[str, ...] = ()


class Registry(_Model):
    """The deployment's registry. Construction checks every cross-reference (regions, ids)."""

    regions: dict[str, Region]
    subprocessors: tuple[Subprocessor, ...]
    endpoints: tuple[Endpoint, ...] = ()
    transfers: tuple[TransferRoute, ...] = ()
    tenants: tuple[TenantResidency, ...] = ()
    contacts: dict[str, PartyContact] = Field(
        default_factory=dict, description="Art. 30(2)(a) details by party: the processor's id or a tenant id"
    )

    @model_validator(mode="after")
    def _cross_references(self) -> Registry:
        ids = [s.id for s in self.subprocessors]
        if len(set(ids)) != len(ids):
            raise ValueError("subprocessor ids must be unique")
        if sum(s.role == "processor" for s in self.subprocessors) != 1:
            raise ValueError("exactly one entry must have role: processor (crmhub itself)")
        problems: list[str] = []

        def need_region(code: str, where: str) -> None:
            if code not in self.regions:
                problems.append(f"{where}: unknown region {code!r}")

        def need_sub(sub: str, where: str) -> None:
            if sub not in ids:
                problems.append(f"{where}: unknown subprocessor {sub!r}")

        for s in self.subprocessors:
            for r in s.regions:
                need_region(r, f"subprocessor {s.id}")
        for e in self.endpoints:
            need_region(e.region, f"endpoint {e.connector}/{e.instance}")
            need_sub(e.subprocessor, f"endpoint {e.connector}/{e.instance}")
        for t in self.transfers:
            where = f"transfer {t.from_region}->{t.to_region} ({t.subprocessor})"
            need_region(t.from_region, where)
            need_region(t.to_region, where)
            need_sub(t.subprocessor, where)
        for ten in self.tenants:
            need_region(ten.home_region, f"tenant {ten.tenant}")
            for sub in ten.authorised_subprocessors:
                need_sub(sub, f"tenant {ten.tenant}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- lookups --------------------------------------------------------------------------------

    @property
    def processor(self) -> Subprocessor:
        return next(s for s in self.subprocessors if s.role == "processor")

    @property
    def infrastructure(self) -> tuple[Subprocessor, ...]:
        """The providers crmhub runs on (hosting, database, Temporal): every run uses them."""
        return tuple(s for s in self.subprocessors if s.role == "infrastructure")

    def subprocessor(self, sub_id: str) -> Subprocessor:
        """The entry for ``sub_id``; :class:`PolicyError` if it is not registered."""
        for s in self.subprocessors:
            if s.id == sub_id:
                return s
        raise PolicyError(
            f"subprocessor {sub_id!r} is not in the registry; data may not go to it",
            code="unknown_subprocessor",
        )

    def endpoint(self, connector: str, instance: str) -> Endpoint:
        """The endpoint of ``connector`` at ``instance``; :class:`PolicyError` if unregistered."""
        for e in self.endpoints:
            if e.connector == connector and e.instance == instance:
                return e
        raise PolicyError(
            f"endpoint {connector}/{instance} has no registered region; register it before use",
            code="unknown_endpoint",
        )

    def endpoint_region(self, connector: str, instance: str) -> str:
        return self.endpoint(connector, instance).region

    def tenant(self, tenant: str) -> TenantResidency:
        for t in self.tenants:
            if t.tenant == tenant:
                return t
        raise PolicyError(f"tenant {tenant!r} has no residency entry", code="unknown_tenant")

    def is_eea(self, region: str) -> bool:
        return self._region(region).eea

    def _region(self, region: str) -> Region:
        try:
            return self.regions[region]
        except KeyError:
            raise TransferNotPermitted(
                f"region {region!r} is not in the registry; refusing to move data there",
                code="unknown_region",
            ) from None

    def check_authorised(self, tenant: str, sub_id: str) -> Subprocessor:
        """The subprocessor, if ``tenant`` authorised it (crmhub itself and its infrastructure always
        are: a change to those goes through the objection window, :mod:`services.subprocessor_changes`)."""
        sub = self.subprocessor(sub_id)
        if sub.role != "subprocessor" or sub_id in self.tenant(tenant).authorised_subprocessors:
            return sub
        raise PolicyError(
            f"tenant {tenant!r} has not authorised subprocessor {sub_id!r}",
            code="unauthorised_subprocessor",
        )

    def route(self, from_region: str, to_region: str, sub_id: str) -> TransferRoute | None:
        for t in self.transfers:
            if (t.from_region, t.to_region, t.subprocessor) == (from_region, to_region, sub_id):
                return t
        return None

    # --- the rule -------------------------------------------------------------------------------

    def check_transfer(
        self,
        tenant_region: str,
        from_region: str,
        to_region: str,
        subprocessor: str,
        *,
        tenant: str | None = None,
    ) -> TransferMechanism:
        """Mechanism that makes moving data ``from_region`` → ``to_region`` via ``subprocessor`` lawful.

        Returns ``none`` when no transfer mechanism is needed. Raises
        :class:`TransferNotPermitted` (reason names regions, subprocessor and the missing route)
        or :class:`PolicyError` (unknown/unauthorised subprocessor), so a run fails closed.
        """
        home, src, dst = self._region(tenant_region), self._region(from_region), self._region(to_region)
        sub = self.check_authorised(tenant, subprocessor) if tenant else self.subprocessor(subprocessor)
        if to_region not in sub.regions:
            raise PolicyError(
                f"subprocessor {subprocessor!r} does not process data in region {to_region!r}",
                code="subprocessor_region",
            )
        if home.eea and not dst.eea:
            # EEA data stays in the EEA unless this subprocessor has a recorded route out: the move
            # itself (from -> to), or, for data leaving the EEA or already outside it, the route
            # from the tenant's home region.
            origins = [from_region] if from_region != to_region else []
            if from_region == to_region or src.eea:
                origins.append(tenant_region)
            found = next(
                (r for o in origins if (r := self.route(o, to_region, subprocessor)) is not None), None
            )
            if found is None:
                raise TransferNotPermitted(
                    f"EEA tenant data is processed and stored in the EEA: moving it "
                    f"{from_region}->{to_region} via {subprocessor!r} needs an adequacy decision "
                    f"or SCCs recorded for route {origins[0]}->{to_region}, and none is",
                    code="transfer_not_permitted",
                )
            return TransferMechanism(found.mechanism)
        if from_region == to_region or to_region == tenant_region or (dst.eea and (src.eea or home.eea)):
            # Staying put, coming home, moving inside the EEA or bringing EEA data back into it.
            return TransferMechanism.NONE
        found = self.route(from_region, to_region, subprocessor)
        if found is None:
            raise TransferNotPermitted(
                f"moving data {from_region}->{to_region} via {subprocessor!r} needs a recorded "
                f"route with an adequacy decision or SCCs, and none is",
                code="transfer_not_permitted",
            )
        return TransferMechanism(found.mechanism)

    def transfer_for(
        self,
        run: RunRef,
        *,
        from_region: str,
        to_region: str,
        subprocessor: str,
        at: datetime,
        **move: Unpack[MoveFields],
    ) -> LineageEvent | None:
        """Check a move of ``run``'s tenant and return the ``transfer`` event to append (``None``:
        no move needs recording).

        Uses the tenant's registered home region and authorisations; raises like
        :meth:`check_transfer`.
        """
        residency = self.tenant(run.tenant)
        mechanism = self.check_transfer(
            residency.home_region, from_region, to_region, subprocessor, tenant=run.tenant
        )
        if from_region == to_region and mechanism is TransferMechanism.NONE:
            return None
        return run.transfer(
            mechanism, at=at, subprocessor=subprocessor, region_from=from_region, region_to=to_region, **move
        )

    def transfer(
        self,
        *,
        tenant: str,
        run_id: str,
        from_region: str,
        to_region: str,
        subprocessor: str,
        **fields: Unpack[TransferFields],
    ) -> LineageEvent | None:
        """:meth:`transfer_for` with the run cited field by field (``timestamp`` default: now)."""
        run, at, move = _split(tenant, run_id, fields)
        return self.transfer_for(
            run, from_region=from_region, to_region=to_region, subprocessor=subprocessor, at=at, **move
        )


class TransferFields(MoveFields, total=False):
    """The keyword form of a transfer's run citation (see :class:`~governance.lineage.RunRef`), its
    datasets, ids and counts, and its time (``None``: now)."""

    sync_id: str | None
    purpose: str | None
    instruction_version: int | None
    instruction_hash: str | None
    timestamp: datetime | None


def _split(tenant: str, run_id: str, fields: TransferFields) -> tuple[RunRef, datetime, MoveFields]:
    run = RunRef(
        tenant=tenant,
        run_id=run_id,
        sync_id=fields.get("sync_id"),
        instruction_version=fields.get("instruction_version"),
        instruction_hash=fields.get("instruction_hash"),
        purpose=fields.get("purpose"),
    )
    move = MoveFields(
        source=fields.get("source"),
        destination=fields.get("destination"),
        record_id_hashes=fields.get("record_id_hashes", ()),
        counts=fields.get("counts"),
    )
    return run, fields.get("timestamp") or datetime.now(UTC), move


def transfer_event(
    *,
    tenant: str,
    run_id: str,
    subprocessor: str,
    region_from: str,
    region_to: str,
    mechanism: TransferMechanism,
    **fields: Unpack[TransferFields],
) -> LineageEvent:
    """A ``transfer`` lineage event for a permitted move (record ids as keyed hashes only); the
    keyword form of :meth:`RunRef.transfer <governance.lineage.RunRef.transfer>`."""
    run, at, move = _split(tenant, run_id, fields)
    return run.transfer(
        mechanism, at=at, subprocessor=subprocessor, region_from=region_from, region_to=region_to, **move
    )


def load_registry(path: str | Path) -> Registry:
    """Read a registry YAML file; a malformed one raises :class:`ConfigError` saying what is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read registry {path.name}: {exc}") from exc
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"registry {path.name} is invalid: {details}") from exc
