"""python -m pneumo: see pneumo.cli."""

import sys

from pneumo.cli import main

sys.exit(main())
