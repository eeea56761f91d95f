"""vc-runtime's failures as runc reports them: exit status 1 (usage errors
too, where click would exit 2), and the message in the engine's ``--log``."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from virtcontainers.cli.runtime.state import Options, RuntimeCommandError, log_event
from virtcontainers.errors import VcError


def fail(options: Options, message: str) -> NoReturn:
    log_event(options, "error", message)
    click.echo(message, err=True)
    sys.exit(1)


class RuncUsageError(click.UsageError):
    """A usage error as runc gives it: exit status 1, not click's 2."""

    exit_code = 1


def _runc_usage_error(exc: click.UsageError, options: Options) -> RuncUsageError:
    """``exc`` as runc's, logged like any other error (an engine reads the log)."""
    log_event(options, "error", exc.format_message())
    return RuncUsageError(exc.message, exc.ctx)


class RuntimeGroup(click.Group):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _runc_usage_error(exc, Options()) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's: an id that reads as an option ("-x")
            raise _runc_usage_error(exc, _options_so_far(ctx)) from None
        except (RuntimeCommandError, VcError) as exc:
            fail(_options_so_far(ctx), str(exc))


def _options_so_far(ctx: click.Context) -> Options:
    """The global options; before the group's callback made them (an unknown
    command), what it parsed of the log's."""
    if isinstance(ctx.obj, Options):
        return ctx.obj
    return Options(log=ctx.params.get("log"), log_format=ctx.params.get("log_format", "text"))
