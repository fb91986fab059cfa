"""The HubSpot connector (entry point ``hubspot = "connectors.hubspot:HubSpotConnector"``).

hubspot-api-client is imported only by :mod:`connectors.hubspot.client`.
"""

from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.connector import HubSpotConnector

__all__ = ["HubSpotConfig", "HubSpotConnector"]
