"""``python -m modelcycle.cli``: the same as the ``modelcycle`` console script."""

import sys

from modelcycle.cli import main

sys.exit(main())
