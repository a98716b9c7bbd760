"""``python -m qcsql``: the same as the ``qcsql`` command."""

import sys

from qcsql.cli import main

sys.exit(main())
