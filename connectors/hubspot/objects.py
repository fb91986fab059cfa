"""Which HubSpot objects a portal offers: the standard contacts, companies and deals, and its custom
objects, discovered through the schemas API (``GET /crm/v3/schemas``, one call).

A custom object's stream is named by its schema ``name`` (``projects``); its objectTypeId (``2-…``)
and fullyQualifiedName (``p{portalId}_{name}``) are aliases (``StreamSpec.aliases``) and resolve to
the same stream. Requests go to ``/crm/v3/objects/{objectTypeId}``, so lists, search and the batch
endpoints (upsert/read/archive) work as for the standard objects; the modification property is
``hs_lastmodifieddate`` (https://developers.hubspot.com/docs/guides/api/crm/objects/custom-objects).
An upsert by external id needs a property with ``hasUniqueValue`` (the first one is the stream's
default external id unless ``HubSpotConfig.id_properties`` names another); ``requiredProperties``
become required fields of :meth:`Connector.describe`, so a new sync must map them.

Discovery needs the ``crm.schemas.custom.read`` scope, the records ``crm.objects.custom.read`` and
``.write``: a connection granted other scopes only (``HubSpotConfig.granted_scopes`` set without it)
offers the standard objects without asking, and one the portal refuses (403) too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.reader import MODIFIED_PROPERTY
from schemas.errors import AuthError, ConfigError

__all__ = ["CUSTOM_SCOPES", "SCHEMAS_SCOPE", "HubSpotObject", "ObjectCatalog"]

log = logging.getLogger(__name__)

SCHEMAS_SCOPE = "crm.schemas.custom.read"
# What a connection asks for to sync custom objects (``crmhub connect hubspot`` extra scopes).
CUSTOM_SCOPES = (SCHEMAS_SCOPE, "crm.objects.custom.read", "crm.objects.custom.write")


@dataclass(frozen=True, slots=True)
class HubSpotObject:
    """One object type: ``stream`` (crmhub's name), ``api_type`` (the path segment requests use)."""

    stream: str
    api_type: str
    modified: str
    label: str = ""
    custom: bool = False
    aliases: tuple[str, ...] = ()
    required: frozenset[str] = frozenset()
    unique: tuple[str, ...] = ()


_STANDARD = tuple(
    HubSpotObject(name, name, modified, name.capitalize()) for name, modified in MODIFIED_PROPERTY.items()
)


def custom_object(schema: Mapping[str, Any]) -> HubSpotObject | None:
    """The :class:`HubSpotObject` of one schemas-API result; None if it lacks a name or type id."""
    name, type_id = schema.get("name"), schema.get("objectTypeId")
    if not isinstance(name, str) or not isinstance(type_id, str) or not name or not type_id.startswith("2-"):
        return None
    labels = schema.get("labels") or {}
    props = [p for p in schema.get("properties") or [] if isinstance(p, Mapping)]
    fqn = schema.get("fullyQualifiedName")
    return HubSpotObject(
        stream=name,
        api_type=type_id,
        modified="hs_lastmodifieddate",
        label=str(labels.get("plural") or name) if isinstance(labels, Mapping) else name,
        custom=True,
        aliases=(type_id, *((fqn,) if isinstance(fqn, str) and fqn else ())),
        required=frozenset(str(n) for n in schema.get("requiredProperties") or []),
        unique=tuple(str(p["name"]) for p in props if p.get("hasUniqueValue") and p.get("name")),
    )


class ObjectCatalog:
    """The portal's objects, read once per connector (a connector lives for one activity)."""

    def __init__(self, client: HubSpotClient, config: HubSpotConfig) -> None:
        self.client = client
        self.config = config
        self._objects: list[HubSpotObject] | None = None

    def objects(self) -> list[HubSpotObject]:
        if self._objects is None:
            self._objects = [*_STANDARD, *self._custom()]
        return self._objects

    def _custom(self) -> list[HubSpotObject]:
        granted = self.config.granted_scopes
        if granted and SCHEMAS_SCOPE not in granted:
            return []
        try:
            schemas = self.client.schemas()
        except AuthError as exc:
            if exc.code not in ("403", "MISSING_SCOPES"):  # a 401 after a refresh is no scope matter
                raise
            log.info("HubSpot custom objects not listed: the connection lacks %s", SCHEMAS_SCOPE)
            return []
        found = [o for s in schemas if (o := custom_object(s)) is not None]
        taken = {o.stream for o in _STANDARD}
        # A custom object named like a standard one keeps its fullyQualifiedName as stream name.
        return [o if o.stream not in taken else _renamed(o) for o in found]

    def resolve(self, stream: str) -> HubSpotObject:
        """The object a stream name or alias names; unknown → ConfigError listing the streams."""
        for obj in _STANDARD:
            if obj.stream == stream:
                return obj
        folded = stream.casefold()
        for obj in self.objects():
            if obj.stream == stream or folded in (a.casefold() for a in obj.aliases):
                return obj
        names = sorted(o.stream for o in self.objects())
        raise ConfigError(f"unknown HubSpot stream {stream!r}; use one of {names}")

    def default_external_id(self, obj: HubSpotObject) -> str | None:
        configured = self.config.id_property(obj.stream)
        if configured is not None or not obj.custom:
            return configured
        return obj.unique[0] if obj.unique else None


def _renamed(obj: HubSpotObject) -> HubSpotObject:
    fqn = obj.aliases[-1]
    return HubSpotObject(
        fqn, obj.api_type, obj.modified, obj.label, True, obj.aliases[:-1], obj.required, obj.unique
    )
