"""Run critest against one private containerd with the runc and vc handlers.

    python -m scripts.conformance --critest PATH --results DIR [--focus RE] [--skip RE]

PATH is a built critest or a cri-tools checkout (built there with its vendored
modules, offline). Everything runs inside a network namespace made for the
run: containerd, its CNI bridge, the local registry and critest itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from scripts.conformance import images, registry, report
from tests.conftest import remove_all_pods, short_temp_dir
from tests.engines.containerd import (
    VC_SHIM_RUNTIME,
    Containerd,
    running_containerd,
    unmount_under,
    with_vc_shim,
)
from tests.netlab import Lab, ip

CNI_PLUGINS = Path("/usr/lib/cni")
POD_SUBNET = "198.51.100.0/24"
"""TEST-NET-2: the pods' addresses, on a bridge inside the run's namespace."""
HANDLERS = ("runc", "vc")
NOT_RUNNABLE = "public image with digest|runtime should support MaskedPaths"
"""Specs that cannot run faithfully here, skipped for both handlers: the digest-pinned
image cannot be made (images.UNMAKEABLE), and Debian's busybox-static runs ls inside
its shell (FEATURE_SH_STANDALONE), so the masked /bin/ls is never executed."""


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def critest_binary(path: Path) -> Path:
    """``path`` itself, or critest built in the cri-tools checkout at ``path``.

    Raises:
        SystemExit: neither a critest binary nor a checkout, or the build failed.
    """
    if path.is_file():
        return path
    if not (path / "cmd" / "critest").is_dir():
        raise SystemExit(f"{path} is neither critest nor a cri-tools checkout")
    built = path / "critest"
    if not built.exists():
        say(f"building critest in {path}")
        env = {**os.environ, "GOFLAGS": "-mod=vendor", "GOPROXY": "off"}
        done = subprocess.run(
            ["go", "test", "-c", "./cmd/critest", "-o", str(built)], cwd=path, env=env, check=False
        )
        if done.returncode != 0:
            raise SystemExit("critest did not build (Debian's golang-go builds tag v1.26.1)")
    return built


def cni_conflist(ipam_dir: Path) -> str:
    """A bridge with host-local addresses, and portmap for critest's hostPort specs."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "vc-conformance",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "vcconf0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "dataDir": str(ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
    )


def cri_plugin_toml(cni_conf: Path, mirror: str) -> str:
    """The CRI plugin with both handlers, critest's registries mirrored to the local one.

    runc cannot lower oom_score_adj on this machine, hence restrict_oom_score_adj.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    mirrors = "".join(
        f'  [{cri}.registry.mirrors."{host}"]\n    endpoint = ["http://{mirror}"]\n'
        for host in images.REGISTRY_HOSTS
    )
    return f"""\
    sandbox_image = "{images.PAUSE_IMAGE}"
    disable_apparmor = true
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [{cri}.containerd]
    default_runtime_name = "runc"
  [{cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [{cri}.containerd.runtimes.vc]
    runtime_type = "{VC_SHIM_RUNTIME}"
  [{cri}.cni]
    bin_dir = "{CNI_PLUGINS}"
    conf_dir = "{cni_conf}"
{mirrors}"""


def run_critest(
    critest: Path, containerd: Containerd, netns: str, handler: str, args: argparse.Namespace
) -> report.Run:
    """One critest run with ``handler``; its log and JUnit report go into the results."""
    results: Path = args.results
    endpoint = f"unix://{containerd.address}"
    argv = [
        str(critest),
        f"--runtime-endpoint={endpoint}",
        f"--image-endpoint={endpoint}",
        f"--runtime-handler={handler}",
        f"-ginkgo.junit-report={results / f'junit-{handler}.xml'}",
        f"-ginkgo.timeout={args.timeout}",
        f"-ginkgo.skip={args.skip or NOT_RUNNABLE}",
        "-ginkgo.no-color",
        "-ginkgo.v",
        *([f"-ginkgo.focus={args.focus}"] if args.focus else []),
    ]
    say(f"critest with {handler}: {' '.join(argv)}")
    began = time.monotonic()
    with (results / f"critest-{handler}.log").open("w") as log:
        subprocess.run(
            registry.in_netns(netns, argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=results,
            check=False,
        )
    run = report.Run(handler, time.monotonic() - began)
    run.outcomes = report.read_junit(results / f"junit-{handler}.xml")
    say(
        f"critest with {handler}: {run.count('passed')} passed, {run.count('failed')} failed, "
        f"{run.count('skipped')} skipped in {run.seconds:.0f} s"
    )
    return run


CRITEST_SHM_BYTES = "1048576"
"""The size of the segments critest makes (``ipcmk -M 1048576``)."""


def host_shm_segments() -> set[str]:
    """The ids of the host's System V shared memory segments of critest's size."""
    with open("/proc/sysvipc/shm") as table:
        rows = [line.split() for line in list(table)[1:]]
    return {row[1] for row in rows if row[3] == CRITEST_SHM_BYTES}


@contextmanager
def shm_left_by_critest() -> Iterator[None]:
    """critest's HostIpc specs make a segment on the host (ipcmk) and leave it:
    the segments that appear during the run are removed afterwards."""
    before = host_shm_segments()
    try:
        yield
    finally:
        for shmid in sorted(host_shm_segments() - before):
            subprocess.run(["ipcrm", "-m", shmid], check=False, capture_output=True)


@contextmanager
def run_namespace() -> Iterator[str]:
    """A network namespace of the run's own, loopback up (the streaming server and
    the registry listen there); removed afterwards."""
    lab = Lab()
    try:
        name, path = lab.netns()
        ip("-n", name, "link", "set", "lo", "up")
        yield path
    finally:
        lab.close()


def versions(critest: Path) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return next(iter((done.stdout or done.stderr).splitlines()), "")

    return {
        "containerd": first_line(["containerd", "--version"]),
        "runc": first_line(["runc", "--version"]),
        "qemu": first_line(["qemu-system-x86_64", "--version"]),
        "kernel": first_line(["uname", "-r"]),
        "cpus": str(os.cpu_count()),
        "critest": str(critest),
    }


def conformance(args: argparse.Namespace) -> list[report.Run]:
    critest = critest_binary(args.critest)
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    (results / "versions.json").write_text(json.dumps(versions(critest), indent=1))
    work = short_temp_dir("vcconf-")
    # As short as the tests' run roots: a pod's agent socket must fit in 107 bytes.
    run_root = short_temp_dir("vc-")
    os.environ["VC_RUN_DIR"] = str(run_root)
    runs: list[report.Run] = []
    try:
        with ExitStack() as stack:
            netns = stack.enter_context(run_namespace())
            stack.enter_context(shm_left_by_critest())
            say("making critest's images")
            made = images.build_layout(work / "layout")
            address = stack.enter_context(
                registry.running_registry(netns, work, results / "registry.log")
            )
            registry.push(netns, work / "layout", made, address)
            (work / "cni").mkdir()
            (work / "cni" / "10-vc-conformance.conflist").write_text(cni_conflist(work / "ipam"))

            def keep_log(engine: Containerd) -> None:
                shutil.copy(engine.base / "containerd.log", results / "containerd.log")

            containerd = stack.enter_context(
                running_containerd(
                    with_vc_shim(dict(os.environ)),
                    cri_plugin_toml(work / "cni", address),
                    netns=netns,
                    namespace="k8s.io",
                    before_stop=keep_log,
                    cgroups=True,
                )
            )
            say(f"containerd at {containerd.address}, in {netns}")
            for handler in args.handlers.split(","):
                runs.append(run_critest(critest, containerd, netns, handler, args))
                report.write(runs, results)
    finally:
        remove_all_pods()
        for path in (work, run_root):
            unmount_under(path)
            shutil.rmtree(path, ignore_errors=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.conformance", description=__doc__)
    parser.add_argument(
        "--critest", type=Path, required=True, help="critest, or a cri-tools checkout"
    )
    parser.add_argument("--results", type=Path, required=True, help="where logs and reports go")
    parser.add_argument("--handlers", default=",".join(HANDLERS), help="runtime handlers, in order")
    parser.add_argument("--focus", default="", help="ginkgo focus regex (a subset of specs)")
    parser.add_argument("--skip", default="", help=f"ginkgo skip regex (default: {NOT_RUNNABLE!r})")
    parser.add_argument("--timeout", default="4h", help="the suite's timeout, per handler")
    runs = conformance(parser.parse_args())
    print(report.summary(runs), end="")
    sys.exit(0 if runs else 1)


if __name__ == "__main__":
    main()
