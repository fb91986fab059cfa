"""Custom search attributes crmhub sets on its workflows, so ops can filter in the Temporal UI
(e.g. ``CrmhubTenant = "acme" AND CrmhubStatus = "failed"``).

Registered by ``crmhub temporal up`` on the dev server and by the test environment; on a Temporal
cluster/Cloud register them once with ``temporal operator search-attribute create``.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

__all__ = ["ALL", "DESTINATION", "PURPOSE", "REGION", "SOURCE", "STATUS", "TENANT"]

TENANT = SearchAttributeKey.for_keyword("CrmhubTenant")
SOURCE = SearchAttributeKey.for_keyword("CrmhubSource")
DESTINATION = SearchAttributeKey.for_keyword("CrmhubDestination")
PURPOSE = SearchAttributeKey.for_keyword("CrmhubPurpose")
REGION = SearchAttributeKey.for_keyword("CrmhubRegion")
STATUS = SearchAttributeKey.for_keyword("CrmhubStatus")

ALL: tuple[SearchAttributeKey[str], ...] = (TENANT, SOURCE, DESTINATION, PURPOSE, REGION, STATUS)
