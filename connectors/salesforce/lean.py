"""Keep simple-salesforce's Metadata API client (and with it zeep and lxml) out of the process until
something uses it.

``simple_salesforce.api`` imports ``simple_salesforce.metadata`` at the top for one name,
``SfdcMetadataApi``, which it only instantiates in the lazy ``Salesforce.mdapi`` property. That
module imports zeep (a SOAP stack that brings lxml and httpx): ≈ 16 MB of resident memory and
≈ 120 ms of import time in every worker — crmhub never calls the Metadata API. :func:`defer` puts a
stand-in module under that name whose ``SfdcMetadataApi`` loads the real module on first use (and
any other attribute does too), so ``mdapi`` still works, just imported late.

Called from ``connectors/salesforce/__init__.py`` before anything imports simple-salesforce; it does
nothing when simple-salesforce is already loaded.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["defer"]

_NAME = "simple_salesforce.metadata"


class _DeferredMetadata(types.ModuleType):
    """The stand-in for ``simple_salesforce.metadata``; the real module replaces it on first use."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system probes __path__ & co.: not a use
            raise AttributeError(name)
        return getattr(_real(), name)


def _real() -> types.ModuleType:
    stand_in = sys.modules.get(_NAME)
    if isinstance(stand_in, _DeferredMetadata):
        del sys.modules[_NAME]
    module = importlib.import_module(_NAME)
    if isinstance(stand_in, _DeferredMetadata):  # whoever holds the stand-in now sees the real names
        stand_in.__dict__.update(module.__dict__)
    package = sys.modules.get("simple_salesforce")
    if package is not None:  # the package attribute pointed at the stand-in
        vars(package)["metadata"] = module
    return module


class _SfdcMetadataApi:
    """What ``simple_salesforce.api`` binds as ``SfdcMetadataApi``: builds the real one."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _real().SfdcMetadataApi(*args, **kwargs)


def defer() -> None:
    """Install the stand-in unless simple-salesforce (or its metadata module) is loaded already."""
    if _NAME in sys.modules or "simple_salesforce.api" in sys.modules:
        return
    stand_in = _DeferredMetadata(_NAME, __doc__)
    vars(stand_in)["SfdcMetadataApi"] = _SfdcMetadataApi
    sys.modules[_NAME] = stand_in
