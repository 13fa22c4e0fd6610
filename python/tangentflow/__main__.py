"""``python -m tangentflow demo|bench|width``: the same as the ``tangentflow`` command."""

import sys

from .cli import main

sys.exit(main())
