"""The terminal side of every command: one stderr console, and user errors as one hinted line.

User-supplied text (paths, messages that quote them, library messages) can contain
square brackets that rich would read as markup; :func:`show` and :func:`user_errors`
escape it, so commands print through them rather than formatting markup themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from sharp_rt.core.errors import SharpError

console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`SharpError` into a one-line message (plus hint) and exit code 2, no traceback."""
    try:
        yield
    except SharpError as error:
        console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False)
        if error.hint:
            console.print(f"  [dim]hint:[/] {escape(error.hint)}", highlight=False)
        raise typer.Exit(2) from None
