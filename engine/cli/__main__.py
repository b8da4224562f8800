"""``python -m seir.engine.cli``: the same as the ``seir`` command."""

import sys

from seir.engine.cli import main

sys.exit(main())
