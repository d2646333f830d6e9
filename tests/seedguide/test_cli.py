"""`seedguide inspect` and `seedguide demo` on real third-party files and our example."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from seedguide.cli import main


def _inspect_json(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, dict[str, Any]]:
    status = main(["inspect", "--json", *map(str, paths)])
    return status, json.loads(capsys.readouterr().out)


def test_oncentra_i125_plan_folder(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = _inspect_json(capsys, shared_data / "brachy_ldr_i125_oncentra_mcbrachy")
    assert report["files"] == 4
    (plan,) = report["plans"]
    assert plan["readable"]
    assert plan["seeds"] == 36
    assert plan["isotopes"] == ["I-125"]
    assert plan["treatment_type"] == "LDR"
    assert plan["strengths_u"] == [pytest.approx(0.7521, abs=1e-4)]
    assert plan["strength_reference_datetime"] == "2017-03-02T12:00:00"
    (structure_set,) = report["structure_sets"]
    assert len(structure_set["structures"]) == 9
    assert sum(s["empty"] for s in structure_set["structures"]) == 4
    (dose,) = report["doses"]
    assert dose["readable"]
    assert dose["spacing_mm"][1:] == [pytest.approx(1.026, abs=1e-3), pytest.approx(0.967, abs=1e-3)]
    (series,) = report["series"]
    assert series["instances"] == 1
    assert status in (0, 1)  # a one-slice CT of a 99-slice study may carry a note


def test_mim_pd103_plan_folder(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = _inspect_json(capsys, shared_data / "brachy_ldr_pd103_mim_ebgui")
    (plan,) = report["plans"]
    assert plan["seeds"] == 27
    assert plan["isotopes"] == ["Pd-103"]
    assert plan["treatment_type"] == "MANUAL"
    (series,) = report["series"]
    assert series["readable"]
    assert series["modality"] == "CT"
    assert series["shape"] == [40, 512, 512]
    assert series["spacing_mm"][0] == pytest.approx(3.0)
    assert status == 0, report


def test_hdr_plans_are_reported_as_not_usable(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = _inspect_json(capsys, shared_data / "brachy_hdr_pdr_varian_pytg43" / "HDR")
    (plan,) = report["plans"]
    assert not plan["readable"]
    assert any("HDR" in problem for problem in plan["problems"])
    assert status == 1


def test_text_report_and_non_dicom_files(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(shared_data / "brachy_ldr_pd103_mim_ebgui" / "RTPLAN.dcm", tmp_path / "plan.dcm")
    (tmp_path / "README.txt").write_text("not DICOM")
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "27 seed(s) of Pd-103" in out
    assert f"not DICOM: {tmp_path / 'README.txt'}" in out


def test_missing_path_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_demo_streams_a_simulated_procedure_through_node_and_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--headless", "--out", str(out), "--seed", "1", "--scenario", "cold-spot"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("plan: ")
    assert "plan sent to the node at 127.0.0.1:" in printed
    # every received instance is in the node's store as well as in the session
    kept = [p for p in (out / "session").rglob("*.dcm") if p.parent.name != "exports"]
    assert len(list((out / "store").rglob("*.dcm"))) == len(kept)
    out = out / "session"
    scans = sorted((out / "scans").iterdir())
    assert len(scans) >= 2
    assert [line.split(":")[0] for line in printed.splitlines() if line.startswith("scan ")] == [
        f"scan {k}" for k in range(1, len(scans) + 1)
    ]
    results = [json.loads((folder / "result.json").read_text()) for folder in scans]
    assert {r["schema"] for r in results} == {"seedguide.result/1"}
    truth = json.loads((scans[-1] / "truth.json").read_text())
    final = results[-1]
    # The cold-spot scenario loses a whole needle's seeds: the last scan shows it and proposes seeds.
    assert truth["seeds_missing"]
    assert final["registration"]["verdict"] == "pass"
    assert final["coverage"]["cold_spots"]
    assert final["suggestions"]["seeds"]
    # The session's plan folder is a planning set that inspect reads as such.
    assert main(["inspect", "--json", str(out / "plan")]) == 0
    report = json.loads(capsys.readouterr().out)
    (plan,) = report["plans"]
    assert plan["seeds"] > 0 and plan["isotopes"] == ["I-125"]


def test_demo_refuses_to_replace_a_folder_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "patient-data"
    precious.mkdir()
    (precious / "CT1.dcm").write_bytes(b"not ours")
    assert main(["demo", "--headless", "--out", str(precious)]) == 2
    assert "not a demo working folder" in capsys.readouterr().err
    assert (precious / "CT1.dcm").read_bytes() == b"not ours"


def test_console_entry_point_runs(shared_data: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seedguide",
            "inspect",
            "--json",
            str(shared_data / "brachy_ldr_pd103_mim_ebgui"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plans"][0]["seeds"] == 27
