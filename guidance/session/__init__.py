"""A procedure's session: the plan, then each scan with its result, persisted as it goes.

- :mod:`guidance.session.plan_bundle`: planning CT + RT Structure Set + RT Plan linked by UIDs;
- :mod:`guidance.session.exports`: DICOM exports of a result (RT Dose, RT Structure Set with
  cold spots, RT Plan of the seeds found);
- :mod:`guidance.session.folder`: the session folder (layout, durable writes, reopening).
"""

from guidance.session.exports import ResultExports, cold_spot_structures, found_seed_plan, result_exports
from guidance.session.folder import (
    SESSION_SCHEMA,
    ScanData,
    ScanRecord,
    SessionFolder,
    durable_write,
    write_json,
)
from guidance.session.plan_bundle import PlanBundle, PlanStatus, context_of, load_plan_bundle, plan_status

__all__ = [
    "SESSION_SCHEMA",
    "PlanBundle",
    "PlanStatus",
    "ResultExports",
    "ScanData",
    "ScanRecord",
    "SessionFolder",
    "cold_spot_structures",
    "context_of",
    "durable_write",
    "found_seed_plan",
    "load_plan_bundle",
    "plan_status",
    "result_exports",
    "write_json",
]
