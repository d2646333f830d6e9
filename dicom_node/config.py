"""Configuration of the DICOM node: one frozen dataclass, from defaults, a TOML file, then flags.

A TOML file holds the field names of :class:`NodeConfig` as top-level keys, a
``[tls]`` table and any number of ``[[allowed_callers]]`` tables::

    ae_title = "SEEDGUIDE"
    port = 11112
    store_dir = "/var/lib/seedguide/store"
    quiet_period_s = 3.0

    [[allowed_callers]]
    ae_title = "CT_SCANNER"
    hosts = ["127.0.0.1"]      # optional; empty or absent: any address

    [tls]
    cert_file = "node.pem"
    key_file = "node.key"
    ca_file = "ca.pem"          # client certificates are verified against it
    require_client_cert = true
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_AE_TITLE_MAX_CHARS = 16  # PS3.5 Table 6.2-1, VR AE


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


def check_ae_title(value: str, what: str) -> str:
    """Return `value` stripped if it is a valid AE title (PS3.5 6.2, VR AE), else raise ConfigError."""
    title = value.strip()
    if not title or len(title) > _AE_TITLE_MAX_CHARS or "\\" in title:
        raise ConfigError(f"{what}: {value!r} is not an AE title (1-16 characters, no backslash)")
    if not all(32 <= ord(c) < 127 for c in title):
        raise ConfigError(f"{what}: {value!r} has characters outside printable ASCII")
    return title


@dataclass(frozen=True)
class CallerRule:
    """A calling AE title allowed to associate, optionally only from given IP addresses."""

    ae_title: str
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "allowed caller ae_title"))

    def allows(self, ae_title: str, address: str) -> bool:
        """True if a peer calling as `ae_title` from `address` matches this rule."""
        return ae_title.strip() == self.ae_title and (not self.hosts or address in self.hosts)


class _LoggingServerContext(ssl.SSLContext):
    """A server SSL context that bounds and logs the handshake of each accepted connection.

    pynetdicom wraps accepted sockets in its accept loop; a peer that never
    completes the handshake would hold that loop, hence the timeout.
    """

    handshake_timeout_s: float = 30.0

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        try:
            peer = "{}:{}".format(*sock.getpeername()[:2])
        except OSError:
            peer = "unknown peer"
        sock.settimeout(self.handshake_timeout_s)
        try:
            wrapped = super().wrap_socket(sock, *args, **kwargs)
        except (ssl.SSLError, OSError) as exc:
            logger.warning("TLS handshake with %s failed: %s", peer, exc)
            sock.close()
            raise
        wrapped.settimeout(None)
        logger.debug("TLS %s with %s", wrapped.version(), peer)
        return wrapped


@dataclass(frozen=True)
class TlsConfig:
    """Server-side TLS (PS3.15 Annex B.1, BCP 195): certificate, key, and the CA for client certificates."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = False

    def __post_init__(self) -> None:
        if self.require_client_cert and self.ca_file is None:
            raise ConfigError("tls: require_client_cert needs ca_file to verify client certificates against")

    def server_context(self, handshake_timeout_s: float = 30.0) -> ssl.SSLContext:
        """Build the server-side SSL context: TLS 1.2 minimum, client certificates when required.

        Failed handshakes (a plain DICOM peer, an untrusted certificate) are logged.
        """
        context = _LoggingServerContext(ssl.PROTOCOL_TLS_SERVER)
        context.handshake_timeout_s = handshake_timeout_s
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=self.cert_file, keyfile=self.key_file)
        if self.ca_file is not None:
            context.load_verify_locations(cafile=self.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE
        return context


@dataclass(frozen=True)
class NodeConfig:
    """Every setting of the node; see the module docstring for the file format.

    Attributes
    ----------
    ae_title : str
        Called AE title the node answers to; associations to any other are rejected.
    host, port : str, int
        Listening address; port 0 picks a free port (tests).
    store_dir : Path
        Root of the durable store.
    allowed_callers : tuple of CallerRule
        Calling AE titles (and addresses) allowed in; empty: any calling AE title.
    tls : TlsConfig or None
        Server-side TLS; None: plain TCP.
    max_associations : int
        Concurrent associations; more are rejected (transient, local limit exceeded).
    max_pdu_size : int
        Maximum PDU length the node receives, bytes; 0 means unlimited (PS3.8 D.3.3.2.1).
    acse_timeout_s, dimse_timeout_s, network_timeout_s : float
        Association negotiation, DIMSE message and idle network timeouts, seconds.
    quiet_period_s : float
        A series is announced when no instance of it arrived for this long.
    shutdown_grace_s : float
        On shutdown, how long open associations may finish before they are aborted.
    debug : bool
        Log pynetdicom's per-PDU detail (otherwise pynetdicom logs warnings only).
    """

    ae_title: str = "SEEDGUIDE"
    host: str = "127.0.0.1"
    port: int = 11112
    store_dir: Path = Path("seedguide-store")
    allowed_callers: tuple[CallerRule, ...] = ()
    tls: TlsConfig | None = None
    max_associations: int = 8
    max_pdu_size: int = 0
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 120.0
    quiet_period_s: float = 3.0
    shutdown_grace_s: float = 10.0
    debug: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "ae_title"))
        object.__setattr__(self, "store_dir", Path(self.store_dir))
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: {self.port} is not a TCP port (0-65535)")
        if self.max_associations < 1:
            raise ConfigError(f"max_associations: {self.max_associations} must be at least 1")
        if self.max_pdu_size != 0 and self.max_pdu_size < 4096:
            raise ConfigError(f"max_pdu_size: {self.max_pdu_size} must be 0 (unlimited) or >= 4096 bytes")
        for name in ("acse_timeout_s", "dimse_timeout_s", "network_timeout_s", "quiet_period_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: {getattr(self, name)} must be a positive number of seconds")
        if self.shutdown_grace_s < 0:
            raise ConfigError(f"shutdown_grace_s: {self.shutdown_grace_s} must not be negative")

    def caller_allowed(self, ae_title: str, address: str) -> bool:
        """True if the allow-list is empty or one of its rules matches the peer."""
        return not self.allowed_callers or any(r.allows(ae_title, address) for r in self.allowed_callers)

    def describe(self) -> dict[str, Any]:
        """The effective settings as plain values, for the start-up log."""
        return {
            key: str(value) if isinstance(value, Path) else value
            for key, value in dataclasses.asdict(self).items()
        }


def _caller_from_toml(item: Any, source: str) -> CallerRule:
    if not isinstance(item, dict) or set(item) - {"ae_title", "hosts"} or "ae_title" not in item:
        raise ConfigError(
            f"{source}: each [[allowed_callers]] needs ae_title and optional hosts, got {item!r}"
        )
    hosts = item.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{source}: allowed_callers hosts must be a list of strings, got {hosts!r}")
    return CallerRule(str(item["ae_title"]), tuple(hosts))


def _tls_from_toml(item: Any, source: str) -> TlsConfig:
    allowed = {"cert_file", "key_file", "ca_file", "require_client_cert"}
    if not isinstance(item, dict) or set(item) - allowed or not {"cert_file", "key_file"} <= set(item):
        raise ConfigError(f"{source}: [tls] needs cert_file and key_file (and optional ca_file, "
                          f"require_client_cert), got {item!r}")
    ca = item.get("ca_file")
    return TlsConfig(
        cert_file=Path(item["cert_file"]),
        key_file=Path(item["key_file"]),
        ca_file=Path(ca) if ca is not None else None,
        require_client_cert=bool(item.get("require_client_cert", False)),
    )


def _coerce(name: str, value: Any, source: str) -> Any:
    default = getattr(NodeConfig(), name)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, Path):
        ok = isinstance(value, str)
        value = Path(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{source}: {name} = {value!r} should be a {type(default).__name__}")
    return value


def settings_from_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file into NodeConfig keyword arguments, rejecting unknown keys."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from exc
    known = {f.name for f in dataclasses.fields(NodeConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {unknown}; known: {sorted(known)}")
    settings: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "allowed_callers":
            if not isinstance(value, list):
                raise ConfigError(f"{path}: allowed_callers must be an array of tables [[allowed_callers]]")
            settings[name] = tuple(_caller_from_toml(item, str(path)) for item in value)
        elif name == "tls":
            settings[name] = _tls_from_toml(value, str(path))
        else:
            settings[name] = _coerce(name, value, str(path))
    return settings


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Build the effective config: defaults, then the TOML file at `path`, then `overrides`.

    Raises
    ------
    ConfigError
        Naming the file or setting that is wrong.
    """
    settings: dict[str, Any] = settings_from_toml(path) if path is not None else {}
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return NodeConfig(**settings)
    except TypeError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc


__all__ = [
    "CallerRule",
    "ConfigError",
    "NodeConfig",
    "TlsConfig",
    "check_ae_title",
    "load_config",
    "settings_from_toml",
]
