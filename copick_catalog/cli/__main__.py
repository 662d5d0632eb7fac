"""``python -m copick_catalog.cli``: the same as the ``copick-catalog`` command."""

from . import main

main()
