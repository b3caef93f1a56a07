"""``python -m taskprio.cli`` runs the command line."""

from taskprio.cli import main

main()
