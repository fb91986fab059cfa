"""``python -m api`` = the ``crmhub`` command (handy when the console script is not on PATH)."""

from api.cli import main

main()
