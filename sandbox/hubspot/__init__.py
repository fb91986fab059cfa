"""A local HubSpot emulator (CRM v3 objects, search, batch, properties, OAuth v1, rate limits).

hubspot-api-client works against it unmodified::

    hs = HubSpotSandbox()
    srv = ServerThread(hs.app(), ca).start()
    hs.base_url = srv.url
    client = HubSpot(access_token=hs.issue_private_app_token(), host=srv.url, ssl_ca_cert=str(ca.ca_path))
"""

from sandbox.hubspot.app import HubSpotSandbox

__all__ = ["HubSpotSandbox"]
