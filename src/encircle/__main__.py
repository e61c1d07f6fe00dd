"""``python -m encircle`` runs the command line interface."""

import sys

from encircle.cli import main

sys.exit(main())
