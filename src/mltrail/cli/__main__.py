"""``python -m mltrail.cli``: the ``mltrail`` command."""

import sys

from mltrail.cli import main

sys.exit(main())
