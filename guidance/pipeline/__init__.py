"""One intra-procedure scan plus the plan -> one immutable :class:`GuidanceResult`.

:func:`run_pipeline` registers the scan onto the planning CT, finds needles and
seeds, matches them to the plan, computes the dose of the seeds found (planning
frame), the target and organ metrics, cold and hot spots and extra-seed
suggestions (:func:`add_suggestions` adds them to a result run without them, for a
live service that shows coverage first); :meth:`GuidanceResult.to_dict` gives the JSON of schema
``seedguide.result/1`` (docs/result-schema.md).
"""

from guidance.pipeline.result import SCHEMA_VERSION, GuidanceResult, PipelineOptions, StageRun
from guidance.pipeline.run import add_suggestions, run_pipeline

__all__ = [
    "SCHEMA_VERSION",
    "GuidanceResult",
    "PipelineOptions",
    "StageRun",
    "add_suggestions",
    "run_pipeline",
]
