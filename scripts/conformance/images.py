"""The images critest pulls, made here from busybox: nothing can be pulled on this machine.

Each image keeps the name critest asks for; an image whose test needs a
program's behaviour (a web server, a setuid binary) gets the smallest
stand-in that behaves alike, built from busybox (docs/conformance.md lists
them). The digest-pinned image cannot be made: its digest is that of a
manifest built elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from virtcontainers.image.busybox import busybox_binary

K8S = "registry.k8s.io"
E2E = f"{K8S}/e2e-test-images"
CRI_TOOLS = "gcr.io/k8s-staging-cri-tools"
REGISTRY_HOSTS = (K8S, "gcr.io")
"""The hosts in critest's image names; containerd's mirrors send them to the local registry."""

PAUSE_IMAGE = f"{K8S}/pause:3.6"
UNMAKEABLE = {
    f"{CRI_TOOLS}/test-image-digest@sha256:"
    "9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf": (
        "pinned by the digest of a manifest built elsewhere: no local image has it"
    ),
}

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
"""Docker Hub busybox's users: critest runs as www-data and nobody by name."""

GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
"""

WEB_SERVER = """\
#!/bin/sh
# {what}: busybox httpd on port {port}, in the foreground until TERM, INT or QUIT.
echo {banner!r} >&2
httpd -f -p {port} -h {root} &
server=$!
trap 'kill $server; exit 0' TERM INT QUIT
wait $server
"""

IPCS = """\
#!/bin/sh
# ipcs -m of util-linux, from the kernel's table (Debian's busybox has none).
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
awk 'NR > 1 { printf "0x%08x %-10s %-10s %-10s %-10s %-10s\\n", $1, $2, $8, $3, $4, $7 }' \\
    /proc/sysvipc/shm
"""

PAUSE_SOURCE = """\
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

// pause's stand-in: waits for TERM or INT and exits 0, reaping orphans meanwhile
// (it is the pod's pid 1 when the pod shares its pid namespace).
func main() {
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
\tfor sig := range signals {
\t\tif sig != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tpid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""

PGREP = """\
#!/bin/sh
# pgrep PATTERN of procps: the pids whose name matches it, but its own
# (Debian's busybox has no pgrep).
found=1
for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" = "$$" ] && continue
    name=$(cat "$dir/comm" 2>/dev/null) || continue
    if echo "$name" | grep -q -- "$1"; then
        echo "$pid"
        found=0
    fi
done
exit $found
"""

BASE_DIRECTORIES = (
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/sbin", 0o755),
    ("usr/local", 0o755),
    ("usr/local/bin", 0o755),
    ("var", 0o755),
    ("var/run", 0o755),
    ("var/www", 0o755),
)

NNP_SOURCE = """\
package main

import (
\t"fmt"
\t"os"
)

func main() {
\tfmt.Printf("Effective uid: %d\\n", os.Geteuid())
}
"""
"""The e2e nonewprivs image's nnp, which prints its effective uid; it is setuid root."""

NGINX_SOURCE = """\
package main

import (
\t"fmt"
\t"net/http"
\t"os"
\t"os/signal"
\t"strings"
\t"syscall"
)

const master = "nginx: master process "

// nginx's stand-in: its master's name in /proc/PID/cmdline and its pid file,
// the static files on NGINX_PORT, and its exit on TERM, INT or QUIT.
func main() {
\tif !strings.HasPrefix(os.Args[0], master) {
\t\tself, err := os.Executable()
\t\tif err == nil {
\t\t\terr = syscall.Exec(self, []string{master + strings.Join(os.Args, " ")}, os.Environ())
\t\t}
\t\tfmt.Fprintln(os.Stderr, err)
\t\tos.Exit(1)
\t}
\tos.WriteFile("/var/run/nginx.pid", []byte(fmt.Sprintf("%d\\n", os.Getpid())), 0o644)
\tsignals := make(chan os.Signal, 1)
\tsignal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
\tgo func() { <-signals; os.Exit(0) }()
\tport := os.Getenv("NGINX_PORT")
\terr := http.ListenAndServe(":"+port, http.FileServer(http.Dir("/usr/share/nginx/html")))
\tfmt.Fprintln(os.Stderr, err)
\tos.Exit(1)
}
"""


@dataclass(frozen=True)
class File:
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Image:
    """One image: the names it is served under, files over busybox, and its config."""

    names: tuple[str, ...]
    files: dict[str, File] = field(default_factory=dict)
    cmd: tuple[str, ...] = ("sh",)
    entrypoint: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = ()
    stand_in: str = ""
    """What replaces the real program, when the image's test depends on one."""


def httpd_foreground() -> File:
    """httpd's stand-in logs the command line httpd logs at start, then serves."""
    script = WEB_SERVER.format(
        what="httpd's stand-in",
        port=80,
        root="/usr/local/apache2/htdocs",
        banner="[core:notice] AH00094: Command line: 'httpd -D FOREGROUND'",
    )
    return File(script.encode(), 0o755)


@dataclass(frozen=True)
class Programs:
    """The stand-ins that busybox cannot play, static Go programs."""

    nnp: bytes
    nginx: bytes
    pause: bytes


def nginx_image(name: str, port: int, nginx: bytes) -> Image:
    return Image(
        (name,),
        {
            "usr/sbin/nginx": File(nginx, 0o755),
            "usr/share/nginx/html/index.html": File(b"<h1>Welcome to nginx!</h1>\n"),
        },
        cmd=("nginx", "-g", "daemon off;"),
        env=(f"NGINX_PORT={port}",),
        stand_in=f"a static Go web server on port {port} named like nginx's master, "
        "with its pid file",
    )


def critest_images(programs: Programs) -> list[Image]:
    """Every image critest v1.26.1 pulls on Linux, except :data:`UNMAKEABLE`."""
    marked = [
        Image((f"{CRI_TOOLS}/{name}:{tag}",), {marker: File(b"")})
        for name, tag, marker in (
            ("test-image-1", "latest", "test-image-1"),
            ("test-image-2", "latest", "test-image-2"),
            ("test-image-3", "latest", "test-image-3"),
            ("test-image-latest", "latest", "test-image-latest"),
            ("test-image-tag", "test", "test"),
            ("test-image-tag", "all", "all"),
        )
    ]
    users = [
        Image((f"{CRI_TOOLS}/test-image-user-{name}:latest",), user=user)
        for name, user in (
            ("uid", "1002"),
            ("username", "www-data"),
            ("uid-group", "1003:1004"),
            ("username-group", "www-data:1004"),
        )
    ]
    predefined_group = "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
    return [
        *marked,
        *users,
        Image(
            tuple(f"{CRI_TOOLS}/test-image-tags:{tag}" for tag in (1, 2, 3)),
            {"same-image": File(b"")},
        ),
        Image(
            (f"{CRI_TOOLS}/test-image-predefined-group:latest",),
            {
                "etc/passwd": File(
                    (PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n").encode()
                ),
                "etc/group": File((GROUP + predefined_group).encode()),
            },
            user="1000",
        ),
        Image(
            (PAUSE_IMAGE,),
            {"pause": File(programs.pause, 0o755)},
            cmd=(),
            entrypoint=("/pause",),
            stand_in="a static Go program that reaps orphans until TERM or INT",
        ),
        Image((f"{E2E}/busybox:1.29-2",)),
        nginx_image(f"{E2E}/nginx:1.14-2", 80, programs.nginx),
        nginx_image(f"{CRI_TOOLS}/hostnet-nginx-amd64:latest", 12003, programs.nginx),
        Image(
            (f"{E2E}/httpd:2.4.39-4",),
            {
                "usr/local/bin/httpd-foreground": httpd_foreground(),
                "usr/local/apache2/htdocs/index.html": File(
                    b"<html><body><h1>It works!</h1></body></html>\n"
                ),
            },
            cmd=("httpd-foreground",),
            stand_in="busybox httpd on port 80, logging httpd's AH00094 command line first",
        ),
        Image(
            (f"{E2E}/nonewprivs:1.3",),
            {"usr/local/bin/nnp": File(programs.nnp, 0o4755)},
            cmd=(),
            entrypoint=("/usr/local/bin/nnp",),
            stand_in="a setuid-root static Go program printing 'Effective uid: N'",
        ),
    ]


def build_go(work: Path, name: str, source: str) -> bytes:
    """A static (no cgo) Go program, built offline with the Go that builds critest.

    Raises:
        subprocess.CalledProcessError: go is missing or the build failed.
    """
    (work / f"{name}.go").write_text(source)
    subprocess.run(
        ["go", "build", "-o", name, f"{name}.go"],
        check=True,
        cwd=work,
        env={
            "CGO_ENABLED": "0",
            "GOPROXY": "off",
            "GOFLAGS": "",
            "HOME": str(work),
            "PATH": "/usr/bin:/bin",
            "GOCACHE": str(work / "gocache"),
        },
        capture_output=True,
    )
    return (work / name).read_bytes()


def _tar_entry(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _hardlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    info.mtime = 0
    # containerd's unpacker applies a link's mode to the inode it shares.
    info.mode = 0o755
    tar.addfile(info)


def base_layer() -> bytes:
    """Docker Hub busybox's layout as a tar: every applet a hard link to /bin/busybox
    (as there: masking /bin/ls must not mask the shell), its users and groups."""
    busybox = busybox_binary()
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for directory, mode in BASE_DIRECTORIES:
            _tar_entry(tar, directory, None, mode)
        _tar_entry(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in sorted(set(listed.stdout.split()) - {"busybox"}):
            _hardlink(tar, f"bin/{applet}", "bin/busybox")
        _tar_entry(tar, "bin/ipcs", IPCS.encode(), 0o755)
        _tar_entry(tar, "bin/pgrep", PGREP.encode(), 0o755)
        _tar_entry(tar, "etc/passwd", PASSWD.encode(), 0o644)
        _tar_entry(tar, "etc/group", GROUP.encode(), 0o644)
        _tar_entry(tar, "etc/hostname", b"busybox\n", 0o644)
    return out.getvalue()


def _image_layer(image: Image) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        made: set[str] = set()
        for path, file in sorted(image.files.items()):
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                parent = "/".join(parts[:depth])
                if parent not in made:
                    made.add(parent)
                    _tar_entry(tar, parent, None, 0o755)
            _tar_entry(tar, path, file.content, file.mode)
    return out.getvalue()


class Layout:
    """An OCI image layout directory: blobs plus an index naming each image by its tag."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self.manifests: list[dict[str, object]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (self.path / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    def add(self, image: Image, base: tuple[bytes, dict[str, object]], ref: str) -> None:
        layers = [base]
        if image.files:
            layer = _image_layer(image)
            gzipped = gzip.compress(layer, mtime=0)
            layers.append(
                (layer, self.blob(gzipped, "application/vnd.oci.image.layer.v1.tar+gzip"))
            )
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    *image.env,
                ],
                **({"Cmd": list(image.cmd)} if image.cmd else {}),
                **({"Entrypoint": list(image.entrypoint)} if image.entrypoint else {}),
                **({"User": image.user} if image.user else {}),
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest() for tar, _ in layers],
            },
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": self.blob(
                json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
            ),
            "layers": [descriptor for _, descriptor in layers],
        }
        descriptor = self.blob(
            json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
        )
        self.manifests.append(
            {**descriptor, "annotations": {"org.opencontainers.image.ref.name": ref}}
        )

    def close(self) -> None:
        index = {"schemaVersion": 2, "manifests": self.manifests}
        (self.path / "index.json").write_text(json.dumps(index))


def layout_ref(name: str) -> str:
    """The tag an image is known by in the layout: its full name, made tag-safe."""
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def build_layout(path: Path) -> list[Image]:
    """Every image of :func:`critest_images` in one OCI layout at ``path``; returns them.

    Raises:
        subprocess.CalledProcessError: a stand-in did not build (Go missing).
    """
    with tempfile.TemporaryDirectory(prefix="vc-standins-") as work:
        programs = Programs(
            nnp=build_go(Path(work), "nnp", NNP_SOURCE),
            nginx=build_go(Path(work), "nginx", NGINX_SOURCE),
            pause=build_go(Path(work), "pause", PAUSE_SOURCE),
        )
    layout = Layout(path)
    base_tar = base_layer()
    base = (
        base_tar,
        layout.blob(
            gzip.compress(base_tar, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
        ),
    )
    images = critest_images(programs)
    for image in images:
        for name in image.names:
            layout.add(image, base, layout_ref(name))
    layout.close()
    return images


def remove_layout(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
