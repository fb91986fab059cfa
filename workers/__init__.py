"""crmhub workers package."""
