"""``python -m entrepot.cli``: the same as the ``entrepot`` command."""

from entrepot.cli import main

main()
