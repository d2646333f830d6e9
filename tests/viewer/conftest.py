"""Fixtures of the viewer tests: one simulated session (built once) and real napari viewers on Xvfb."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

napari = pytest.importorskip("napari")


@pytest.fixture(scope="session")
def session_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder: the small neck phantom's plan, scans 1 and 3 analysed, scan 2 stored only.

    Scan 3 of the cold-spot scenario has a known cold spot (D90 about half the prescription).
    """
    from guidance.dicomio.ct import read_ct_series
    from guidance.dicomio.dataset import StudyContext
    from guidance.pipeline import run_pipeline
    from guidance.session import SessionFolder
    from simulators.case import PlanOptions, phantom_config, plan_case, plan_datasets
    from simulators.phantom import make_patient
    from simulators.procedure import iter_scans, simulate_procedure

    out = tmp_path_factory.mktemp("viewer") / "session"
    context = StudyContext(patient_id="SEEDGUIDE-VIEWER-TEST", patient_name="TEST^VIEWER")
    patient = make_patient(
        phantom_config("small", frame_of_reference_uid=context.frame_of_reference_uid), seed=1
    )
    session = SessionFolder.create(out, plan_datasets(patient, plan_case(patient, PlanOptions()), context))
    bundle = session.load_bundle()
    procedure = simulate_procedure(patient, bundle.plan, "cold-spot", seed=1, context=context)
    for output in iter_scans(patient, procedure, context):
        record = session.new_scan(output.datasets)
        if record.index == 2:
            continue  # stored, not analysed: the timeline must say so
        result = run_pipeline(read_ct_series(output.datasets), bundle.plan, bundle.planning_ct)
        session.record_result(record, result, bundle, truth=output.truth)
    return out


@pytest.fixture
def viewer(qtbot: object) -> Iterator[napari.Viewer]:
    """A shown napari viewer (screenshots are black without show=True), closed afterwards."""
    from qtpy.QtWidgets import QApplication

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        made = napari.Viewer(show=True)
    made.window.resize(1200, 800)
    yield made
    made.close()
    QApplication.processEvents()
