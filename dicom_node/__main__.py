"""``python -m dicom_node``: the DICOM node alone, as a service."""

import sys

from dicom_node.server import main

sys.exit(main())
