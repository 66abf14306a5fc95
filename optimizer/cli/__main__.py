"""``python -m optimizer.cli``: the ``optimize`` command."""

import sys

from . import main

sys.exit(main())
