"""`mrx serve` settings: one TOML file, environment variables over it, flags over both.

Every setting has one dotted key (``serve.workers``, ``serve.tls.cert``); its environment
variable is MRX_ followed by the key in capitals with dots as underscores
(MRX_SERVE_WORKERS, MRX_SERVE_TLS_CERT); its flag is listed in SETTINGS. Precedence, from
strongest: flag, environment variable, file, then the two older variables
MRX_DATABASE_URL and MRX_FEDERATION_DIR, then the built-in default.

Validation happens before anything starts, and every error names where the bad value
came from (``FILE:serve.workers``, ``MRX_SERVE_WORKERS`` or ``--workers``) and why.
Unknown keys and unknown MRX_SERVE_* variables are refused: a misspelt setting that is
silently ignored is a setting that is not in force. Relative paths in the file are taken
relative to the file's directory, so a deployment directory can be moved as a whole.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.store.engine import display_url

ENV_PREFIX = "MRX_"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigFileError(ValueError):
    """A setting is missing or wrong; the message names where it came from and why."""


@dataclass(frozen=True)
class Setting:
    key: str  # dotted, e.g. "serve.tls.cert"
    kind: str  # "str", "int", "float", "path", "choice"
    default: Any = None
    flag: str = ""
    required: bool = False
    secret: bool = False  # shown masked (a database URL's password)
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    must_exist: bool = False  # a path that must exist when the gateway starts
    help: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace(".", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting("serve.address", "str", "127.0.0.1:7443", "--address", help="host:port the gRPC port listens on"),
    Setting(
        "serve.database",
        "str",
        None,
        "--database",
        secret=True,
        help="SQLAlchemy URL or SQLite path (default: $MRX_DATABASE_URL, else ~/.local/share/mrx/mrx.db)",
    ),
    Setting(
        "serve.federation",
        "path",
        None,
        "--federation",
        must_exist=True,
        help="federation directory (default: $MRX_FEDERATION_DIR, else keys/)",
    ),
    Setting(
        "serve.gateway_key",
        "path",
        None,
        "--gateway-key",
        required=True,
        must_exist=True,
        help="the gateway's private key (PEM)",
    ),
    Setting(
        "serve.gateway_keyid",
        "str",
        None,
        "--gateway-keyid",
        required=True,
        help="its key id in the federation, e.g. MRX-GW/2026-01",
    ),
    Setting("serve.workers", "int", 8, "--workers", minimum=1, maximum=256, help="threads for reads"),
    Setting("serve.fronts", "int", 1, "--fronts", minimum=1, maximum=64, help="front processes"),
    Setting(
        "serve.checkpoint_interval",
        "float",
        10.0,
        "--checkpoint-interval",
        minimum=0.05,
        maximum=3600,
        help="seconds between signed checkpoints while the log grows",
    ),
    Setting(
        "serve.commit_delay",
        "float",
        1.0,
        "--commit-delay",
        minimum=0,
        maximum=1000,
        help="milliseconds the writer waits for more submissions to share a commit",
    ),
    Setting("serve.tls.cert", "path", None, "--tls-cert", must_exist=True, help="server certificate chain"),
    Setting("serve.tls.key", "path", None, "--tls-key", must_exist=True, help="server TLS private key"),
    Setting(
        "serve.tls.client_ca", "path", None, "--tls-client-ca", must_exist=True, help="client CA (mutual TLS)"
    ),
    Setting(
        "serve.metrics.port",
        "int",
        None,
        "--metrics-port",
        minimum=0,
        maximum=65535,
        help="port for Prometheus /metrics (0: any free port; unset: no metrics)",
    ),
    Setting(
        "serve.metrics.host", "str", "127.0.0.1", "--metrics-host", help="address the metrics port binds to"
    ),
    Setting(
        "serve.jobs.enabled",
        "choice",
        "on",
        "--jobs",
        choices=("on", "off"),
        help="run the scheduled jobs in this replica (off: another replica must; docs/jobs.md)",
    ),
    Setting(
        "serve.jobs.self_audit_at",
        "str",
        "03:00",
        "--self-audit-at",
        help="daily self-audit time, HH:MM Asia/Shanghai",
    ),
    Setting(
        "serve.jobs.schedules",
        "str",
        "",
        "--job-schedules",
        help="schedules 'JOB=CRON; ...', Asia/Shanghai (self-audit, reconciliation-check, prune-job-runs)",
    ),
    Setting(
        "serve.jobs.lease",
        "float",
        60.0,
        "--job-lease",
        minimum=0,
        maximum=86400,
        help="seconds a job's claim lasts unless renewed",
    ),
    Setting(
        "serve.jobs.grace",
        "float",
        3600.0,
        "--job-grace",
        minimum=0,
        maximum=7 * 86400,
        help="seconds after its time a missed run still runs, once",
    ),
    Setting(
        "serve.reconcile.lease",
        "float",
        300.0,
        "--reconcile-lease",
        minimum=1,
        maximum=86400,
        help="seconds a reconciliation run lives without a call; then it is abandoned",
    ),
    Setting(
        "serve.log.format", "choice", "text", "--log-format", choices=LOG_FORMATS, help="log line format"
    ),
    Setting(
        "serve.log.level", "choice", "warning", "--log-level", choices=LOG_LEVELS, help="lowest level logged"
    ),
)
BY_KEY = {s.key: s for s in SETTINGS}
# The older variables, kept as defaults below the new scheme (deployments set them).
LEGACY_ENV = {"serve.database": "MRX_DATABASE_URL", "serve.federation": "MRX_FEDERATION_DIR"}


@dataclass(frozen=True)
class Value:
    value: Any
    source: str  # "default", "FILE:key", "MRX_...", "--flag"


@dataclass(frozen=True)
class ServeConfig:
    values: Mapping[str, Value] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def render(self) -> str:
        """The effective configuration as TOML, secrets masked, each value's source noted."""
        lines: list[str] = []
        section = None
        for setting in SETTINGS:
            head, name = setting.key.rsplit(".", 1)
            if head != section:
                lines.append(("\n" if lines else "") + f"[{head}]")
                section = head
            v = self.values[setting.key]
            shown = _mask(setting, v.value)
            if shown is None:
                lines.append(f"# {name} is not set ({v.source})")
            else:
                lines.append(f"{name} = {_toml(shown)}  # {v.source}")
        return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _mask(setting: Setting, value: Any) -> Any:
    if value is None or not setting.secret:
        return value
    text = str(value)
    if "://" not in text:
        return text  # a bare SQLite path: no password in it
    try:
        return display_url(text)
    except Exception:  # unparseable: show nothing of it rather than risk a password
        return "(unparseable URL, not shown)"


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in BY_KEY:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _unknown(key: str, where: str) -> ConfigFileError:
    near = difflib.get_close_matches(key, list(BY_KEY), n=1)
    hint = f" (did you mean {near[0]}?)" if near else f"; known keys: {', '.join(BY_KEY)}"
    return ConfigFileError(f"{where}: unknown setting {key}{hint}")


def _convert(setting: Setting, raw: Any, where: str, base: Path | None) -> Any:
    """``raw`` from TOML (typed) or from the environment or a flag (text)."""
    kind = setting.kind
    try:
        if kind == "int":
            if isinstance(raw, bool | float) or not isinstance(raw, int | str):
                raise ValueError
            value: Any = int(raw)
        elif kind == "float":
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        elif isinstance(raw, str):
            value = raw
        else:
            raise ValueError
    except ValueError:
        expected = {"int": "a whole number", "float": "a number"}.get(kind, "a string")
        raise ConfigFileError(f"{where}: must be {expected}, not {raw!r}") from None
    if kind in ("int", "float"):
        if setting.minimum is not None and value < setting.minimum:
            raise ConfigFileError(f"{where}: must be at least {setting.minimum:g}, not {value}")
        if setting.maximum is not None and value > setting.maximum:
            raise ConfigFileError(f"{where}: must be at most {setting.maximum:g}, not {value}")
    if kind == "choice" and value not in setting.choices:
        raise ConfigFileError(f"{where}: must be one of {', '.join(setting.choices)}, not {value!r}")
    if kind == "str" and not value.strip():
        raise ConfigFileError(f"{where}: must not be empty")
    if setting.key == "serve.database" and "://" not in value and base is not None:
        # A bare SQLite path is a path like the others: relative to the file's directory.
        path = Path(value).expanduser()
        value = str(path if path.is_absolute() else base / path)
    if kind == "path":
        if not value.strip():
            raise ConfigFileError(f"{where}: must not be empty")
        path = Path(value).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        value = path
    return value


def load_serve_config(
    file: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    default_federation: Callable[[], Path] | None = None,
    check_paths: bool = True,
) -> ServeConfig:
    """Merge and validate; raises ConfigFileError naming the first bad key.

    ``flags``: values by dotted key from the command line (None: not given).
    """
    env = os.environ if env is None else env
    values: dict[str, Value] = {}
    for setting in SETTINGS:
        values[setting.key] = Value(setting.default, "default")
    for key, legacy in LEGACY_ENV.items():
        if env.get(legacy):
            setting = BY_KEY[key]
            values[key] = Value(_convert(setting, env[legacy], legacy, None), legacy)
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigFileError(f"{file}: cannot read: {exc.strerror}") from None
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"{file}: not valid TOML: {exc}") from None
        base = file.resolve().parent
        for key, raw in _flatten(table).items():
            where = f"{file}:{key}"
            if key not in BY_KEY:
                raise _unknown(key, str(file))
            values[key] = Value(_convert(BY_KEY[key], raw, where, base), where)
    known_env = {s.env: s for s in SETTINGS}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX + "SERVE_"):
            continue
        found = known_env.get(name)
        if found is None:
            near = difflib.get_close_matches(name, list(known_env), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigFileError(f"{name}: unknown setting variable{hint}")
        values[found.key] = Value(_convert(found, env[name], name, Path.cwd()), name)
    for key, raw in (flags or {}).items():
        if raw is None:
            continue
        setting = BY_KEY[key]
        values[key] = Value(_convert(setting, str(raw), setting.flag, Path.cwd()), setting.flag)
    if values["serve.federation"].value is None and default_federation is not None:
        values["serve.federation"] = Value(default_federation(), "default")
    _check(values, file, check_paths)
    return ServeConfig(values)


def _check(values: dict[str, Value], file: Path | None, check_paths: bool) -> None:
    for setting in SETTINGS:
        v = values[setting.key]
        if setting.required and v.value is None:
            where = f"{file}: " if file is not None else ""
            raise ConfigFileError(
                f"{where}{setting.key} is required: set it in the file, {setting.env} or {setting.flag}"
            )
        if check_paths and setting.must_exist and isinstance(v.value, Path) and not v.value.exists():
            raise ConfigFileError(f"{v.source}: {v.value} does not exist")
    cert, key, ca = (values[f"serve.tls.{k}"] for k in ("cert", "key", "client_ca"))

    def names(given: Value, *keys: str) -> list[str]:
        # Said in the caller's terms: flags for a command line, keys for a file.
        return [BY_KEY[k].flag if given.source.startswith("--") else k for k in keys]

    if (cert.value is None) != (key.value is None):
        given = cert if cert.value is not None else key
        c, k = names(given, "serve.tls.cert", "serve.tls.key")
        raise ConfigFileError(f"{given.source}: {c} and {k} go together")
    if ca.value is not None and cert.value is None:
        a, c, k = names(ca, "serve.tls.client_ca", "serve.tls.cert", "serve.tls.key")
        raise ConfigFileError(f"{ca.source}: {a} needs {c} and {k} (the server's own certificate)")
    address = values["serve.address"]
    host, sep, port = str(address.value).rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigFileError(f"{address.source}: must be host:port, not {address.value!r}")
    metrics, listen = values["serve.metrics.port"].value, int(port)
    if metrics is not None and metrics != 0 and metrics == listen:
        raise ConfigFileError(
            f"{values['serve.metrics.port'].source}: the metrics port must differ from the gRPC port {listen}"
        )
