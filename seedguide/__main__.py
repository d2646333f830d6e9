"""``python -m seedguide``: same as the ``seedguide`` command."""

import sys

from seedguide.cli import main

sys.exit(main())
