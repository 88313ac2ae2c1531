"""``python -m smsgate``: the ``smsgate`` command."""

import sys

from smsgate.cli import main

sys.exit(main())
