"""``python -m taskprio`` runs the command line."""

from taskprio.cli import main

main()
