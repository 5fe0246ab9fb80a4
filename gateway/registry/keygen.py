"""Making participant keys and demo federations.

Private keys are written 0600 into a directory the operator names, and never into a
git work tree unless git ignores the path: a key committed once is compromised forever,
whatever is done to the history afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from gateway.crypto.suites import PrivateKey, Suite
from gateway.registry.federation import FEDERATION_FILE, Federation, jurisdiction_tables, load_federation

log = logging.getLogger(__name__)

DEMO_VALIDITY = timedelta(days=365)
# Key of the extra ECDSA P-256 key in write_demo_federation's result; '#' cannot occur
# in a participant code, so it never collides with one.
DEMO_ECDSA_OWNER = "CN-GD"
DEMO_ECDSA_ENTRY = "CN-GD#ecdsa"
# The demo participant whose only key is SM2 (suite sm2-sm3): Tianjin, whose work plan
# names commercial-cryptography product certification among its priorities. It has no
# Ed25519 key, as a province signing in an SM2 hardware module would not.
DEMO_SM2_OWNER = "CN-TJ"


def _file_stem(keyid: str) -> str:
    return keyid.replace("/", "_")


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes), non-ASCII kept readable.
    return json.dumps(value, ensure_ascii=False)


def _toml_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole_seconds(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(microsecond=0)


def key_block(
    *,
    keyid: str,
    owner: str,
    suite: Suite,
    public_key: str,
    not_before: datetime,
    not_after: datetime | None,
) -> str:
    """One ``[[keys]]`` table as federation.toml text."""
    lines = [
        "[[keys]]",
        f"keyid = {_toml_str(keyid)}",
        f"owner = {_toml_str(owner)}",
        f"suite = {_toml_str(suite.value)}",
        f"public_key = {_toml_str(public_key)}",
        f"not_before = {_toml_time(not_before)}",
    ]
    if not_after is not None:
        lines.append(f"not_after = {_toml_time(not_after)}")
    lines.append("revoked = false")
    return "\n".join(lines) + "\n"


def _ensure_not_committable(directory: Path) -> None:
    """Refuse ``directory`` if it lies in a git work tree and git does not ignore it.

    The directory itself must be ignored, not merely the key's file name (the repo's
    ``*.key.pem`` rule): a rename or a changed pattern must not make a key committable.
    Without git on PATH the check cannot be made; it is skipped with a warning rather
    than blocking key generation on machines that have no git at all.
    """
    git = shutil.which("git")
    if git is None:
        log.warning("git not found: cannot check that %s is outside any git work tree", directory)
        return
    probe = directory
    while not probe.exists():
        probe = probe.parent
    inside = subprocess.run(
        [git, "rev-parse", "--is-inside-work-tree"],
        cwd=probe,
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return
    # Exit 0: ignored. 1: not ignored. Anything else (128: error) is treated as not
    # ignored, because the safe failure is refusing to write the key.
    ignored = subprocess.run(
        # The trailing slash lets directory patterns ("keys/private/") match a
        # directory that does not exist yet.
        [git, "check-ignore", "-q", "--", f"{directory.resolve()}/"],
        cwd=probe,
        capture_output=True,
        check=False,
    )
    if ignored.returncode != 0:
        raise PermissionError(
            f"refusing to write private keys to {directory}: it is inside a git work tree and not "
            "git-ignored; choose a directory outside the repository (or a git-ignored one such as "
            "keys/private/)"
        )


def _make_private_dir(private_dir: Path) -> None:
    private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(private_dir.stat().st_mode)
    if mode & 0o077:
        log.warning("private key directory %s has mode %o; 700 is recommended", private_dir, mode)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_participant_key(
    *,
    federation_dir: Path,
    owner: str,
    private_dir: Path,
    suite: Suite = Suite.ED25519,
    keyid: str | None = None,
    not_before: datetime,
    not_after: datetime | None,
) -> tuple[Path, Path]:
    """Make a key for ``owner`` and register its public half in the federation.

    Writes the private key to ``private_dir/<keyid with / as _>.key.pem`` (0600; the
    directory is created 0700), the public key to ``federation_dir/public/`` and appends
    a ``[[keys]]`` table to federation.toml, leaving the rest of the file untouched.
    The default keyid is ``<owner>/<yyyy-mm of not_before>``, with -2, -3... if taken.
    If the result does not load, every file is put back as it was. Returns
    (private_path, public_path).
    """
    federation_dir = Path(federation_dir)
    private_dir = Path(private_dir)
    if not_before.tzinfo is None or (not_after is not None and not_after.tzinfo is None):
        raise ValueError("not_before and not_after must be timezone-aware")
    not_before = _whole_seconds(not_before)
    not_after = _whole_seconds(not_after) if not_after is not None else None
    federation = load_federation(federation_dir)
    if federation.participant(owner) is None:
        raise ValueError(f"{owner} is not a participant in {federation_dir / FEDERATION_FILE}")

    public_dir = federation_dir / "public"
    if keyid is None:
        base = f"{owner}/{not_before:%Y-%m}"
        keyid = base
        n = 1
        while keyid in federation.keys or (public_dir / f"{_file_stem(keyid)}.pem").exists():
            n += 1
            keyid = f"{base}-{n}"
    elif keyid in federation.keys:
        raise ValueError(f"keyid {keyid} is already in {federation_dir / FEDERATION_FILE}")

    private_path = private_dir / f"{_file_stem(keyid)}.key.pem"
    public_path = public_dir / f"{_file_stem(keyid)}.pem"
    for existing in (private_path, public_path):
        if existing.exists():
            raise FileExistsError(f"refusing to overwrite {existing}")
    _ensure_not_committable(private_dir)

    key = PrivateKey.generate(suite, keyid)
    block = key_block(
        keyid=keyid,
        owner=owner,
        suite=suite,
        public_key=public_path.relative_to(federation_dir).as_posix(),
        not_before=not_before,
        not_after=not_after,
    )
    toml_path = federation_dir / FEDERATION_FILE
    original = toml_path.read_bytes()

    _make_private_dir(private_dir)
    public_dir.mkdir(parents=True, exist_ok=True)
    key.save(private_path)
    try:
        _write_new(public_path, key.public_key().pem().encode("ascii"))
        separator = b"" if original.endswith(b"\n") or not original else b"\n"
        with toml_path.open("ab") as f:
            f.write(separator + b"\n" + block.encode("utf-8"))
        load_federation(federation_dir)
    except BaseException:
        toml_path.write_bytes(original)
        public_path.unlink(missing_ok=True)
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


# --- demo federations ------------------------------------------------------------------


def _table(header: str, fields: list[tuple[str, str | int | date | tuple[str, ...]]]) -> str:
    lines = [header]
    for name, value in fields:
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, date):
            # A bare TOML date: agreements run in whole days (a datetime never gets here).
            text = value.isoformat()
        elif isinstance(value, str):
            text = _toml_str(value)
        else:
            text = "[" + ", ".join(_toml_str(v) for v in value) + "]"
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"


def _federation_text(federation: Federation) -> list[str]:
    """[federation], [[alliances]], [[participants]], [[jurisdictions]], [[agreements]] of a federation.

    An alliance-wide agreement is written with its alliance; any other with its parties
    listed one by one (an "alliance:<code>" reference in the template was expanded when
    it loaded, and listing the members binds the same participants).
    """
    parts = [
        _table(
            "[federation]",
            [
                ("name", federation.name),
                ("gateway", federation.gateway_code),
                ("freshness_window_seconds", int(federation.freshness_window.total_seconds())),
            ],
        )
    ]
    for a in federation.alliances.values():
        parts.append(
            _table(
                "[[alliances]]",
                [
                    ("code", a.code),
                    ("name", a.name),
                    ("name_en", a.name_en),
                    ("secretariat", a.secretariat),
                    ("members", a.members),
                ],
            )
        )
    for p in federation.participants.values():
        parts.append(
            _table(
                "[[participants]]",
                [("code", p.code), ("name", p.name), ("name_en", p.name_en), ("role", p.role.value)],
            )
        )
    parts += jurisdiction_tables(federation.participants)
    for ag in federation.agreements.values():
        fields: list[tuple[str, str | int | date | tuple[str, ...]]] = [("id", ag.id), ("name", ag.name)]
        if ag.alliance is not None:
            fields.append(("alliance", ag.alliance))
        else:
            fields.append(("parties", tuple(sorted(ag.parties))))
        fields.append(("kinds", tuple(sorted(ag.kinds))))
        if ag.schemes:
            fields.append(("schemes", tuple(sorted(ag.schemes))))
        if ag.fields:
            fields.append(("fields", tuple(sorted(ag.fields))))
        fields.append(("effective_from", ag.effective_from))
        if ag.effective_until is not None:
            fields.append(("effective_until", ag.effective_until))
        parts.append(_table("[[agreements]]", fields))
    return parts


def write_demo_federation(*, template_dir: Path, dest: Path, now: datetime) -> dict[str, Path]:
    """A throw-away federation with fresh keys, for ``mrx demo`` and tests.

    Copies [federation], [[alliances]], [[participants]] and [[agreements]] from the
    federation in ``template_dir`` (which must load; its keys are not copied), gives
    every participant a fresh key valid from now - 1 day to now + 1 year: Ed25519, except
    CN-TJ's, which is SM2 (sm2-sm3), and CN-GD also an ECDSA P-256 key, so that every
    suite is exercised. Public keys go to ``dest/public``, private keys (0600) to
    ``dest/private``.

    Returns {participant code: its private key path}, plus the entry ``"CN-GD#ecdsa"``
    for CN-GD's ECDSA key. The key ids are ``<code>/demo`` and ``CN-GD/demo-p256``.
    """
    template_dir = Path(template_dir)
    dest = Path(dest)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # Loading (not just parsing) the template means a broken template is reported
    # against its own file, not against the copy.
    template = load_federation(template_dir)
    toml_path = dest / FEDERATION_FILE
    if toml_path.exists():
        raise FileExistsError(f"refusing to overwrite {toml_path}")

    not_before = _whole_seconds(now - timedelta(days=1))
    not_after = _whole_seconds(now + DEMO_VALIDITY)
    private_dir = dest / "private"
    public_dir = dest / "public"
    _ensure_not_committable(private_dir)
    _make_private_dir(private_dir)
    public_dir.mkdir(parents=True, exist_ok=True)

    parts = [
        "# Demo federation generated by gateway.registry.keygen.write_demo_federation.\n"
        f"# Keys valid {_toml_time(not_before)} .. {_toml_time(not_after)}; private keys in private/.\n",
        *_federation_text(template),
    ]
    codes = list(template.participants)

    wanted = [(code, Suite.SM2_SM3 if code == DEMO_SM2_OWNER else Suite.ED25519, code) for code in codes]
    if DEMO_ECDSA_OWNER in codes:
        wanted.append((DEMO_ECDSA_OWNER, Suite.ECDSA_P256_SHA256, DEMO_ECDSA_ENTRY))
    result: dict[str, Path] = {}
    for owner, suite, entry in wanted:
        keyid = demo_keyid(entry)
        key = PrivateKey.generate(suite, keyid)
        stem = _file_stem(keyid)
        private_path = private_dir / f"{stem}.key.pem"
        key.save(private_path)
        _write_new(public_dir / f"{stem}.pem", key.public_key().pem().encode("ascii"))
        parts.append(
            key_block(
                keyid=keyid,
                owner=owner,
                suite=suite,
                public_key=f"public/{stem}.pem",
                not_before=not_before,
                not_after=not_after,
            )
        )
        result[entry] = private_path

    toml_path.write_text("\n".join(parts), encoding="utf-8")
    load_federation(dest)
    return result


def demo_keyid(entry: str) -> str:
    """The key id ``write_demo_federation`` gave the key it returned under ``entry``."""
    if entry == DEMO_ECDSA_ENTRY:
        return f"{DEMO_ECDSA_OWNER}/demo-p256"
    return f"{entry}/demo"


def load_demo_signers(paths: Mapping[str, Path]) -> dict[str, PrivateKey]:
    """Load the keys ``write_demo_federation`` returned, each under its key id."""
    return {entry: PrivateKey.load(path, demo_keyid(entry)) for entry, path in paths.items()}
