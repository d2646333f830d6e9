"""docs/conformance.md stays true: its tables equal the node's configured presentation contexts."""

from __future__ import annotations

import re
from pathlib import Path

from dicom_node.config import NodeConfig
from dicom_node.conformance import STATUS_MEANINGS, TRANSFER_SYNTAXES, VERIFICATION_TRANSFER_SYNTAXES
from dicom_node.server import build_ae

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(title)
    end = text.find("\n#", start + 1)
    return text[start : end if end != -1 else len(text)]


def _rows(section: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]
    return rows[2:]  # after the header and separator rows


def test_sop_classes_and_transfer_syntaxes_match_the_application_entity() -> None:
    ae = build_ae(NodeConfig())
    contexts = {cx.abstract_syntax: cx for cx in ae.supported_contexts}
    documented = {uid: (name, role) for name, uid, role in _rows(_section("### 1.1 SOP classes"))}
    assert set(documented) == set(contexts)
    for uid, (name, role) in documented.items():
        assert role == "SCP" and contexts[uid].scp_role in (None, True)
        assert contexts[uid].abstract_syntax.name == name  # the documented name is the DICOM name
    syntaxes = {uid: name for name, uid in _rows(_section("### 1.2 Transfer syntaxes"))}
    assert list(syntaxes) == list(TRANSFER_SYNTAXES)
    for uid, cx in contexts.items():
        expected = VERIFICATION_TRANSFER_SYNTAXES if uid == "1.2.840.10008.1.1" else TRANSFER_SYNTAXES
        assert list(cx.transfer_syntax) == list(expected)
        for ts in cx.transfer_syntax:
            if ts in syntaxes:
                assert syntaxes[ts] == ts.name


def test_status_table_lists_every_status_the_node_returns() -> None:
    documented = {int(code, 16): meaning for code, meaning in _rows(_section("## 2. C-STORE statuses"))}
    assert documented == {int(status): meaning for status, meaning in STATUS_MEANINGS.items()}


def test_documented_defaults_are_the_configured_defaults() -> None:
    policies = _section("### 1.3 Association policies")
    defaults = NodeConfig()
    assert f"`{defaults.ae_title}`" in policies
    assert re.search(rf"\| Maximum associations \| {defaults.max_associations} \|", policies)
    seconds = (defaults.acse_timeout_s, defaults.dimse_timeout_s, defaults.network_timeout_s)
    timeouts = " / ".join(f"{s:g} s" for s in seconds)
    assert timeouts in policies
