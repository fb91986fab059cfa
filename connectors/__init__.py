"""crmhub connectors package."""
