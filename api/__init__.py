"""crmhub api package."""
