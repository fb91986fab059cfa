"""crmhub benchmarks: ``python -m bench <name>``. Figures go into README with the command."""
