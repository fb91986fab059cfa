"""The Salesforce connector (entry point ``salesforce``): REST + Bulk API 2.0 via simple-salesforce.

simple-salesforce is imported only in :mod:`connectors.salesforce.client`.
"""

from connectors.salesforce.config import SalesforceConfig
from connectors.salesforce.connector import SalesforceConnector

__all__ = ["SalesforceConfig", "SalesforceConnector"]
