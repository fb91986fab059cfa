"""Fixtures of the service tests: the notice receivers of ``tests/notice_support.py`` (a started
local SMTP server, a loopback webhook receiver) and the shipped subprocessor registry."""

from __future__ import annotations

from tests.incident_support import registry
from tests.notice_support import receiver, smtp

__all__ = ["receiver", "registry", "smtp"]
