"""The set-id filter, applied to a real child process (no VM)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from virtcontainers.hypervisor.qemu.confine import QEMU_CAPABILITIES, child_setup, no_set_id_filter

PROBE = """
import os, sys
path = sys.argv[1]
results = []
def attempt(name, call):
    try:
        call()
        results.append(name + ":ok")
    except OSError as exc:
        results.append(name + ":" + str(exc.errno))
CREATE = os.O_CREAT | os.O_WRONLY
attempt("create", lambda: os.close(os.open(path + "/plain", CREATE, 0o755)))
attempt("create-setuid", lambda: os.close(os.open(path + "/suid", CREATE, 0o4755)))
attempt("chmod", lambda: os.chmod(path + "/plain", 0o700))
attempt("chmod-setuid", lambda: os.chmod(path + "/plain", 0o4755))
attempt("chmod-setgid", lambda: os.chmod(path + "/plain", 0o2755))
attempt("mknod-char", lambda: os.mknod(path + "/mem", 0o600 | 0o020000, os.makedev(1, 1)))
attempt("open-existing", lambda: os.close(os.open(path + "/plain", os.O_RDONLY)))
print(" ".join(results))
"""


def test_the_filter_refuses_set_id_modes_and_device_nodes(tmp_path: Path) -> None:
    setup = child_setup(QEMU_CAPABILITIES, no_set_id_filter())
    done = subprocess.run(
        [sys.executable, "-S", "-c", PROBE, str(tmp_path)],
        preexec_fn=setup,
        capture_output=True,
        text=True,
        check=True,
    )
    results = dict(item.split(":") for item in done.stdout.split())
    assert results == {
        "create": "ok",
        "create-setuid": "1",
        "chmod": "ok",
        "chmod-setuid": "1",
        "chmod-setgid": "1",
        "mknod-char": "1",  # no CAP_MKNOD
        "open-existing": "ok",
    }
    assert not (tmp_path / "suid").exists()
    assert not os.stat(tmp_path / "plain").st_mode & 0o6000
