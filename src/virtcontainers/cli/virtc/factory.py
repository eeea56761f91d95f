"""virtc factory: VM templates that pods start as clones of (docs/factory.md)."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from virtcontainers.cli.virtc.common import VcGroup, ensure_image, progress, query, stderr, stdout


@click.group(cls=VcGroup)
def factory() -> None:
    """VM templates: pods start as clones of a VM booted once (docs/factory.md)."""


@factory.command("init")
@click.option("--vcpus", type=int, default=1, show_default=True)
@click.option("--memory", "memory_mib", type=int, default=512, show_default=True, help="MiB")
@click.option("--kernel-param", "kernel_params", multiple=True, help="Extra kernel parameter.")
@click.option("--force", is_flag=True, help="Make it again even if it exists.")
def factory_init(vcpus: int, memory_mib: int, kernel_params: tuple[str, ...], force: bool) -> None:
    """Make the template that pods of this size start from; drop stale ones."""
    from virtcontainers.factory.templates import init_template

    ensure_image()
    template, removed = init_template(
        vcpus, memory_mib, kernel_params, force=force, progress=progress
    )
    for key in removed:
        progress(f"removed stale template {key}")
    stdout.print(f"template {template.key}  {template.path}", highlight=False)


@factory.command("status")
@query()
def factory_status(as_json: bool) -> None:
    """The templates, and whether pods would start from them."""
    from virtcontainers.factory.templates import Factory

    made = Factory()
    templates = made.templates()
    if as_json:
        entries = [
            {
                **t.to_json(),
                "current": t.current(),
                "path": str(t.path),
                "disk_bytes": t.disk_bytes(),
            }
            for t in templates
        ]
        click.echo(json.dumps({"root": str(made.root), "templates": entries}, indent=1))
        return
    stdout.print(f"factory {made.root}", highlight=False)
    table = Table(
        "TEMPLATE", "VCPUS", "MEMORY", "KERNEL PARAMS", "STATE", "MADE", "ON DISK", box=None
    )
    for t in templates:
        table.add_row(
            t.key,
            str(t.shape.vcpus),
            f"{t.shape.memory_mib} MiB",
            " ".join(t.shape.kernel_params) or "-",
            "current" if t.current() else "stale",
            "automatically" if t.automatic else "by hand",
            f"{t.disk_bytes() / (1 << 20):.0f} MiB",
        )
    if templates:
        stdout.print(table)
    else:
        stdout.print("no templates: `virtc factory init` makes one")
    for path in made.broken():
        stderr.print(
            f"virtc: {escape(str(path))} is not a usable template "
            "(`virtc factory destroy` removes it)"
        )


@factory.command("destroy")
@click.argument("key", required=False)
def factory_destroy(key: str | None) -> None:
    """Remove one template (KEY) or all of them; running clones keep going."""
    from virtcontainers.factory import pool
    from virtcontainers.factory.templates import Factory
    from virtcontainers.store import run_root

    removed = Factory().destroy(key)
    for name in removed:
        stdout.print(f"removed  {name}", highlight=False)
        for standby in pool.stop(run_root(), name):
            stdout.print(f"stopped  {standby} (a waiting clone of it)", highlight=False)
    if not removed:
        stdout.print("no templates")


@factory.command("pool")
@click.option("--size", type=int, help="Waiting clones to keep per template (0: no pool).")
@click.option("--vcpus", type=int, default=1, show_default=True)
@click.option("--memory", "memory_mib", type=int, default=512, show_default=True, help="MiB")
@click.option("--kernel-param", "kernel_params", multiple=True, help="Extra kernel parameter.")
def factory_pool(
    size: int | None, vcpus: int, memory_mib: int, kernel_params: tuple[str, ...]
) -> None:
    """Keep clones of a template restored and waiting for pods (docs/factory.md).

    With --size: set how many, start them for the template of this pod size
    (which must exist), and stop those beyond it.  Without: list them.
    """
    from virtcontainers.factory import pool
    from virtcontainers.factory.templates import current_shape, factory_dir
    from virtcontainers.store import run_root

    root = run_root()
    factory_root = factory_dir(root)
    if size is not None:
        pool.set_pool_size(factory_root, size)
        if size == 0:
            for name in pool.stop(root):
                stdout.print(f"stopped  {name}", highlight=False)
        else:
            key = current_shape(vcpus, memory_mib, kernel_params).key
            if not (factory_root / key).is_dir():
                raise click.ClickException(
                    f"no template {key} for this size: `virtc factory init` makes it first"
                )
            started = pool.fill(root, factory_root, key)
            progress(f"pool of {size} per template: {started} clone(s) starting")
    stdout.print(f"pool size {pool.pool_size(factory_root)} per template", highlight=False)
    for standby in pool.standbys(root):
        state = "ready" if standby.ready else "starting" if standby.alive else "dead"
        stdout.print(f"  {standby.path.name}  {state}", highlight=False)
