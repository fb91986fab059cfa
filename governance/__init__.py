"""crmhub governance package."""
