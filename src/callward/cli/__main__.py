"""``python -m callward.cli``."""

from callward.cli import main

main()
