"""How a stage's result was made, carried by every result an operator acts on.

Each guidance stage is a function of typed inputs and explicit parameters; its
result records the stage, the parameters actually used, the software version
and the time taken, so any number shown can be reproduced and audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Provenance"]


@dataclass(frozen=True)
class Provenance:
    """Stage name, parameters used, software version and wall time (seconds)."""

    stage: str
    parameters: dict[str, Any]
    version: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
