"""A faithful local Salesforce: REST API, SOQL subset, sObject Collections, Bulk API 2.0 queries, OAuth.

``SalesforceSandbox`` is the org; serve ``sb.app()`` with :class:`sandbox.server.ServerThread`,
set ``sb.base_url`` to the server URL, and point simple-salesforce at it (see
the sandbox CA for TLS: a ``requests`` session that verifies against it whatever REQUESTS_CA_BUNDLE
says, e.g. crmhub's ``connectors.salesforce.client.pinned_session``; the sandbox itself imports no
crmhub code).
"""

from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["SalesforceSandbox"]
