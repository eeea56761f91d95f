"""A stand-in for qemu-system-x86_64 that serves QMP, for the QEMU driver's unit tests.

The driver launches it as it would QEMU (same argv, same confinement) and
talks to it over the ``-qmp unix:PATH`` socket, so everything down to the
wire (JSON, fds passed with SCM_RIGHTS, events) is the driver's own.  Only
what the driver sends is understood.  Set by the test, in the environment:

- ``FAKE_QEMU_LOG``: every command received is appended there as a JSON line
  (``getfd`` with ``"fd": [st_dev, st_ino]`` of the descriptor that came with it);
- ``FAKE_QEMU_UNPLUG``: ``release`` (default: DEVICE_DELETED 0.1 s after a
  device_del, as a guest that lets go) or ``never`` (a guest that does not);
- ``FAKE_QEMU_FAIL``: the name of a command that fails (GenericError).

``stop`` and ``cont`` change the run status that ``query-status`` answers and
send ``STOP`` and ``RESUME`` before their answer, as QEMU does.  SIGUSR1 pauses
the VM as if behind its monitor client's back (QEMU stopping on an I/O error,
or another client's ``stop``): the status turns ``paused`` and ``STOP`` is sent.

``query-pci`` answers with the root ports of the argv (``-device
pcie-root-port``) and the devices in them: cold-plugged (``bus=PORT``) or
added since with ``device_add``.

Standard library only: it is run by the test's Python, as a script.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

UNPLUG_DELAY = 0.1


def qmp_path(argv: list[str]) -> str:
    """The socket path of ``-qmp unix:PATH,server=on,...`` (a comma written twice)."""
    spec = argv[argv.index("-qmp") + 1].removeprefix("unix:")
    path, i = [], 0
    while i < len(spec):
        if spec[i] == ",":
            if spec[i + 1 : i + 2] != ",":
                break
            i += 1
        path.append(spec[i])
        i += 1
    return "".join(path)


class Monitor:
    def __init__(self, conn: socket.socket, log_path: str) -> None:
        self.conn = conn
        self.log_path = log_path
        self.buffer = ""
        self.fds: list[int] = []  # received, not yet named by getfd
        self.named: dict[str, int] = {}
        self.netdevs: set[str] = set()
        self.devices: set[str] = set()
        self.ports, self.in_ports = root_ports(sys.argv)
        self.unplugging: set[str] = set()
        self.status = "running"
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.fail = os.environ.get("FAKE_QEMU_FAIL", "")
        self.unplug = os.environ.get("FAKE_QEMU_UNPLUG", "release")

    def send(self, message: dict[str, Any]) -> None:
        self.conn.sendall(json.dumps(message).encode() + b"\r\n")

    def receive(self) -> bool:
        data, fds, _flags, _addr = socket.recv_fds(self.conn, 65536, 8)
        self.fds.extend(fds)
        if not data:
            return False
        self.buffer += data.decode()
        decoder = json.JSONDecoder()
        while self.buffer.strip():
            self.buffer = self.buffer.lstrip()
            try:
                message, end = decoder.raw_decode(self.buffer)
            except json.JSONDecodeError:
                break  # the rest has not arrived yet
            self.buffer = self.buffer[end:]
            self.answer(message)
        return True

    def answer(self, message: dict[str, Any]) -> None:
        command = message.get("execute", "")
        args = message.get("arguments", {})
        entry = {"execute": command, "arguments": args}
        reply: dict[str, Any]
        try:
            if command == self.fail:
                raise QmpError("GenericError", f"{command} failed as the test asked")
            result = self.run(command, args, entry)
            reply = {"return": result}
        except QmpError as exc:
            reply = {"error": {"class": exc.kind, "desc": exc.desc}}
            entry["error"] = exc.kind
        with open(self.log_path, "a") as log:
            log.write(json.dumps(entry) + "\n")
        if "id" in message:
            reply["id"] = message["id"]
        self.send(reply)
        if command == "quit":
            sys.exit(0)

    def run(self, command: str, args: dict[str, Any], entry: dict[str, Any]) -> Any:
        if command == "getfd":
            if not self.fds:
                raise QmpError("GenericError", "No file descriptor supplied via SCM_RIGHTS")
            fd = self.fds.pop()
            st = os.fstat(fd)
            entry["fd"] = [st.st_dev, st.st_ino]
            self.named[args["fdname"]] = fd
        elif command == "closefd":
            name = args["fdname"]
            if name not in self.named:
                raise QmpError("GenericError", f"File descriptor named '{name}' not found")
            os.close(self.named.pop(name))
        elif command == "netdev_add":
            if args["id"] in self.netdevs:
                raise QmpError("GenericError", f"Duplicate ID '{args['id']}' for netdev")
            if "fd" in args:
                self.named.pop(args["fd"])  # the netdev owns it now
            self.netdevs.add(args["id"])
        elif command == "netdev_del":
            if args["id"] not in self.netdevs:
                raise QmpError("DeviceNotFound", f"Device '{args['id']}' not found")
            self.netdevs.remove(args["id"])
        elif command == "device_add":
            self.devices.add(args["id"])
            if args.get("bus") in self.ports:
                self.in_ports[args["id"]] = args["bus"]
        elif command == "query-pci":
            return self.query_pci()
        elif command == "device_del":
            self.device_del(args["id"])
        elif command == "stop":
            self.run_state("paused")
        elif command == "cont":
            self.run_state("running")
        elif command == "query-status":
            return {"status": self.status, "running": self.status == "running"}
        return {}

    def run_state(self, status: str) -> None:
        """Enter *status*, telling the client as QEMU does (only on a change)."""
        if status != self.status:
            self.status = status
            self.send_event("RESUME" if status == "running" else "STOP", {})

    def query_pci(self) -> list[dict[str, Any]]:
        def in_port(port: str) -> list[dict[str, Any]]:
            return [{"qdev_id": ident} for ident, p in self.in_ports.items() if p == port]

        ports = [{"qdev_id": p, "pci_bridge": {"devices": in_port(p)}} for p in self.ports]
        return [{"bus": 0, "devices": [{"qdev_id": ""}, *ports]}]

    def device_del(self, ident: str) -> None:
        if ident not in self.devices:
            raise QmpError("DeviceNotFound", f"Device '{ident}' not found")
        if ident in self.unplugging:
            raise QmpError("GenericError", f"Device {ident} is already in the process of unplug")
        self.unplugging.add(ident)
        if self.unplug == "release":
            path = f"/machine/peripheral/{ident}"
            due = time.monotonic() + UNPLUG_DELAY
            self.events.append((due, {"path": f"{path}/virtio-backend"}))
            self.events.append((due, {"device": ident, "path": path}))

    def send_due_events(self) -> None:
        now = time.monotonic()
        for due, data in [e for e in self.events if e[0] <= now]:
            self.events.remove((due, data))
            if "device" in data:
                self.devices.discard(data["device"])
                self.in_ports.pop(data["device"], None)
                self.unplugging.discard(data["device"])
            self.send_event("DEVICE_DELETED", data)

    def send_event(self, name: str, data: dict[str, Any]) -> None:
        seconds, micro = divmod(int(time.time() * 1e6), 1_000_000)
        stamp = {"seconds": seconds, "microseconds": micro}
        self.send({"event": name, "data": data, "timestamp": stamp})

    def timeout(self) -> float | None:
        if not self.events:
            return None
        return max(0.0, min(due for due, _ in self.events) - time.monotonic())


def root_ports(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The root ports of ``-device pcie-root-port,id=...``, and the devices
    cold-plugged into them (device id -> port)."""
    specs = [argv[i + 1].split(",") for i, arg in enumerate(argv[:-1]) if arg == "-device"]
    options = [(spec[0], dict(o.split("=", 1) for o in spec[1:] if "=" in o)) for spec in specs]
    ports = [o["id"] for driver, o in options if driver == "pcie-root-port"]
    plugged = {o["id"]: o["bus"] for _, o in options if o.get("bus") in ports and "id" in o}
    return ports, plugged


class QmpError(Exception):
    def __init__(self, kind: str, desc: str) -> None:
        super().__init__(desc)
        self.kind = kind
        self.desc = desc


def main() -> None:
    """Serve one client at a time; when it goes away, wait for the next (as QEMU's
    ``server=on`` monitor does, so that a new pod daemon can adopt the VM)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(qmp_path(sys.argv))
    listener.listen(1)
    wakeup, woken = socket.socketpair()
    wakeup.setblocking(False)
    signal.signal(signal.SIGUSR1, lambda *_: None)  # handled in serve(), through the wakeup fd
    signal.set_wakeup_fd(wakeup.fileno())
    conn, _ = listener.accept()
    monitor = Monitor(conn, os.environ["FAKE_QEMU_LOG"])
    while True:
        serve(monitor, woken)
        monitor.conn.close()
        monitor.conn, _ = listener.accept()
        monitor.buffer = ""


def serve(monitor: Monitor, woken: socket.socket) -> None:
    version = {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake"}
    monitor.send({"QMP": {"version": version, "capabilities": []}})
    selector = selectors.DefaultSelector()
    selector.register(monitor.conn, selectors.EVENT_READ)
    selector.register(woken, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select(monitor.timeout()):
            if key.fileobj is woken:
                if signal.SIGUSR1 in woken.recv(64):
                    monitor.run_state("paused")
            elif not monitor.receive():
                selector.close()
                return
        monitor.send_due_events()


if __name__ == "__main__":
    main()
