"""``python -m probgen`` runs the command line."""

import sys

from probgen.cli import main

sys.exit(main())
