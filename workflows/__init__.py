"""crmhub workflows package."""
