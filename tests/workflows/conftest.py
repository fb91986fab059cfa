"""Fixtures of the workflow tests: a client of the session dev server with crmhub's data converter."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter


@pytest.fixture
def client(temporal_env: Any) -> Client:
    """The session dev server's connection, with the pydantic data converter (no codec)."""
    return Client(
        temporal_env.client.service_client,
        namespace=temporal_env.client.namespace,
        data_converter=pydantic_data_converter,
    )
