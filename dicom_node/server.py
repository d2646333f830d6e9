"""The node as a service: application entity, store, assembler; ``main(argv)`` runs it.

``python -m dicom_node --port 11112 --ae-title SEEDGUIDE --store DIR [--config FILE]``
(or ``seedguide node ...``) listens until SIGTERM or SIGINT, then stops accepting,
lets open associations finish (bounded by ``shutdown_grace_s``), announces every
series still pending and exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.assembler import Assembler, SeriesReady, Subscriber
from dicom_node.config import CallerRule, ConfigError, NodeConfig, TlsConfig, load_config
from dicom_node.conformance import (
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    VERIFICATION_TRANSFER_SYNTAXES,
)
from dicom_node.handlers import (
    AssociationLog,
    handle_aborted,
    handle_accepted,
    handle_echo,
    handle_rejected,
    handle_released,
    handle_requested,
    handle_store,
)
from dicom_node.reactor import reuse_freed_buffers, start_server
from dicom_node.store import DurableWriter, Store

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def build_ae(config: NodeConfig) -> AE:
    """The application entity: Verification and Storage SCP with the limits of `config`.

    Unless ``config.debug``, pynetdicom's standard per-PDU and per-DIMSE logging
    handlers are not bound at all (``_config.LOG_HANDLER_LEVEL = "none"``, a
    process-wide pynetdicom setting read when an association is created): with
    them, every PDU raises an event whose handler formats a log record.
    """
    _config.LOG_HANDLER_LEVEL = "standard" if config.debug else "none"
    ae = AE(ae_title=config.ae_title)
    ae.add_supported_context(VERIFICATION_SOP_CLASS, list(VERIFICATION_TRANSFER_SYNTAXES))
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.require_called_aet = True
    ae.require_calling_aet = [rule.ae_title for rule in config.allowed_callers]
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = config.max_pdu_size
    ae.acse_timeout = config.acse_timeout_s
    ae.dimse_timeout = config.dimse_timeout_s
    ae.network_timeout = config.network_timeout_s
    return ae


class Node:
    """A running DICOM node: listens, stores, assembles and announces.

    Parameters
    ----------
    config : NodeConfig
        All settings.
    writer : DurableWriter, optional
        How the store writes files (tests inject a failing disk through it).
    """

    def __init__(self, config: NodeConfig, *, writer: DurableWriter | None = None) -> None:
        self.config = config
        self.store = Store(config.store_dir, writer=writer)
        self.assembler = Assembler(quiet_period_s=config.quiet_period_s,
                                   known_instances=self.store.series_instances)
        self.ae = build_ae(config)
        self._log = AssociationLog()
        self._server: ThreadedAssociationServer | None = None

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback` with every :class:`SeriesReady` (from the dispatcher thread)."""
        self.assembler.subscribe(callback)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the node listens on (the real port when configured with port 0)."""
        if self._server is None:
            raise RuntimeError("the node is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_C_STORE, handle_store, [self.store, self.assembler, self._log]),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_REQUESTED, handle_requested, [self.config]),
            (evt.EVT_REJECTED, handle_rejected),
            (evt.EVT_ACCEPTED, handle_accepted),
            (evt.EVT_RELEASED, handle_released, [self._log]),
            (evt.EVT_ABORTED, handle_aborted, [self._log]),
        ]

    def start(self) -> Node:
        """Start the assembler and listen (non-blocking); returns self."""
        logger.info("effective configuration: %s", self.config.describe())
        if not self.config.allowed_callers:
            logger.warning("no allowed_callers: any calling AE title is accepted")
        tls = self.config.tls
        context = tls.server_context(self.config.acse_timeout_s) if tls is not None else None
        if not reuse_freed_buffers():
            logger.info("C library without glibc's mallopt(): buffers are allocated per instance")
        self.assembler.start()
        self._server = start_server(self.ae, (self.config.host, self.config.port), ssl_context=context,
                                    evt_handlers=self._handlers())
        host, port = self.address
        logger.info("listening on %s:%d as %s%s", host, port, self.config.ae_title,
                    " with TLS" if tls else "")
        return self

    def stop(self) -> None:
        """Stop accepting, let open associations finish (bounded), flush announcements, close the store."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # stops the accept loop; open associations go on
            deadline = time.monotonic() + self.config.shutdown_grace_s
            while server.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            for assoc in server.active_associations:
                logger.warning("aborting association with %s still open at shutdown",
                               assoc.requestor.ae_title)
                assoc.abort()
        self.ae.shutdown()
        self.assembler.stop()
        self.store.close()
        logger.info("node stopped")

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _caller_rule(text: str) -> CallerRule:
    title, _, hosts = text.partition("@")
    return CallerRule(title, tuple(h for h in hosts.split(",") if h))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the node's command-line options to `parser` (shared by ``seedguide node``)."""
    parser.add_argument("--config", type=Path, help="TOML settings file (flags override it)")
    parser.add_argument("--host", help="listening address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listening port (default 11112; 0 picks one)")
    parser.add_argument("--ae-title", dest="ae_title", help="called AE title (default SEEDGUIDE)")
    parser.add_argument("--store", dest="store_dir", type=Path, help="store folder")
    parser.add_argument("--allow", action="append", metavar="AE[@IP,IP]", type=_caller_rule,
                        help="allowed calling AE title, optionally only from these addresses (repeatable)")
    parser.add_argument("--quiet-period", dest="quiet_period_s", type=float,
                        help="seconds without new instances before a series is announced (default 3)")
    parser.add_argument("--max-associations", dest="max_associations", type=int)
    parser.add_argument("--max-pdu", dest="max_pdu_size", type=int, help="max PDU received, 0 = unlimited")
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificates (PEM) for client certificates")
    parser.add_argument("--tls-require-client-cert", action="store_true", default=None)
    parser.add_argument("--debug", action="store_true", default=None, help="pynetdicom per-PDU logging")


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Defaults, then ``--config`` file, then flags."""
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("host", "port", "ae_title", "store_dir", "quiet_period_s", "max_associations",
                    "max_pdu_size", "debug")
    }
    if args.allow:
        overrides["allowed_callers"] = tuple(args.allow)
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        overrides["tls"] = TlsConfig(args.tls_cert, args.tls_key, args.tls_ca,
                                     bool(args.tls_require_client_cert))
    return load_config(args.config, overrides)


def configure_logging(debug: bool) -> None:
    """Root logging for the service; pynetdicom's per-PDU logs only with `debug`."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if debug else logging.WARNING)


def run(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM / SIGINT; return the exit status."""
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        logging.getLogger(__name__).error("configuration error: %s", exc)
        return EXIT_USAGE
    configure_logging(config.debug)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        node = Node(config).start()
    except OSError as exc:
        logger.error("cannot start the node: %s", exc)
        return EXIT_ERROR
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dicom_node``: run the node as a service; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m dicom_node", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["Node", "SeriesReady", "add_arguments", "build_ae", "main", "run"]
