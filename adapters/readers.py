"""Readers: how rows come out of each style of local system.

Each is small on purpose: a new local system needs a mapping file and at most one
reader like these (docs/adapters.md, "Writing a reader").
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
import httpx
import sqlalchemy as sa
import tenacity
from defusedxml import DefusedXmlException

from adapters.base import AdapterError, SourceError, SourceRow

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_GB_FAMILY = {"gbk", "gb2312", "gb18030", "cp936"}


_CHUNK = 1 << 20


def check_encoding(f: BinaryIO, encoding: str, *, what: str) -> None:
    """Decode a whole export once, keeping nothing, to refuse the two silent failures.

    A UTF-8 file declared GBK often decodes without error into mojibake (GBK accepts most
    byte pairs), so a GB-family declaration is refused when the bytes are valid UTF-8
    with non-ASCII text in them; any other undecodable byte is named with its line.
    Reads in chunks, so a large export is never held twice (decoded and raw).
    """
    enc = encoding.lower().replace("-", "").replace("_", "")
    try:
        declared = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise AdapterError(f"unknown encoding {encoding!r} for {what}") from None
    if enc in _GB_FAMILY and _is_utf8(f):
        raise SourceError(
            f'{what} is declared {encoding} but is UTF-8 (set encoding = "utf-8" in the reader '
            f"options, or export it as {encoding}); nothing was read"
        )
    f.seek(0)
    offset = 0
    while chunk := f.read(_CHUNK):
        try:
            declared.decode(chunk)
        except UnicodeDecodeError as err:
            f.seek(0)
            line = f.read(offset + err.start).count(b"\n") + 1
            hint = ' (it looks like GBK: set encoding = "gbk")' if enc in ("utf8", "utf8sig") else ""
            raise SourceError(
                f"{what} is not valid {encoding} at byte {offset + err.start} (line {line}){hint}; "
                "nothing was read"
            ) from None
        offset += len(chunk)


def _is_utf8(f: BinaryIO) -> bool:
    """True when the file is UTF-8 with some non-ASCII text (plain ASCII is every encoding)."""
    f.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    ascii_only = True
    try:
        while chunk := f.read(_CHUNK):
            ascii_only = ascii_only and chunk.isascii()
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return not ascii_only


class CsvReader:
    """A CSV export (e.g. GBK with Chinese headers), re-read on every pass, streamed."""

    ordered = False

    def __init__(self, path: Path, *, encoding: str = "utf-8", delimiter: str = ","):
        self.path = path
        self.encoding = encoding
        self.delimiter = delimiter

    def rows(self, since: str | None) -> Iterator[SourceRow]:
        what = f"CSV file {self.path}"
        try:
            raw = self.path.open("rb")
        except FileNotFoundError:
            raise SourceError(f"{what} does not exist") from None
        with raw:
            check_encoding(raw, self.encoding, what=what)
            raw.seek(0)
            enc = self.encoding.lower().replace("_", "-")
            text = io.TextIOWrapper(
                raw, encoding="utf-8-sig" if enc in ("utf-8", "utf8") else self.encoding, newline=""
            )
            reader = csv.DictReader(text, delimiter=self.delimiter)
            for values in reader:
                yield SourceRow(f"line {reader.line_num}", {k: v for k, v in values.items() if k is not None})


class XmlReader:
    """An XML export, parsed with defusedxml: entities (bombs) and external references refused."""

    ordered = False

    def __init__(self, path: Path, *, record_element: str):
        self.path = path
        self.record_element = record_element

    def rows(self, since: str | None) -> Iterator[SourceRow]:
        try:
            tree = SafeET.parse(self.path, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        except FileNotFoundError:
            raise SourceError(f"XML file {self.path} does not exist") from None
        except DefusedXmlException as err:
            raise SourceError(
                f"XML file {self.path} refused: {type(err).__name__} ({err}); entity declarations "
                "and external references are never expanded in untrusted files. Export without a DTD; "
                "nothing was read"
            ) from None
        except SafeET.ParseError as err:
            raise SourceError(f"XML file {self.path} is not well-formed: {err}; nothing was read") from None
        root = tree.getroot()
        if root is None:
            raise SourceError(f"XML file {self.path} has no root element; nothing was read")
        for i, element in enumerate(root.iter(self.record_element), start=1):
            yield SourceRow(f"<{self.record_element}> #{i}", _element_values(element))


def _element_values(element: Element) -> dict[str, str | None]:
    values: dict[str, str | None] = dict(element.attrib)
    for child in element:
        values[child.tag] = (child.text or "").strip()
    return values


def _retryable_http(err: BaseException) -> bool:
    if isinstance(err, httpx.HTTPStatusError):
        return err.response.status_code >= 500 or err.response.status_code == 429
    return isinstance(err, httpx.TransportError)  # timeouts, refused connections


class HttpJsonReader:
    """A local system's JSON API with paging: GET url?since=CURSOR&page=N&page_size=M.

    The answer is an object with the rows under ``items_key`` and the next page number (or
    null) under ``next_key``. Timeouts and 5xx answers are retried with backoff; after
    ``attempts`` the pass stops with a SourceError naming the page (nothing is lost: the
    cursor has not moved past it).
    """

    ordered = True

    def __init__(
        self,
        url: str,
        *,
        page_size: int = 100,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        since_param: str = "since",
        items_key: str = "items",
        next_key: str = "next_page",
        headers: Mapping[str, str] | None = None,
    ):
        self.url = url
        self.page_size = page_size
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.since_param = since_param
        self.items_key = items_key
        self.next_key = next_key
        self.headers = dict(headers or {})

    def rows(self, since: str | None) -> Iterator[SourceRow]:
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            page: Any = 1
            while page is not None:
                body = self._page(client, page, since)
                items = body.get(self.items_key)
                if not isinstance(items, list):
                    raise SourceError(f"{self.url} page {page}: no list under {self.items_key!r}")
                for i, item in enumerate(items, start=1):
                    if not isinstance(item, dict):
                        raise SourceError(f"{self.url} page {page} item {i} is not an object")
                    yield SourceRow(
                        f"page {page} item {i}", {k: None if v is None else str(v) for k, v in item.items()}
                    )
                page = body.get(self.next_key)

    def _page(self, client: httpx.Client, page: Any, since: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"page": page, "page_size": self.page_size}
        if since is not None:
            params[self.since_param] = since

        def fetch() -> dict[str, Any]:
            response = client.get(self.url, params=params)
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, dict):
                raise SourceError(f"{self.url} page {page}: the answer is not a JSON object")
            return body

        try:
            return _retry(fetch, _retryable_http, self.attempts, self.backoff, f"{self.url} page {page}")
        except httpx.HTTPStatusError as err:
            raise SourceError(
                f"{self.url} page {page}: HTTP {err.response.status_code} after {self.attempts} attempt(s); "
                "the cursor stays before this page"
            ) from None
        except httpx.TransportError as err:
            raise SourceError(
                f"{self.url} page {page}: {type(err).__name__} after {self.attempts} attempt(s) "
                f"(timeout {self.timeout} s); the cursor stays before this page"
            ) from None
        except ValueError:
            raise SourceError(f"{self.url} page {page}: the answer is not JSON") from None


def _retry(
    call: Callable[[], _T],
    retryable: Callable[[BaseException], bool],
    attempts: int,
    backoff: float,
    what: str,
) -> _T:
    def note(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed (%s); retrying", what, state.attempt_number, type(err).__name__)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=backoff, max=30),
        retry=tenacity.retry_if_exception(retryable),
        before_sleep=note,
        reraise=True,
    )
    return retrying(call)


def _locked(err: BaseException) -> bool:
    return isinstance(err, sa.exc.OperationalError) and "locked" in str(err.orig).lower()


def reflect_table(
    engine: sa.Engine,
    name: str,
    schema: str | None,
    *,
    needs: Sequence[str],
    what: str,
    error: type[AdapterError] = SourceError,
) -> sa.Table:
    """A table of the local database, read from the database itself (readers and sinks);
    ``error`` names it when it is missing or lacks one of the columns ``needs``."""
    try:
        table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=engine)
    except sa.exc.NoSuchTableError:
        raise error(f"table {name!r} does not exist in the local database") from None
    missing = [c for c in needs if c not in table.c]
    if missing:
        raise error(f"table {name!r} lacks the {what}(s) {missing}; its columns: {list(table.c.keys())}")
    return table


class SqlReader:
    """A table in the local system's own database (keyset paging on the cursor column)."""

    ordered = True

    def __init__(
        self,
        url: str,
        *,
        table: str,
        schema: str | None = None,
        cursor_column: str,
        cursor_type: str = "int",
        page_size: int = 1000,
        lock_timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ):
        self.engine = make_engine(url, lock_timeout)
        self.table_name = table
        self.schema = schema
        self.cursor_column = cursor_column
        self.cursor_type = cursor_type
        self.page_size = page_size
        self.attempts = attempts
        self.backoff = backoff
        self._table: sa.Table | None = None

    @property
    def table(self) -> sa.Table:
        if self._table is None:
            self._table = reflect_table(
                self.engine, self.table_name, self.schema, needs=[self.cursor_column], what="cursor column"
            )
        return self._table

    def rows(self, since: str | None) -> Iterator[SourceRow]:
        try:
            table = _retry(
                lambda: self.table, _transient, self.attempts, self.backoff, f"table {self.table_name}"
            )
        except sa.exc.DBAPIError as err:
            raise self._failure(err) from None
        col = table.c[self.cursor_column]
        last: Any = None if since is None else (int(since) if self.cursor_type == "int" else since)
        while True:
            query = sa.select(table).order_by(col).limit(self.page_size)
            if last is not None:
                query = query.where(col > last)

            def fetch(query: sa.Select[Any] = query) -> list[sa.Row[Any]]:
                with self.engine.connect() as conn:
                    return list(conn.execute(query))

            try:
                page = _retry(fetch, _transient, self.attempts, self.backoff, f"table {self.table_name}")
            except sa.exc.DBAPIError as err:
                raise self._failure(err) from None
            for row in page:
                values = {k: None if v is None else str(v) for k, v in row._mapping.items()}
                yield SourceRow(f"row {self.cursor_column}={values[self.cursor_column]}", values)
            if len(page) < self.page_size:
                return
            last = page[-1]._mapping[self.cursor_column]

    def _failure(self, err: sa.exc.DBAPIError) -> SourceError:
        if _locked(err):
            what = f"is locked by another writer (still after {self.attempts} attempts)"
        else:
            # The driver's first line only: never the URL (it may hold a password) or the SQL.
            what = f"could not be read: {type(err.orig).__name__}: {db_message(err)}"
        return SourceError(
            f"table {self.table_name!r} {what}; the cursor stays where it was, the next pass reads it"
        )


def db_message(err: sa.exc.DBAPIError) -> str:
    return (str(err.orig).strip().splitlines() or [""])[0][:200]


def _transient(err: BaseException) -> bool:
    """A lock, or a database that is restarting or unreachable: worth a few more tries."""
    return isinstance(err, sa.exc.OperationalError)


def make_engine(url: str, lock_timeout: float) -> sa.Engine:
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": lock_timeout})
    return sa.create_engine(url, pool_pre_ping=True)
