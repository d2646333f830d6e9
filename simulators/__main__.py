"""``python -m simulators``: push or replay DICOM like a scanner (see :mod:`simulators.cli`)."""

import sys

from simulators.cli import main

sys.exit(main())
