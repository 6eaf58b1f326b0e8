"""The ``sharp-rt cache`` commands: list or clear the engines ``predict`` builds on first use.

```
sharp-rt cache list     each entry of <sharp-rt cache>/engines/: engine, size, built when, or "incomplete"
sharp-rt cache clear    remove every entry and cached reference output (entries being built are left)
```

Registered in :mod:`sharp_rt.cli.app` as ``cache``.  The cache lives in ``SHARP_RT_CACHE``,
else ``~/.cache/sharp-rt`` (:func:`sharp_rt.core.paths.cache_root`); removing that folder by
hand is as good.
"""

from __future__ import annotations

import json

import typer

cache_app = typer.Typer(help="The engines predict builds on first use (<sharp-rt cache>/engines/).")


@cache_app.command("list")
def cache_list_command() -> None:
    """List the cached engines: name, engine, size, when built (or incomplete: rebuilt on next use)."""
    from sharp_rt.cli.console import show, user_errors
    from sharp_rt.export.first_run import RECORD_NAME, engines_root

    with user_errors():
        root = engines_root()
        entries = (
            [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
            if root.is_dir()
            else []
        )
        show("Engine cache: {} ({} {})", root, len(entries), "entry" if len(entries) == 1 else "entries")
        for entry in entries:
            size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) / 1e9
            try:
                record = json.loads((entry / RECORD_NAME).read_text())
                what = f"{record.get('engine')}, {record.get('config')}, built {record.get('built')}"
            except (OSError, ValueError):
                what = "incomplete (rebuilt on next use)"
            show("  {}  {:.2f} GB  {}", entry.name, size, what)


@cache_app.command("clear")
def cache_clear_command() -> None:
    """Remove every cached engine and reference output (an entry another process is building stays)."""
    from sharp_rt.cli.console import show, user_errors
    from sharp_rt.export.first_run import clear_cache, engines_root

    with user_errors():
        removed = clear_cache()
        show("Removed {} item(s) from {}", len(removed), engines_root().parent)
