"""Build the connector of a stored connection: provider and instance URL from the ``connections`` row,
tokens from an OAuth token source (:meth:`services.credentials.OAuthService.token_source`), options
from settings (``connectors.<provider>.<option>``), and the CA bundle its API calls trust from its
provider's ``ca_file`` OAuth setting (:func:`services.oauth_clients.api_ca_files`; none: the system
store).

:meth:`ConnectionConnectors.locate` asks the vendor, at connect time, where a connection's data
lives and stores it with the connection (``connections.region_instance``): the registry endpoint a
sync's transfer checks use when the sync names none (:func:`workflows.context.endpoint_of`).

The connector class comes from the entry-point registry (:mod:`connectors.registry`), so a
third-party connector plugin works too, as long as its config model takes the API base as
``instance_url`` or ``base_url`` and an optional ``ca_bundle``, and its constructor takes
``(config, tokens)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from connectors.base import Connector, TokenSource
from connectors.registry import Registry as ConnectorRegistry
from connectors.registry import load_registry
from schemas.errors import ConfigError, CrmhubError, ReauthorizationRequired
from store import connections as connection_store
from store.connections import ConnectionRow, ConnectionStatus
from store.engine import Engine

__all__ = ["ConnectionConnectors", "ConnectorFactory", "TokenSourceFactory"]

ConnectorFactory = Callable[[str], Connector]
"""``connector_factory(connection_id) -> Connector``: a fresh connector; the caller closes it."""

TokenSourceFactory = Callable[[str], TokenSource]
"""``tokens(connection_id) -> TokenSource`` (e.g. ``OAuthService.token_source``)."""

log = logging.getLogger(__name__)

# Config fields each connection fills in (see ``_config``): settings must not override them.
_FROM_CONNECTION = frozenset({"instance_url", "base_url", "ca_bundle", "rate_limit_key", "granted_scopes"})


class ConnectionConnectors:
    """A :data:`ConnectorFactory` over the ``connections`` table. Thread-safe (reads only).

    ``ca_files`` maps a provider to the CA bundle its connections' API calls trust."""

    def __init__(
        self,
        engine: Engine,
        tokens: TokenSourceFactory,
        *,
        ca_files: Mapping[str, Path] | None = None,
        registry: ConnectorRegistry | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.tokens = tokens
        self.ca_files = dict(ca_files or {})
        self.registry = registry or load_registry()
        self.options = {p: dict(o) for p, o in (options or {}).items()}
        self._check_options()

    def _check_options(self) -> None:
        """Settings' ``connectors`` options name a known provider and options of its config model,
        and none that a connection sets itself; a mistake fails when the worker starts."""
        for provider, opts in self.options.items():
            setting = f"CRMHUB_CONNECTORS__{provider.upper()}"
            try:
                cls = self.registry.get(provider)
            except ConfigError:
                raise ConfigError(f"{setting}: no connector {provider!r} is installed") from None
            fields = cls.config_model.model_fields
            for name in opts:
                if name in _FROM_CONNECTION:
                    raise ConfigError(f"{setting}__{name.upper()}: set by each connection, not by settings")
                if name not in fields:
                    known = ", ".join(sorted(set(fields) - _FROM_CONNECTION))
                    raise ConfigError(
                        f"{setting}__{name.upper()}: {provider} has no option {name!r}; its options: {known}"
                    )
                info = fields[name]
                try:
                    shape: Any = Annotated[info.annotation, *info.metadata]
                    TypeAdapter(shape).validate_python(opts[name])
                except ValidationError as exc:
                    why = "; ".join(e["msg"] for e in exc.errors(include_input=False, include_url=False))
                    raise ConfigError(f"{setting}__{name.upper()}: {why}") from None

    def connection(self, connection_id: str) -> ConnectionRow:
        """The stored connection; :class:`ConfigError` if unknown, ``ReauthorizationRequired`` if not
        active."""
        with self.engine.connect() as conn:
            row = connection_store.get_connection(conn, connection_id)
        if row is None:
            raise ConfigError(f"no connection {connection_id!r}; list them with: crmhub connections list")
        if row.status is not ConnectionStatus.ACTIVE:
            raise ReauthorizationRequired(
                f"connection {row.id} is {row.status.value}; reconnect with: "
                f"crmhub connect {row.provider} --tenant {row.tenant}",
                code=row.status.value,
            )
        return row

    def locate(self, connection_id: str) -> str | None:
        """Ask the vendor where connection ``connection_id``'s data lives
        (:meth:`Connector.hosting_instance`) and store the answer with the connection; returns it
        (``None``: the connector cannot tell). A vendor failure is logged and answers ``None``, so a
        connect never fails for it: the new-sync check asks again (:mod:`services.sync_setup`)."""
        try:
            connector = self(connection_id)
            try:
                instance = connector.hosting_instance()
            finally:
                connector.close()
        except CrmhubError as exc:
            log.warning(
                "region lookup failed: connection=%s error=%s", connection_id, exc.code or exc.kind.value
            )
            return None
        if instance is not None:
            with self.engine.begin() as conn:
                connection_store.set_region_instance(conn, connection_id, instance, now=datetime.now(UTC))
        log.info("connection region: connection=%s instance=%s", connection_id, instance)
        return instance

    def __call__(self, connection_id: str) -> Connector:
        row = self.connection(connection_id)
        cls = self.registry.get(row.provider)
        config = self._config(cls, row)
        build = cast(Callable[[BaseModel, TokenSource], Connector], cls)
        return build(config, self.tokens(connection_id))

    def _config(self, cls: type[Connector], row: ConnectionRow) -> BaseModel:
        model = cls.config_model
        fields = model.model_fields
        data: dict[str, Any] = dict(self.options.get(row.provider, {}))  # from settings
        if row.instance_url:
            if "instance_url" in fields:
                data["instance_url"] = row.instance_url
            elif "base_url" in fields:
                data["base_url"] = row.instance_url
        if "rate_limit_key" in fields:  # one portal/org per connection: its clients share pacing
            data["rate_limit_key"] = row.id
        if "granted_scopes" in fields:  # what the controller authorised (e.g. HubSpot's crm.export)
            data["granted_scopes"] = tuple(row.scopes)
        ca = self.ca_files.get(row.provider)
        if ca is not None and "ca_bundle" in fields:
            data["ca_bundle"] = ca
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ConfigError(
                f"connection {row.id} ({row.provider}) cannot configure its connector: {problems}"
            ) from None
