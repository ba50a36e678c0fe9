"""``python -m stablecnn``: the same as the ``stablecnn`` command."""

import sys

from stablecnn.cli import main

sys.exit(main())
