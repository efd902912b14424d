"""``python -m spoofwatch``."""

import sys

from .cli import main

sys.exit(main())
