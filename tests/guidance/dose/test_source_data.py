"""Source data files: every model loads, with provenance; aliases; validation."""

from __future__ import annotations

import copy
import json
from importlib import resources

import numpy as np
import pytest

from guidance.dose.source_data import (
    SourceData,
    available_source_models,
    load_source_data,
    source_data_from_dict,
)
from guidance.dose.tg43 import derive_anisotropy_factor


def _raw_6711() -> dict:
    text = (resources.files("guidance.dose") / "sources" / "6711.json").read_text(encoding="utf-8")
    return json.loads(text)


def test_bundled_models_and_consensus_constants() -> None:
    assert available_source_models() == ("200", "2301", "6702", "6711", "IAI-125A")
    expected = {  # Lambda cGy/h/U, L cm, T1/2 d (TG-43U1)
        "6711": (0.965, 0.30, 59.40),
        "6702": (1.036, 0.30, 59.40),
        "2301": (1.018, 0.40, 59.40),
        "IAI-125A": (0.981, 0.30, 59.40),
        "200": (0.686, 0.423, 16.991),
    }
    for model_id, (lam, length, half_life) in expected.items():
        data = load_source_data(model_id)
        assert (data.dose_rate_constant_cgy_h_u, data.effective_length_cm, data.half_life_days) == (
            lam,
            length,
            half_life,
        )


@pytest.mark.parametrize("model_id", ["200", "2301", "6702", "6711", "IAI-125A"])
def test_every_model_has_provenance_and_consistent_tables(model_id: str) -> None:
    data = load_source_data(model_id)
    for key in ("reference", "tables", "public_copy"):
        assert data.provenance[key]
    assert "Med. Phys. 31" in data.provenance["reference"]
    assert data.f_values.shape == (data.f_theta_deg.size, data.f_r_cm.size)
    assert np.all(np.diff(data.g_r_cm) > 0) and data.f_theta_deg[0] == 0 and data.f_theta_deg[-1] == 90
    assert np.allclose(data.f_values[-1], 1.0)  # F(r, 90 deg) = 1 by definition
    assert data.phi_an_origin in {"published", "derived"}
    assert not data.g_values.flags.writeable


def test_6711_tables_as_published() -> None:
    data = load_source_data("6711")
    assert data.g_r_cm[0] == 0.10 and data.g_r_cm[-1] == 10.0 and data.g_values[-1] == 0.0803
    assert dict(zip(data.g_r_cm.tolist(), data.g_values.tolist(), strict=True))[2.0] == 0.814
    assert data.f_r_cm.tolist() == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert data.f_values[0].tolist() == [0.333, 0.370, 0.442, 0.488, 0.520, 0.550]
    assert data.phi_an_values[0] == 0.973 and data.phi_an_values[-1] == 0.944
    assert data.phi_an_origin == "published"
    assert data.mean_life_h == pytest.approx(2056.7, rel=1e-4)


@pytest.mark.parametrize("model_id", ["6711", "6702"])
def test_phi_an_derived_from_f_matches_published(model_id: str) -> None:
    """The derivation used for models without a published phi_an reproduces the published ones."""
    data = load_source_data(model_id)
    derived = derive_anisotropy_factor(data.f_r_cm, data.f_theta_deg, data.f_values, data.effective_length_cm)
    published = np.interp(data.f_r_cm, data.phi_an_r_cm, data.phi_an_values)
    assert np.max(np.abs(derived / published - 1)) < 0.005


def test_aliases_resolve_case_insensitively() -> None:
    for name in ("6711-type", "6711-TYPE", "oncoseed 6711", "OncoSeed_6711", "Chinese 6711-type"):
        assert load_source_data(name).model_id == "6711"
    assert load_source_data("best 2301").model_id == "2301"
    assert load_source_data("theraseed").isotope == "Pd-103"
    assert "6711-type" in load_source_data("6711").alias_notes
    data = load_source_data("iai125a")
    assert load_source_data(data) is data


def test_unknown_model_lists_the_available_ones() -> None:
    # The Oncentra plan's "selectSeed" is not a consensus model: never mapped silently.
    with pytest.raises(KeyError, match=r"available models.*6711.*source_map"):
        load_source_data("selectSeed")


def _broken(path: list[str], value: object) -> dict:
    raw = copy.deepcopy(_raw_6711())
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["radial_dose_function", "r_cm"], [0.1, 0.5, 0.25] + [1.0] * 13, "strictly increasing"),
        (
            ["anisotropy_function", "theta_deg"],
            [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 100],
            "0 to 90 or 0 to 180",
        ),
        (["anisotropy_function", "f_rows_by_theta"], [[1.0] * 6] * 10, "shape"),
        (["effective_length_cm"], -0.3, "positive"),
        (["radial_dose_function", "g_l"], [1.0] * 15, "one value per radius"),
        (["provenance"], {"reference": "x"}, "provenance"),
    ],
)
def test_validation_names_the_file_and_field(path: list[str], value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        source_data_from_dict(_broken(path, value), "sources/broken.json")
    assert "sources/broken.json" in str(info.value)


def test_missing_field_is_reported() -> None:
    raw = _raw_6711()
    del raw["half_life_days"]
    with pytest.raises(ValueError, match="missing field 'half_life_days'"):
        source_data_from_dict(raw, "x.json")


def test_source_data_is_frozen() -> None:
    data = load_source_data("6711")
    assert isinstance(data, SourceData)
    with pytest.raises(AttributeError):
        data.model_id = "x"  # type: ignore[misc]
