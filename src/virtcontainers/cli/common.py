"""What virtc's command modules share: its consoles, error handling and the image check."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console

from virtcontainers.errors import VcError

stderr = Console(stderr=True)
stdout = Console()


def fail(message: str, code: int = 1) -> NoReturn:
    stderr.print(f"[bold red]virtc: error:[/] {message}", highlight=False)
    sys.exit(code)


def progress(message: str) -> None:
    stderr.print(f"[dim]» {message}[/]", highlight=False)


class VcGroup(click.Group):
    """Turns library errors into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VcError as exc:
            fail(str(exc))


def ensure_image() -> None:
    from virtcontainers.image import ImageNotBuiltError, build_image, find_image

    try:
        find_image()
    except ImageNotBuiltError:
        progress("no guest image yet: building it (once)")
        build_image(progress=progress)


def query(*ids: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command that shows something named by ``ids`` (its arguments, in
    order), as text or, with ``--json``, as JSON (``as_json``)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)
        for ident in reversed(ids):
            command = click.argument(ident)(command)
        return command

    return decorate
