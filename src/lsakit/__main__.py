"""``python -m lsakit`` runs the command line."""

from lsakit.cli import main

main()
