"""The seedguide application: the ``seedguide`` command wiring node, pipeline and viewer."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
