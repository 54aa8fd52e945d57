"""``python -m attention_widget``: the command line (see :mod:`attention_widget.cli`)."""

import sys

from .cli import main

sys.exit(main())
