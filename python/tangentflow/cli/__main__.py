"""``python -m tangentflow.cli ...``: the same as the ``tangentflow`` command."""

import sys

from . import main

sys.exit(main())
