r"""The terminal side of every command: where output goes, and the one way user text is printed.

Paths, file names and library messages can hold square brackets (``IMG_0001
[edited].png``) or ``:name:`` codes that rich would read as markup or emoji: the
text would lose words, or the command would crash with a ``MarkupError``.  So
every command prints through this module, and user text is escaped here, once:

- :func:`show` prints our own markup template with ``{}`` fields; every field
  value is user text and is printed as it is;
- :func:`plain` makes a table cell or title that rich does not interpret;
- :func:`progress_bar` shows task descriptions (file names) as they are;
- :func:`user_errors` prints a :class:`SharpError` as one escaped line plus its hint;
- :func:`live_stage` shows a long step as a live status line with its elapsed time;
- :func:`library_noise` keeps third-party log records and warnings off the terminal;
- :func:`show_library_warnings` prints what sharp-rt itself logs (an engine that fell
  back, a provider that did not load) as one ``warning:`` line each.

User text is also made safe for the terminal (:func:`printable`): a file named
``e\x1b[31m.jpg`` would otherwise colour or rewrite the screen (an escape sequence),
and bidirectional overrides can reorder what is shown.  Control characters and those
overrides print as Python-style escapes (``e\x1b[31m.jpg``); line breaks stay in
messages (hints follow on their own line) but not in paths.

The consoles have emoji codes and highlighting off.
"""

from __future__ import annotations

import contextlib
import logging
import time
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import PurePath

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TimeElapsedColumn,
)
from rich.text import Text

from sharp_rt.core.atomic import Terminated
from sharp_rt.core.errors import SharpError

console = Console(stderr=True, emoji=False, highlight=False)  # messages, progress, errors
results = Console(emoji=False, highlight=False)  # what a command reports on stdout (tables)


# Unicode's bidirectional formatting characters (UAX #9, section 2): they reorder the text that follows.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(value: object, *, line_breaks: bool = True) -> str:
    r"""``value`` as text that cannot control the terminal: control characters become escapes.

    C0 and C1 control characters (ESC, BEL, CR, backspace, CSI, ...) and the bidirectional
    overrides print as ``\x1b`` / ``\u202e``; ``line_breaks`` keeps newlines and tabs as
    they are (messages), False escapes them too (paths).  Paths (:class:`~pathlib.PurePath`)
    never keep line breaks.
    """
    text = str(value)
    if text.isprintable():
        return text
    keep = "\n\t" if line_breaks and not isinstance(value, PurePath) else ""
    return "".join(
        char
        if char in keep or (unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS)
        else (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in text
    )


def show(template: str, *values: object, out: Console | None = None, **options: object) -> None:
    """Print ``template`` (our rich markup with ``{}`` fields) with ``values`` filled in as plain text.

    template: trusted markup written in the code, e.g. ``"[yellow]skipped[/] {}: {}"``.
    values: user-supplied text (paths, names, messages); escaped, so brackets and
    backslashes print as they are, and control characters as escapes (:func:`printable`).
    Numbers stay numbers, for format specs like ``{:.1f}``.
    ``out``: the console (default: stderr).  ``options`` go to ``Console.print``; lines
    are not wrapped (``soft_wrap``) unless asked.
    """
    fields = [value if isinstance(value, int | float) else escape(printable(value)) for value in values]
    options.setdefault("soft_wrap", True)
    (out or console).print(template.format(*fields), **options)


def plain(value: object, style: str = "") -> Text:
    """User text as a rich :class:`~rich.text.Text` (a table cell or title): no markup, no control codes."""
    return Text(printable(value), style=style)


class _Description(ProgressColumn):
    """A task's description (a file name, a step) as plain text with no control codes."""

    def render(self, task: Task) -> Text:
        return Text(printable(task.description))


def progress_bar() -> Progress:
    """The progress display of long commands: description (plain text), bar, done/total, elapsed."""
    return Progress(
        _Description(),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`SharpError` into a one-line message (plus hint) and exit code 2, no traceback."""
    try:
        yield
    except SharpError as error:
        show("[bold red]error:[/] {}", error.message)
        if error.hint:
            show("  [dim]hint:[/] {}", error.hint)
        raise typer.Exit(2) from None


def interrupt_exit_code(interrupt: KeyboardInterrupt) -> int:
    """A command stopped by ``interrupt`` exits with: 130 (Ctrl+C), or 128 + N for signal N (SIGTERM: 143)."""
    return 128 + interrupt.signum if isinstance(interrupt, Terminated) else 130


@contextlib.contextmanager
def live_stage(name: str) -> Iterator[None]:
    """Show ``name`` with a spinner and its elapsed time while the block runs; then one line with its time.

    In a terminal the status line updates live and disappears at the end; in a file only
    the final line appears.  Nothing is printed for a step that raises.
    """
    started = time.perf_counter()
    if console.is_terminal:
        status = Progress(
            SpinnerColumn(),
            _Description(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        with status:
            status.add_task(name, total=None)
            yield
    else:
        yield
    show("  {} ({:.1f} s)", name, time.perf_counter() - started)


@contextlib.contextmanager
def library_noise(verbose: bool) -> Iterator[None]:
    """Unless ``verbose``: log records and warnings of the libraries below stay off the terminal.

    torch's ONNX exporter, for one, logs "torchvision is not installed. Skipping
    torchvision::nms" four times through its own handlers.  Logging at WARNING and
    below is switched off for the block (``logging.disable``), and Python warnings are
    ignored; sharp-rt's own messages do not go through ``logging``.  Errors still show.
    """
    if verbose:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


class _ConsoleHandler(logging.Handler):
    """Prints a log record as one ``warning:`` line on the console (message escaped)."""

    def emit(self, record: logging.LogRecord) -> None:
        show("[yellow]warning:[/] {}", record.getMessage())


def show_library_warnings() -> None:
    """Print warnings that sharp-rt logs (an engine that fell back, a provider that did not load) here.

    The library logs them on the ``sharp_rt`` logger; the command line shows
    each as one ``warning:`` line instead of Python's plain stderr output.
    """
    logger = logging.getLogger("sharp_rt")
    if not any(isinstance(handler, _ConsoleHandler) for handler in logger.handlers):
        logger.addHandler(_ConsoleHandler(logging.WARNING))
        logger.propagate = False
