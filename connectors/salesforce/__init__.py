"""The Salesforce connector (entry point ``salesforce``): REST + Bulk API 2.0 via simple-salesforce.

simple-salesforce is imported only in :mod:`connectors.salesforce.client` (its unused Metadata API
client only when something uses it: :mod:`connectors.salesforce.lean`).
"""

from connectors.salesforce import lean

lean.defer()  # before anything below imports simple-salesforce

from connectors.salesforce.config import SalesforceConfig  # noqa: E402
from connectors.salesforce.connector import SalesforceConnector  # noqa: E402

__all__ = ["SalesforceConfig", "SalesforceConnector"]
