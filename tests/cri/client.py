"""A CRI client as the kubelet is one: gRPC over containerd's unix socket.

No maintained Python CRI client exists, so the stubs are generated from the
CRI's own declaration (api.proto beside this file, runtime.v1 as containerd
1.6 serves it) with grpcio-tools, into a directory the caller gives (the
tests give a temp dir: generated code is never committed). The generated
modules are untyped; this wrapper is the typed face the tests use: the
message classes come back as ``Any`` from :attr:`Cri.pb`, every call goes
through :meth:`Cri.call` with a deadline.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PROTO = Path(__file__).with_name("api.proto")
PACKAGE = "vc_cri_runtime_v1"
"""The package the stubs are generated into; unique so it cannot shadow anything."""


class StubsError(RuntimeError):
    """grpcio-tools could not turn api.proto into Python."""


def generate_stubs(out: Path) -> tuple[ModuleType, ModuleType]:
    """Generate the CRI's messages and services under ``out``; import and return them.

    Raises:
        StubsError: protoc rejected the proto (the message says why).
    """
    from grpc_tools import protoc

    package = out / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROTO, package / "api.proto")
    # -I at `out`: the generated service module then imports its messages as
    # `vc_cri_runtime_v1.api_pb2`, importable once `out` is on sys.path.
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{out}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(package / "api.proto"),
        ]
    )
    if status != 0:
        raise StubsError(f"grpc_tools.protoc failed on {PROTO} (status {status})")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    messages = importlib.import_module(f"{PACKAGE}.api_pb2")
    services = importlib.import_module(f"{PACKAGE}.api_pb2_grpc")
    return messages, services


class Cri:
    """RuntimeService and ImageService of one CRI endpoint."""

    def __init__(
        self, socket: str, stubs: tuple[ModuleType, ModuleType], timeout: float = 240
    ) -> None:
        messages, services = stubs
        self.pb: Any = messages
        self.timeout = timeout
        """The deadline of every call: pod boots are slow under TCG, and the
        kubelet's own default (2 min) is what a runtime must live with."""
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime: Any = services.RuntimeServiceStub(self.channel)
        self.image: Any = services.ImageServiceStub(self.channel)

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """``method`` of RuntimeService (or ImageService, if only it has one)."""
        service = self.runtime if hasattr(self.runtime, method) else self.image
        return getattr(service, method)(request, timeout=timeout or self.timeout)

    def close(self) -> None:
        self.channel.close()
