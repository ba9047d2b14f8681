"""``python -m headscope.cli``: the same as the ``headscope`` command."""

import sys

from headscope.cli import main

sys.exit(main())
