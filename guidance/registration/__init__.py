"""Registration of intra-procedure CT scans onto the planning CT.

- :func:`register_rigid`: intensity-based rigid registration (NCC, coarse to fine,
  metal and couch left out) with a quality report and a PASS / DOUBT / FAIL verdict.
- :func:`prepare_fixed`: the planning CT's pyramid reduced once per session
  (:class:`PreparedFixed`, accepted by :func:`register_rigid` as ``fixed``).
- :func:`register_landmarks`: least-squares rigid fit of corresponding points (the
  manual fallback).

All transforms are 4x4 matrices in LPS mm mapping a point of the moving scan
(intra-procedure) into the fixed frame (planning CT).
"""

from guidance.registration.landmarks import LandmarkRegistration, register_landmarks
from guidance.registration.levels import PreparedFixed
from guidance.registration.result import (
    LevelReport,
    Provenance,
    RegistrationOptions,
    RegistrationQuality,
    RegistrationResult,
    Verdict,
)
from guidance.registration.rigid import prepare_fixed, register_rigid

__all__ = [
    "LandmarkRegistration",
    "LevelReport",
    "PreparedFixed",
    "Provenance",
    "RegistrationOptions",
    "RegistrationQuality",
    "RegistrationResult",
    "Verdict",
    "prepare_fixed",
    "register_landmarks",
    "register_rigid",
]
