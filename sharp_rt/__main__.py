"""``python -m sharp_rt`` runs the CLI."""

from sharp_rt.cli import main

main()
