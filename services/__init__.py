"""The services layer: the one layer that builds things from settings and holds the operations the
CLI, the web app and the workers share. It uses ``connectors``, ``governance`` and ``store``, and is
used by ``workflows``, ``workers`` and ``api`` (never the other way round).

* :mod:`services.wiring` — the object graph from settings (engine, vault and key provider,
  registry, signer, pseudonymizer, transforms, credentials, connector factory): ``ActivityDeps``;
* :mod:`services.oauth_clients` — the OAuth client registrations from settings and the clients file;
* :mod:`services.credentials` — the DB-bound token store (connect flow, sealed tokens,
  single-flight refresh, disconnect), with :mod:`services.token_source` for connectors;
* :mod:`services.connectors` — the connector of a stored connection, and where its data lives;
* :mod:`services.sync_setup` — the create-sync checks (against the store and the live connections)
  and the mapping editor, shared by ``crmhub sync create`` and the web app;
* :mod:`services.syncconfig` — repointing a sync at another instruction version, and its health.

Submodules are imported on demand (``from services.wiring import …``): the CLI loads the heavy
parts (httpx, cryptography) only for the commands that need them.
"""

__all__ = ["connectors", "credentials", "oauth_clients", "sync_setup", "syncconfig", "token_source", "wiring"]
