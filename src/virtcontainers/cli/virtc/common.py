"""What virtc's command modules share: its consoles, error handling and the image check."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from virtcontainers.errors import VcError

# What virtc prints is data: a MAC such as 02:ab:cd:... must not become
# "02🆎cd:..." (rich's :emoji: codes), nor a "[...]" in a path or an error a
# style.  stdout has no markup at all; on stderr only our own prefixes do.
stderr = Console(stderr=True, emoji=False)
stdout = Console(emoji=False, markup=False)


def error(message: str, prefix: str = "virtc: error:") -> None:
    """One red-prefixed line on stderr; *message* is printed as it is."""
    stderr.print(f"[bold red]{prefix}[/] {escape(message)}", highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    error(message)
    sys.exit(code)


def progress(message: str) -> None:
    stderr.print(f"[dim]» {escape(message)}[/]", highlight=False)


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
