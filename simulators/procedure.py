"""A scripted, seeded implant procedure and its intra-procedure CT scans.

:func:`simulate_procedure` turns a plan into what happens in the patient
(no voxels yet, a fraction of a second), driven by a :class:`Scenario` and a seed:

1. Needles are inserted: each planned needle's entry moves by ``entry_mm``
   across the track, its direction tilts by ``angle_deg`` and its depth changes
   by ``depth_mm`` (magnitudes drawn uniformly in those ranges; with probability
   ``outlier_probability`` a needle deviates ``outlier_factor`` times more).
2. Seeds are dropped while each needle is withdrawn: each planned seed lands
   at its planned depth on the actual needle, jittered along the track (normal,
   sd ``seed_along_mm``) and across it (sd ``seed_across_mm``). A seed may be
   missing (``missing_probability``), displaced off the track by
   ``displaced_mm``, or touch its neighbour on the needle (end to end or side by
   side; ``touching_probability``). ``cold_needles`` needles (the ones carrying
   most seeds) lose all their seeds: an obvious cold spot.
3. Scans: scan 1 with every needle in place and no seed; then the needles are
   withdrawn in ``seed_batches`` groups, each followed by a scan showing the
   seeds implanted so far and the needles still in; the last scan has every
   seed and no needle.
4. Patient motion: each scan sees the patient at its own pose relative to the
   planning CT, a rigid ``planning_to_scan`` transform about the tumour centre:
   translation up to ``motion_mm``, rotation up to ``motion_deg`` about a random
   axis; with probability ``jump_probability`` a jump up to ``jump_mm`` and
   ``jump_deg`` (the patient coughed or was repositioned).
5. Each scan is axial with the planning CT's in-plane geometry, ``scan_slices``
   slices (10-20) of ``slice_thickness_mm`` (the planning thickness when None)
   centred on the tumour in the scan frame: only part of the planning range.

Frames of reference: all series are in the planning study; the planning CT,
structures and plan use the planning frame. Each intra-procedure scan has a
frame of reference of its own, because the patient moved against the
planning position (a scanner keeps one frame only while the patient stays on
the table untouched; here every scan pose differs). The scan frame UIDs are
derived from the study UID and the scan index, so a procedure is reproducible.

:func:`iter_scans` renders each scan (:func:`simulators.render.render_scan`)
and writes it as a CT series with its ground truth (:func:`scan_truth`).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from guidance.dicomio.ct import write_ct_series
from guidance.dicomio.dataset import StudyContext
from guidance.plan import Plan
from guidance.volume import Grid
from simulators.artefacts import StreakModel
from simulators.phantom import Patient
from simulators.render import SILVER_CORE_SEED_MU_PER_MM, RenderedScan, ScannerConfig, render_scan

__all__ = [
    "SCENARIOS",
    "ImplantedSeed",
    "Procedure",
    "Scan",
    "ScanOutput",
    "Scenario",
    "ScenarioName",
    "get_scenario",
    "iter_scans",
    "scan_truth",
    "scanner_config",
    "simulate_procedure",
]

logger = logging.getLogger(__name__)


class ScenarioName(enum.Enum):
    """The built-in scenarios, from easy to hard."""

    EASY = "easy"
    STANDARD = "standard"
    THICK_SLICES = "thick-slices"
    COLD_SPOT = "cold-spot"
    HARD = "hard"


@dataclass(frozen=True)
class Scenario:
    """How a procedure goes (see the module docstring for each step).

    Ranges are (low, high); magnitudes are drawn uniformly within them.
    """

    name: str
    description: str
    entry_mm: tuple[float, float] = (1.0, 2.0)
    angle_deg: tuple[float, float] = (1.0, 3.0)
    depth_mm: tuple[float, float] = (1.0, 2.0)
    outlier_probability: float = 0.1
    outlier_factor: float = 2.5
    seed_along_mm: float = 1.0
    seed_across_mm: float = 0.5
    missing_probability: float = 0.03
    displaced_probability: float = 0.03
    displaced_mm: tuple[float, float] = (3.0, 6.0)
    touching_probability: float = 0.03
    cold_needles: int = 0
    seed_batches: int = 2
    motion_mm: float = 3.0
    motion_deg: float = 2.0
    jump_probability: float = 0.05
    jump_mm: float = 8.0
    jump_deg: float = 5.0
    slice_thickness_mm: float | None = None
    scan_slices: tuple[int, int] = (10, 20)
    noise_sd_hu: float = 12.0
    streak_strength: float = 1.0
    #: A low-dose scan of silver-core seeds: photons per detector bin per view (of 180)
    #: without the patient; the streaks follow the photon-limited model
    #: (:meth:`simulators.artefacts.StreakModel.photon_limited`). None: the default model.
    photons_per_bin: float | None = None

    def __post_init__(self) -> None:
        probabilities = ("outlier_probability", "missing_probability", "displaced_probability",
                         "touching_probability", "jump_probability")  # fmt: skip
        for name in probabilities:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Scenario.{name} must be within [0, 1]; got {getattr(self, name)}")
        for name in ("entry_mm", "angle_deg", "depth_mm", "displaced_mm", "scan_slices"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"Scenario.{name} must be a range 0 <= low <= high; got {(low, high)}")
        if self.photons_per_bin is not None and not self.photons_per_bin > 100.0:
            raise ValueError(f"Scenario.photons_per_bin must be > 100 or None; got {self.photons_per_bin}")
        if self.seed_batches < 1 or self.cold_needles < 0 or self.scan_slices[0] < 1:
            raise ValueError(f"Scenario {self.name}: seed_batches >= 1, cold_needles >= 0, scan_slices >= 1")


#: The built-in scenarios by name.
SCENARIOS: Mapping[ScenarioName, Scenario] = {
    ScenarioName.EASY: Scenario(
        "easy", "small deviations, no lost or touching seeds, little motion, weak streaks",
        entry_mm=(0.5, 1.0), angle_deg=(0.5, 1.5), depth_mm=(0.5, 1.0), outlier_probability=0.0,
        seed_along_mm=0.5, seed_across_mm=0.3, missing_probability=0.0, displaced_probability=0.0,
        touching_probability=0.0, motion_mm=1.0, motion_deg=0.5, jump_probability=0.0, streak_strength=0.5,
    ),
    ScenarioName.STANDARD: Scenario(
        "standard", "typical deviations (1-2 mm, 1-3 degrees), a few seed mishaps",
    ),
    ScenarioName.THICK_SLICES: Scenario(
        "thick-slices", "standard procedure scanned with 5 mm slices",
        slice_thickness_mm=5.0, scan_slices=(10, 12),
    ),
    ScenarioName.COLD_SPOT: Scenario(
        "cold-spot", "standard, but the needle carrying most seeds loses all of them", cold_needles=1,
    ),
    ScenarioName.HARD: Scenario(
        "hard", "large deviations and motion, touching and lost seeds, low dose: photon-starved streaks",
        entry_mm=(1.5, 3.0), angle_deg=(2.0, 4.0), depth_mm=(1.5, 3.0), outlier_probability=0.2,
        seed_along_mm=1.5, seed_across_mm=0.8, missing_probability=0.05, displaced_probability=0.08,
        touching_probability=0.15, seed_batches=3, motion_mm=5.0, motion_deg=3.0, jump_probability=0.2,
        jump_mm=10.0, jump_deg=6.0, noise_sd_hu=18.0, photons_per_bin=600.0,
    ),
}  # fmt: skip


def get_scenario(name: ScenarioName | str | Scenario) -> Scenario:
    """The scenario called ``name`` (a :class:`Scenario` passes through).

    Raises
    ------
    ValueError
        Naming the known scenarios.
    """
    if isinstance(name, Scenario):
        return name
    try:
        return SCENARIOS[ScenarioName(name)]
    except ValueError:
        known = ", ".join(n.value for n in ScenarioName)
        raise ValueError(f"unknown scenario {name!r}; choose one of: {known}") from None


@dataclass(frozen=True)
class ImplantedSeed:
    """What became of one planned seed (planning frame, LPS mm).

    ``status`` is "implanted", "missing" (never in the patient: ``position_mm`` is
    where it was planned), "displaced" or "touching" (against the previous seed).
    """

    plan_index: int
    needle_index: int
    position_mm: tuple[float, float, float]
    direction: tuple[float, float, float]
    status: str

    @property
    def present(self) -> bool:
        return self.status != "missing"


@dataclass(frozen=True)
class Scan:
    """One intra-procedure scan: what is in the patient, its pose, its grid and its time."""

    index: int
    needles: tuple[int, ...]
    seeds: tuple[int, ...]
    planning_to_scan: tuple[tuple[float, ...], ...]
    translation_mm: float
    rotation_deg: float
    jump: bool
    grid: Grid
    noise_seed: int
    acquired: dt.datetime


@dataclass(frozen=True, eq=False)
class Procedure:
    """The whole procedure: actual needles, the fate of every planned seed, the scans."""

    scenario: Scenario
    seed: int
    needle_entries_mm: NDArray[np.float64]
    needle_tips_mm: NDArray[np.float64]
    seeds: tuple[ImplantedSeed, ...]
    scans: tuple[Scan, ...]

    def summary(self) -> dict[str, Any]:
        """Plain values for case.json."""
        statuses = [s.status for s in self.seeds]
        return {
            "scenario": asdict(self.scenario),
            "seed": self.seed,
            "n_needles": int(self.needle_entries_mm.shape[0]),
            "seed_status": {name: statuses.count(name) for name in sorted(set(statuses))},
            "n_scans": len(self.scans),
        }


def _rotation(axis: NDArray[np.float64], angle_rad: float) -> NDArray[np.float64]:
    """Rodrigues' rotation matrix about a unit axis."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    rotation: NDArray[np.float64] = (
        np.eye(3) + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)
    )
    return rotation


def _random_unit(rng: np.random.Generator) -> NDArray[np.float64]:
    vector = rng.normal(size=3)
    unit: NDArray[np.float64] = vector / np.linalg.norm(vector)
    return unit


def _perpendicular(rng: np.random.Generator, direction: NDArray[np.float64]) -> NDArray[np.float64]:
    """A random unit vector perpendicular to ``direction``."""
    vector = _random_unit(rng)
    vector -= np.dot(vector, direction) * direction
    unit: NDArray[np.float64] = vector / np.linalg.norm(vector)
    return unit


def _deviate_needle(
    rng: np.random.Generator, entry: NDArray[np.float64], tip: NDArray[np.float64], scenario: Scenario
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Actual (entry, unit direction) of a needle inserted along the planned entry -> tip."""
    factor = scenario.outlier_factor if rng.uniform() < scenario.outlier_probability else 1.0
    direction = (tip - entry) / np.linalg.norm(tip - entry)
    shift = factor * rng.uniform(*scenario.entry_mm) * _perpendicular(rng, direction)
    tilt = math.radians(factor * rng.uniform(*scenario.angle_deg))
    actual = _rotation(_perpendicular(rng, direction), tilt) @ direction
    return entry + shift, actual / np.linalg.norm(actual)


def _seed_fate(rng: np.random.Generator, scenario: Scenario, cold: bool) -> str:
    if cold or rng.uniform() < scenario.missing_probability:
        return "missing"
    draw = rng.uniform()
    if draw < scenario.displaced_probability:
        return "displaced"
    if draw < scenario.displaced_probability + scenario.touching_probability:
        return "touching"
    return "implanted"


def _drop_seeds(
    rng: np.random.Generator,
    plan: Plan,
    k: int,
    line: tuple[NDArray[np.float64], NDArray[np.float64]],
    scenario: Scenario,
    cold: bool,
) -> list[ImplantedSeed]:
    """Seeds of needle ``k`` dropped along its actual line (tip first), with their fates."""
    planned_entry = plan.needles[k].entry_mm
    entry, direction = line
    out: list[ImplantedSeed] = []
    previous: NDArray[np.float64] | None = None
    for i in plan.needles[k].seed_indices:
        depth = float(np.dot(plan.seeds[i].position_mm - planned_entry, plan.needles[k].direction))
        position = entry + (depth + rng.normal(0.0, scenario.seed_along_mm)) * direction
        position = position + rng.normal(0.0, scenario.seed_across_mm) * _perpendicular(rng, direction)
        fate = _seed_fate(rng, scenario, cold)
        axis = direction
        if fate == "displaced":
            position = position + rng.uniform(*scenario.displaced_mm) * _random_unit(rng)
            axis = _rotation(_perpendicular(rng, direction), math.radians(rng.uniform(10, 60))) @ direction
        elif fate == "touching" and previous is not None:
            end_to_end = rng.uniform() < 0.5  # 4.6 mm centre to centre along, or 0.9 mm side by side
            position = (
                previous - 4.6 * direction if end_to_end else previous + 0.9 * _perpendicular(rng, direction)
            )
        elif fate == "touching":
            fate = "implanted"
        if fate == "missing":
            position = plan.seeds[i].position_mm
        else:
            previous = position
        out.append(ImplantedSeed(i, k, _tuple3(position), _tuple3(axis), fate))
    return out


def _tuple3(vector: NDArray[np.float64]) -> tuple[float, float, float]:
    return float(vector[0]), float(vector[1]), float(vector[2])


def _pose(rng: np.random.Generator, scenario: Scenario, centre_mm: NDArray[np.float64]) -> tuple[Any, ...]:
    """(planning_to_scan 4x4, translation mm, rotation degrees, jump) of one scan."""
    jump = bool(rng.uniform() < scenario.jump_probability)
    max_mm, max_deg = (
        (scenario.jump_mm, scenario.jump_deg) if jump else (scenario.motion_mm, scenario.motion_deg)
    )
    translation = rng.uniform(0.0, max_mm) * _random_unit(rng)
    angle = rng.uniform(0.0, max_deg)
    rotation = _rotation(_random_unit(rng), math.radians(angle))
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = centre_mm - rotation @ centre_mm + translation
    return transform, float(np.linalg.norm(translation)), float(angle), jump


def _scan_grid(
    rng: np.random.Generator,
    patient: Patient,
    scenario: Scenario,
    centre_scan_mm: NDArray[np.float64],
    uid: str,
) -> Grid:
    """Axial grid with the planning in-plane geometry, centred in z on the tumour (scan frame)."""
    planning = patient.ct.grid
    thickness = scenario.slice_thickness_mm or float(planning.spacing_mm[0])
    slices = int(rng.integers(scenario.scan_slices[0], scenario.scan_slices[1] + 1))
    affine = np.array(planning.affine, dtype=np.float64)
    affine[:3, 0] = [0.0, 0.0, thickness]
    offset = rng.uniform(-0.5, 0.5) * thickness
    affine[2, 3] = centre_scan_mm[2] + offset - (slices - 1) / 2.0 * thickness
    return Grid((slices, planning.shape[1], planning.shape[2]), affine, uid)


def _batches(needle_count: int, batches: int) -> list[list[int]]:
    groups = np.array_split(np.arange(needle_count), min(batches, max(needle_count, 1)))
    return [[int(k) for k in group] for group in groups if len(group)]


def _cold(plan: Plan, count: int) -> set[int]:
    """The ``count`` needles carrying most seeds (ties: the lower index)."""
    order = sorted(range(len(plan.needles)), key=lambda k: (-len(plan.needles[k].seed_indices), k))
    return set(order[:count])


def simulate_procedure(
    patient: Patient,
    plan: Plan,
    scenario: Scenario | ScenarioName | str,
    *,
    seed: int = 0,
    context: StudyContext | None = None,
) -> Procedure:
    """What happens during the implant of ``plan`` in ``patient`` (see the module docstring).

    Parameters
    ----------
    patient : Patient
        The phantom the plan was made on (planning frame = ``patient.ct``'s).
    plan : Plan
        Needles with seed indices (tip first), in the planning frame.
    scenario : Scenario, ScenarioName or str
    seed : int
        Seeds every random choice: the same inputs give the same procedure.
    context : StudyContext, optional
        Scan frame UIDs are derived from its StudyInstanceUID and scan times start from
        its study datetime; a fixed dummy study when omitted.
    """
    chosen = get_scenario(scenario)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    ctx = context or StudyContext(study_instance_uid="1.2.3", frame_of_reference_uid="1.2.3.4",
                                  study_datetime=dt.datetime(2026, 1, 5, 9, 0))  # fmt: skip
    cold = _cold(plan, chosen.cold_needles)
    lines = [_deviate_needle(rng, n.entry_mm, n.tip_mm, chosen) for n in plan.needles]
    depths = [n.length_mm + rng.choice([-1.0, 1.0]) * rng.uniform(*chosen.depth_mm) for n in plan.needles]
    tips = np.array([e + d * u for (e, u), d in zip(lines, depths, strict=True)]).reshape(-1, 3)
    seeds = [
        s for k in range(len(plan.needles)) for s in _drop_seeds(rng, plan, k, lines[k], chosen, k in cold)
    ]
    centre = np.asarray(patient.model.tumour.centre_mm, dtype=np.float64)
    scans = []
    batches = _batches(len(plan.needles), chosen.seed_batches)
    withdrawn: list[int] = []
    for index in range(1, len(batches) + 2):
        if index > 1:
            withdrawn += batches[index - 2]
        transform, moved_mm, turned_deg, jump = _pose(rng, chosen, centre)
        uid = generate_uid(entropy_srcs=[ctx.study_instance_uid, "scan", str(index)])
        centre_scan = transform[:3, :3] @ centre + transform[:3, 3]
        grid = _scan_grid(rng, patient, chosen, centre_scan, str(uid))
        in_patient = tuple(k for k in range(len(plan.needles)) if k not in withdrawn)
        dropped = tuple(j for j, s in enumerate(seeds) if s.needle_index in withdrawn and s.present)
        when = ctx.study_datetime + dt.timedelta(minutes=20 * index)
        rows = tuple(tuple(row) for row in transform.tolist())
        noise_seed = int(rng.integers(2**31))
        scans.append(
            Scan(index, in_patient, dropped, rows, moved_mm, turned_deg, jump, grid, noise_seed, when)
        )
    entries = np.array([e for e, _ in lines]).reshape(-1, 3)
    logger.info("procedure %s (seed %d): %d needles, %d scans", chosen.name, seed, len(lines), len(scans))
    return Procedure(chosen, seed, entries, tips, tuple(seeds), tuple(scans))


@dataclass(frozen=True, eq=False)
class ScanOutput:
    """One rendered scan: its CT datasets, its ground truth (JSON-ready) and the render time."""

    scan: Scan
    datasets: list[Dataset]
    truth: dict[str, Any]
    render_s: float


def scanner_config(scenario: Scenario) -> ScannerConfig:
    """How the scenario's scans are rendered: its noise and its streak model.

    With ``photons_per_bin`` set, the seeds are projected with the attenuation of their
    silver core (:data:`simulators.render.SILVER_CORE_SEED_MU_PER_MM`), beam hardening is
    that of silver (kappa 0.3) and the streaks are photon limited; otherwise the default
    model scaled by ``streak_strength``.
    """
    if scenario.photons_per_bin is None:
        model = StreakModel(strength=scenario.streak_strength)
        return ScannerConfig(noise_sd_hu=scenario.noise_sd_hu, streak_model=model)
    model = replace(
        StreakModel.photon_limited(scenario.photons_per_bin, kappa=0.3), strength=scenario.streak_strength
    )
    return ScannerConfig(
        noise_sd_hu=scenario.noise_sd_hu, seed_mu_per_mm=SILVER_CORE_SEED_MU_PER_MM, streak_model=model
    )


def scan_truth(procedure: Procedure, scan: Scan, truth: dict[str, Any]) -> dict[str, Any]:
    """The ground truth of a scan: ``ScanTruth.to_dict()`` plus the procedure's bookkeeping.

    Added keys: ``scan_index``, ``scenario``, ``acquired`` (ISO datetime), ``motion``
    (translation_mm, rotation_deg, jump), ``needles_in_patient`` (plan needle indices, in the
    order of the needle rows), ``seeds_implanted`` (one dict per seed row: plan_index,
    needle_index, status), ``seeds_missing`` (plan indices of the seeds lost so far).
    """
    withdrawn = set(range(len(procedure.needle_entries_mm))) - set(scan.needles)
    lost = [s.plan_index for s in procedure.seeds if not s.present and s.needle_index in withdrawn]
    rows = [procedure.seeds[j] for j in scan.seeds]
    return {
        **truth, "scan_index": scan.index, "scenario": procedure.scenario.name,
        "acquired": scan.acquired.isoformat(),
        "motion": {"translation_mm": scan.translation_mm, "rotation_deg": scan.rotation_deg,
                   "jump": scan.jump},
        "needles_in_patient": list(scan.needles),
        "seeds_implanted": [{"plan_index": s.plan_index, "needle_index": s.needle_index, "status": s.status}
                            for s in rows],
        "seeds_missing": lost,
    }  # fmt: skip


def render_procedure_scan(patient: Patient, procedure: Procedure, scan: Scan) -> RenderedScan:
    """The CT of one scan of ``procedure``: its seeds and needles, its pose and the scenario's scanner."""
    rows = [procedure.seeds[j] for j in scan.seeds]
    return render_scan(
        patient.model, scan.grid,
        seed_positions_mm=np.array([s.position_mm for s in rows]).reshape(-1, 3),
        seed_directions=np.array([s.direction for s in rows]).reshape(-1, 3),
        needle_entries_mm=procedure.needle_entries_mm[list(scan.needles)].reshape(-1, 3),
        needle_tips_mm=procedure.needle_tips_mm[list(scan.needles)].reshape(-1, 3),
        planning_to_scan=np.array(scan.planning_to_scan), scanner=scanner_config(procedure.scenario),
        noise_seed=scan.noise_seed,
    )  # fmt: skip


def iter_scans(
    patient: Patient, procedure: Procedure, context: StudyContext, *, first_series_number: int = 101
) -> Iterator[ScanOutput]:
    """Render and encode the procedure's scans one by one (each takes a second or more).

    Each scan is a CT series of its own (new SeriesInstanceUID, series number
    ``first_series_number`` + index - 1) in ``context``'s study, in the scan's own frame of reference.
    """
    for scan in procedure.scans:
        started = time.perf_counter()
        rendered = render_procedure_scan(patient, procedure, scan)
        scan_context = replace(context, frame_of_reference_uid=scan.grid.frame_of_reference_uid)
        datasets = write_ct_series(
            rendered.volume, scan_context, series_number=first_series_number + scan.index - 1,
            series_description=f"Implant check {scan.index}", kvp=120.0, patient_position="HFS",
            content_datetime=scan.acquired, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        logger.info("scan %d: %d seeds, %d needles, %s, %.1f s", scan.index, len(scan.seeds),
                    len(scan.needles), scan.grid.shape, elapsed)  # fmt: skip
        yield ScanOutput(scan, datasets, scan_truth(procedure, scan, rendered.truth.to_dict()), elapsed)
