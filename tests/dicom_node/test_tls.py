"""TLS: a trusted client with a certificate gets in; plain TCP and certificate-less clients do not."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.config import TlsConfig

from .datasets import SeriesSpec, ct_slice
from .peers import associate

pytestmark = pytest.mark.network


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=seedguide test CA", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)
    return d


def _client_context(pki: Path, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if with_cert:
        context.load_cert_chain(pki / "client.pem", pki / "client.key")
    return context


def test_tls_with_client_certificates(start_node, pki: Path, caplog) -> None:
    tls = TlsConfig(pki / "server.pem", pki / "server.key", pki / "ca.pem", require_client_cert=True)
    running = start_node(tls=tls)
    good = associate(running.port, tls_args=(_client_context(pki, True), "127.0.0.1"))
    assert good.is_established
    assert good.send_c_echo().Status == 0
    # Full-size slices: each PDU spans many TLS records, read through the node's socket wait and reads.
    spec = SeriesSpec(rows=512, columns=512)
    slices = [ct_slice(spec, k) for k in range(3)]
    assert [int(good.send_c_store(ds).Status) for ds in slices] == [0, 0, 0]
    good.release()
    stored = {i.header.sop_instance_uid: i.path for i in running.node.store.series_instances(spec.series_uid)}
    assert sorted(stored) == sorted(ds.SOPInstanceUID for ds in slices)
    for ds in slices:
        assert dcmread(stored[ds.SOPInstanceUID]).PixelData == ds.PixelData

    # A plain DICOM peer: the node expects a TLS ClientHello and closes the connection.
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as plain:
        plain.sendall(b"\x01\x00" + bytes(70))  # the start of an A-ASSOCIATE-RQ PDU
        assert _closed_by_peer(plain)
    # A TLS peer without a client certificate: the handshake fails on the node's side.
    raw = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    with _client_context(pki, False).wrap_socket(raw, server_hostname="127.0.0.1") as no_cert:
        assert _closed_by_peer(no_cert)
    deadline = time.monotonic() + 5
    while caplog.text.count("TLS handshake with 127.0.0.1") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "WRONG_VERSION_NUMBER" in caplog.text
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in caplog.text


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def test_server_context_refuses_old_protocols(pki: Path) -> None:
    context = TlsConfig(pki / "server.pem", pki / "server.key").server_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
