"""Adapter configuration files (TOML): who publishes, where from, through which mapping.

Paths in the file are relative to the file itself. docs/adapters.md lists every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import AdapterError

READER_TYPES = ("csv", "http", "xml", "sql")
SINK_TYPES = ("sql",)
_TOP = {"participant", "mapping", "state_dir", "batch_size", "poll_interval", "gateway", "reader", "sink",
        "reconcile"}  # fmt: skip
_GATEWAY = {"address", "key", "keyid", "federation", "tls_ca", "tls_cert", "tls_key", "tls_server_name",
            "timeout", "retry_seconds"}  # fmt: skip


@dataclass(frozen=True)
class GatewayConfig:
    address: str = "127.0.0.1:7443"
    key: Path | None = None
    keyid: str = ""
    federation: Path | None = None  # pins the gateway's keys (else fetched once from the registry)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    timeout: float = 30.0
    # How long one batch keeps being retried while the gateway is unreachable.
    retry_seconds: float = 300.0

    def client_options(self) -> dict[str, Any]:
        """The SDK client's connection settings (GatewayClient and ReconcileClient alike):
        the gateway keys pinned from ``federation`` if given, TLS, the timeout."""
        from gateway.tls.transport import ClientTls

        pinned = None
        if self.federation is not None:
            from gateway.registry.federation import load_federation

            federation = load_federation(self.federation)
            pinned = {k.keyid: k.public_key for k in federation.keys_of(federation.gateway_code)}
        tls = None
        if self.tls_ca is not None:
            tls = ClientTls(
                ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key, server_name=self.tls_server_name
            )
        return {"gateway_keys": pinned, "tls": tls, "timeout": self.timeout}

    def load_signer(self, config_path: Path) -> Any:
        """The participant's private key (``key`` + ``keyid``); AdapterError naming what is wrong."""
        from gateway.crypto.suites import PrivateKey

        if self.key is None:
            raise AdapterError(f"{config_path}: [gateway] key (the participant's private key) is required")
        if not self.keyid:
            raise AdapterError(f"{config_path}: [gateway] keyid is required with key")
        try:
            return PrivateKey.load(self.key, self.keyid)
        except (OSError, ValueError) as err:
            raise AdapterError(f"cannot load the signing key {self.key}: {type(err).__name__}") from None


@dataclass(frozen=True)
class AdapterConfig:
    path: Path
    participant: str
    mapping: Path
    state_dir: Path
    batch_size: int
    poll_interval: float
    gateway: GatewayConfig
    reader: dict[str, Any]
    sink: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _path(base: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise AdapterError(f"{what} must be a path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def load_config(path: Path) -> AdapterConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"adapter config {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AdapterError(f"adapter config {path} is not valid UTF-8 TOML: {err}") from None
    where = f"adapter config {path}"
    base = path.resolve().parent
    unknown = set(data) - _TOP
    if unknown:
        raise AdapterError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_TOP)}")
    participant = data.get("participant")
    if not isinstance(participant, str) or not participant:
        raise AdapterError(f'{where}: participant (e.g. "CN-JS") is required')
    gw = data.get("gateway", {})
    bad = set(gw) - _GATEWAY
    if bad:
        raise AdapterError(f"{where}: unknown [gateway] key(s) {sorted(bad)}; known: {sorted(_GATEWAY)}")
    gateway = GatewayConfig(
        address=str(gw.get("address", "127.0.0.1:7443")),
        key=_path(base, gw["key"], "[gateway] key") if "key" in gw else None,
        keyid=str(gw.get("keyid", "")),
        federation=_path(base, gw["federation"], "[gateway] federation") if "federation" in gw else None,
        tls_ca=_path(base, gw["tls_ca"], "[gateway] tls_ca") if "tls_ca" in gw else None,
        tls_cert=_path(base, gw["tls_cert"], "[gateway] tls_cert") if "tls_cert" in gw else None,
        tls_key=_path(base, gw["tls_key"], "[gateway] tls_key") if "tls_key" in gw else None,
        tls_server_name=gw.get("tls_server_name"),
        timeout=float(gw.get("timeout", 30.0)),
        retry_seconds=float(gw.get("retry_seconds", 300.0)),
    )
    reader = dict(data.get("reader", {}))
    if reader.get("type") not in READER_TYPES:
        raise AdapterError(
            f"{where}: [reader] type must be one of {READER_TYPES}, got {reader.get('type')!r}"
        )
    for key in ("path",):
        if key in reader:
            reader[key] = _path(base, reader[key], f"[reader] {key}")
    sink = data.get("sink")
    if sink is not None:
        sink = dict(sink)
        if sink.get("type") not in SINK_TYPES:
            raise AdapterError(f"{where}: [sink] type must be one of {SINK_TYPES}, got {sink.get('type')!r}")
        if "mapping" in sink:
            sink["mapping"] = _path(base, sink["mapping"], "[sink] mapping")
    batch_size = int(data.get("batch_size", 500))
    if not 1 <= batch_size <= 1000:
        raise AdapterError(
            f"{where}: batch_size must be 1..1000 (the gateway's batch limit), got {batch_size}"
        )
    return AdapterConfig(
        path=path,
        participant=participant,
        mapping=_path(base, data.get("mapping"), "mapping"),
        state_dir=_path(base, data.get("state_dir", "state"), "state_dir"),
        batch_size=batch_size,
        poll_interval=float(data.get("poll_interval", 60.0)),
        gateway=gateway,
        reader=reader,
        sink=sink,
        # Checked by adapters/nightly.py, which owns the nightly reconciliation.
        extra={"reconcile": data["reconcile"]} if "reconcile" in data else {},
    )
