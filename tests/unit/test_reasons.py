"""proto/mrx/v1/errors.proto lists every reason the gateway can send; the google.rpc
protos a client needs to decode refusals are shipped with the contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_tools import protoc

from gateway.domain import errors
from gateway.pb import errors_pb2

ROOT = Path(__file__).resolve().parents[2]
REASON = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")
ERROR_CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, errors.MrxError)
}


def _reasons_sent() -> dict[str, str]:
    """Every reason string the gateway's code can put in an ErrorInfo, with where."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if "pb" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Module constants such as OUTSIDE_JURISDICTION = "OUTSIDE_JURISDICTION".
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name) and isinstance(node.value.value, str)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for kw in node.keywords:
                if kw.arg != "reason":
                    continue
                # A certificate's own status-change reason shares the keyword; refusal
                # reasons are UPPER_SNAKE_CASE constants (or a choice between two).
                for value in ast.walk(kw.value):
                    text = value.value if isinstance(value, ast.Constant) else None
                    if isinstance(value, ast.Name):
                        text = constants.get(value.id)
                    if isinstance(text, str) and REASON.fullmatch(text):
                        found.setdefault(text, where)
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name in ERROR_CLASSES and not any(kw.arg == "reason" for kw in node.keywords):
                found.setdefault(ERROR_CLASSES[name].default_reason, where + " (default reason)")
    return found


def test_every_reason_the_gateway_sends_is_listed():
    listed = set(errors_pb2.ErrorReason.Value.keys())
    missing = {r: where for r, where in _reasons_sent().items() if r not in listed}
    assert not missing, f"add these to proto/mrx/v1/errors.proto: {missing}"


def test_every_listed_reason_is_sent_somewhere():
    sent = set(_reasons_sent())
    unused = set(errors_pb2.ErrorReason.Value.keys()) - sent - {"UNSPECIFIED"}
    assert not unused, f"errors.proto lists reasons nothing sends: {sorted(unused)}"


def test_the_shipped_google_rpc_protos_match_the_runtime(tmp_path):
    out = tmp_path / "set.pb"
    rc = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"-I{Path(protoc.__file__).parent / '_proto'}",
         f"--descriptor_set_out={out}", "google/rpc/status.proto", "google/rpc/error_details.proto"]
    )  # fmt: skip
    assert rc == 0
    shipped = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    for module in (status_pb2, error_details_pb2):
        runtime = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(runtime)
        ours = shipped[runtime.name]
        fields = {(m.name, f.name, f.number, f.type) for m in runtime.message_type for f in m.field}
        assert fields == {(m.name, f.name, f.number, f.type) for m in ours.message_type for f in m.field}
