"""``python -m medkit`` (and ``torchrun -m medkit``) runs the CLI."""

from medkit.cli.main import main

main()
