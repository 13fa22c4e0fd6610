"""``python -m tangentflow demo|bench``: the same as the ``tangentflow`` command."""

import sys

from .cli import main

sys.exit(main())
