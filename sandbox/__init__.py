"""crmhub sandbox package."""
