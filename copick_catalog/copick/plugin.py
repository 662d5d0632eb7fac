"""``copick catalog …``: our commands as a copick CLI plugin, with copick's conventions.

copick loads click commands registered under the entry-point group ``copick.commands`` and adds them to
its ``copick`` command. The group here holds the same commands as ``copick-catalog`` (the same
callbacks: nothing is written twice), reshaped the way copick's own commands look: the project comes
from ``-c/--config`` (or ``$COPICK_CONFIG``) instead of a positional argument, and each command takes
``--debug/--no-debug``. So ``copick catalog index -c project.json`` and ``copick-catalog index project.json``
do the same thing.

Importing this module imports neither copick nor the catalog; commands load what they need when run.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ..cli import db, export, index, query, report, watch

COMMANDS = (
    index.index,
    index.errors,
    query.query,
    query.sql,
    query.stats,
    watch.watch,
    watch.status,
    db.db,
    report.report,
    report.serve,
    export.export,
)


def _config_option() -> click.Option:
    return click.Option(
        ["-c", "--config", "config"],
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="COPICK_CONFIG",
        required=True,
        metavar="PATH",
        help="Path to the copick project configuration file (or $COPICK_CONFIG).",
    )


def _debug_option() -> click.Option:
    return click.Option(
        ["--debug/--no-debug", "debug"], default=False, show_default=True, help="Verbose logging and full tracebacks."
    )


def _with_debug(callback: Any) -> Any:
    """``--debug``: our DEBUG lines on stderr, and tracebacks instead of one-line errors.

    copick's CLI has already given the root logger its own handler at INFO (on stdout), which would
    drop our DEBUG records; so ours get a handler of their own, and the root level says "debug" to
    :func:`~copick_catalog.cli.common.friendly`.
    """

    @functools.wraps(callback)
    def run(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        if debug:
            ours = logging.getLogger("copick_catalog")
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            ours.addHandler(handler)
            ours.setLevel(logging.DEBUG)
            ours.propagate = False
            logging.getLogger().setLevel(logging.DEBUG)
        return callback(*args, **kwargs)

    return run


def copick_style(command: click.Command) -> click.Command:
    """A copy of ``command`` whose CONFIG argument is ``-c/--config`` and which takes ``--debug``."""
    params = [_config_option() if isinstance(p, click.Argument) and p.name == "config" else p for p in command.params]
    if isinstance(command, click.Group):
        group = click.Group(command.name, help=command.help, params=params, callback=command.callback)
        for sub in command.commands.values():
            group.add_command(copick_style(sub))
        return group
    return click.Command(
        command.name,
        callback=_with_debug(command.callback),
        params=[*params, _debug_option()],
        help=command.help,
        short_help=command.short_help,
    )


@click.group("catalog", short_help="SQL-indexed catalog of this project (copick-catalog).")
def catalog() -> None:
    """Index the project into an SQL catalog and ask it questions in milliseconds (copick-catalog)."""


for _command in COMMANDS:
    catalog.add_command(copick_style(_command))

__all__ = ["catalog", "copick_style"]
