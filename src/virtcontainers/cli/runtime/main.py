"""vc-runtime: a runc-compatible OCI runtime; each container runs in a VM.

It translates the OCI runtime CLI into virtcontainers API calls.  A container
gets a pod of its own unless CRI annotations put it in a sandbox's pod.  Its
own bookkeeping (which pod, bundle, shim pid) lives in ``--root``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from virtcontainers.cli.runtime.control import delete, kill, pause, resume, update
from virtcontainers.cli.runtime.create import create, run, start
from virtcontainers.cli.runtime.exec import exec_
from virtcontainers.cli.runtime.failures import RuntimeGroup
from virtcontainers.cli.runtime.observe import events, list_containers, ps, state
from virtcontainers.cli.runtime.state import DEFAULT_ROOT, Options, RuntimeCommandError
from virtcontainers.spec import OCI_VERSION


@click.group(cls=RuntimeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(path_type=Path), default=DEFAULT_ROOT, show_default=True)
@click.option("--log", type=click.Path(path_type=Path), help="Log file (errors go there too).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option("--debug", is_flag=True)
@click.option("--systemd-cgroup", is_flag=True, help="Accepted; the guest uses cgroupfs.")
@click.option("--rootless", default="auto", help="Accepted; vc-runtime runs as root.")
@click.option("--criu", default="criu", help="Accepted; checkpointing is not supported.")
@click.version_option(
    "0.1.0", prog_name="vc-runtime", message=f"%(prog)s version %(version)s\nspec: {OCI_VERSION}"
)
@click.pass_context
def cli(
    ctx: click.Context,
    root: Path,
    log: Path | None,
    log_format: str,
    debug: bool,
    systemd_cgroup: bool,
    rootless: str,
    criu: str,
) -> None:
    """A runc-compatible OCI runtime that runs each container in a VM."""
    ctx.obj = Options(root=root, log=log, log_format=log_format, debug=debug)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeCommandError(
            f"--root {root}: cannot use it as the state directory: {exc.strerror}"
        ) from None


@click.command()
@click.option("--bundle", "-b", type=click.Path(path_type=Path), default=Path("."))
@click.option("--rootless", is_flag=True)
def spec(bundle: Path, rootless: bool) -> None:
    """Write a starter config.json into the bundle directory."""
    from virtcontainers import oci

    target = bundle / "config.json"
    if target.exists():
        raise RuntimeCommandError("File config.json exists. Remove it first")
    target.write_text(json.dumps(oci.default_spec(rootless), indent="\t"))


@click.command()
def features() -> None:
    """Print what this runtime supports (OCI features document)."""
    from virtcontainers import oci

    click.echo(json.dumps(oci.features(), indent=4))


cli.add_command(create)
cli.add_command(start)
cli.add_command(run)
cli.add_command(state)
cli.add_command(list_containers)
cli.add_command(ps)
cli.add_command(events)
cli.add_command(update)
cli.add_command(kill)
cli.add_command(pause)
cli.add_command(resume)
cli.add_command(delete)
cli.add_command(exec_)
cli.add_command(spec)
cli.add_command(features)


def main() -> None:
    cli(prog_name="vc-runtime")


if __name__ == "__main__":
    main()
