"""A faithful local Salesforce: REST API, SOQL subset, sObject Collections, Bulk API 2.0 queries, OAuth.

``SalesforceSandbox`` is the org; serve ``sb.app()`` with :class:`sandbox.server.ServerThread`,
set ``sb.base_url`` to the server URL, and point simple-salesforce at it (see
:func:`sandbox.salesforce.clientsession.sandbox_session` for the TLS session to give it).
"""

from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["SalesforceSandbox"]
