"""``python -m sagips.bench`` is ``sagips-bench``."""

from sagips.bench.cli import main

main()
