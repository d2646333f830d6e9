"""Forwarding exports: an unreachable destination is retried, recorded as failed, and stops nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seedguide.forward import Destination, Forwarder, parse_destination
from tests.simulators.peers import free_port


def test_destination_is_parsed_or_refused_with_the_expected_form() -> None:
    assert parse_destination("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    assert str(parse_destination("TPS@host.example:11112", "NODE")) == "TPS@host.example:11112"
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:0", "PACS@host:x", "A" * 17 + "@h:104"):
        with pytest.raises(ValueError, match="expected AE@HOST:PORT"):
            parse_destination(bad)


# pynetdicom leaves the socket of a refused connection to the garbage collector (ResourceWarning).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_unreachable_destination_is_retried_and_recorded(tmp_path: Path) -> None:
    exports = tmp_path / "scans" / "01" / "exports"
    exports.mkdir(parents=True)
    (exports / "dose.dcm").write_bytes(b"not sent")
    forwarder = Forwarder(
        Destination("PACS", "127.0.0.1", free_port(), timeout_s=2.0), attempts=2, pause_s=0.01
    )
    forwarder.submit(exports)
    forwarder.close()
    record = json.loads((exports / "forwarded.json").read_text())
    assert record["ok"] is False
    assert record["statuses"] == {"dose.dcm": "association rejected or not reachable"}
    assert record["destination"].startswith("PACS@127.0.0.1:")
