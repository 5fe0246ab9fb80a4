"""Log set-up for the gateway: text or one JSON object per line, each with the request id.

The request id lives in a context variable set by the RPC interceptor, so every line
logged while serving a call (in the loop or in the pool, which runs with the call's
context) carries it without any code passing it along. Only the message is logged: no
request payloads, keys or database passwords are put into log records by the gateway.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("mrx_request_id", default="")
# What a caller may choose as its own id: short, printable, no separators a log parser
# or a terminal would act on. Anything else is replaced by a generated id.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def request_id_from(offered: str | None) -> str:
    """The caller's ``x-request-id`` if it is sane, else a new one."""
    if offered is not None and _SANE_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex[:16]


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class _Json(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # RFC 3339 in UTC with milliseconds: sortable, and what log stores parse unaided.
        at = datetime.fromtimestamp(record.created, UTC)
        return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_formatter(process_name: str | None = None) -> logging.Formatter:
    static = {"process": process_name} if process_name else None
    return _Json(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        timestamp=False,
        static_fields=static,
    )


def configure(level: int, fmt: str = "text", *, process_name: str | None = None) -> None:
    """Replace the root handlers with one stderr handler in ``fmt`` (text or json)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(json_formatter(process_name))
    else:
        prefix = f"{process_name} " if process_name else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
