"""``python -m rnnkit``: the ``rnnkit`` command (``rnnkit.cli.main``)."""

import sys

from rnnkit.cli import main

sys.exit(main())
