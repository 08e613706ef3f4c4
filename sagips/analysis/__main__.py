"""``python -m sagips.analysis`` is ``sagips-analyze``."""

from sagips.analysis.cli import main

raise SystemExit(main())
