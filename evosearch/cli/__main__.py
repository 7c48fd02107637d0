"""``python -m evosearch.cli``: the same as the ``evosearch`` command."""

import sys

from evosearch.cli.main import main

sys.exit(main())
