"""python -m pneumo: see pneumo.cli."""

import sys

from .cli import main

sys.exit(main())
