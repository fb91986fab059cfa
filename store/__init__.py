"""crmhub store package."""
