"""How ``predict`` and ``render`` report a batch: one line per input, the summary, the failures.

Both commands consume an iterator of :class:`~sharp_rt.predict.outputs.ImageResult`
(:func:`sharp_rt.predict.batch.run_local`, :func:`sharp_rt.scaleout.ray_batch.predict_on_ray`,
:func:`sharp_rt.predict.render_batch.render_scenes`) through :func:`show_results`, which counts
them in a :class:`~sharp_rt.predict.batch.BatchReport`; the numbers live there, the printing here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from rich.progress import Progress
from rich.table import Table

from sharp_rt.cli.console import show
from sharp_rt.engines.base import EngineInfo
from sharp_rt.predict.batch import BatchPlan, BatchReport
from sharp_rt.predict.outputs import ImageResult


def plural(n: int, one: str, many: str | None = None) -> str:
    """``one`` when ``n`` is 1, else ``many`` (default: ``one`` + "s"): "image" / "images", "has" / "have"."""
    return one if n == 1 else (many if many is not None else f"{one}s")


def show_engine(info: EngineInfo, seconds: float, precision: str = "auto") -> None:
    """The one line that says which engine runs, and why.

    precision: the ``--precision`` asked for; under ``auto`` the engine's "bf16 requested" (the
    choice's request to it, not the user's) is left out, as is any reason the choice already gave.
    """
    chosen = info.details.get("chosen") or ""
    reasons = [chosen] if chosen else []
    for part in (info.details.get("precision_reason") or "").split("; "):
        if not part or part in chosen or (precision == "auto" and part.endswith(" requested")):
            continue
        reasons.append(part)
    why = "; ".join(reasons)
    compiled = ", compiled" if info.details.get("compiled") else ""
    layout = info.details.get("bf16_layout") or {}  # issue 23: a layout chosen for these weights
    if str(layout.get("source", "")).startswith("grown") and info.precision == "bf16":
        compiled += f", {len(layout.get('fp32_islands', []))} float32 island(s) chosen for these weights"
    show(
        "Engine: {} ({}, {}{}), {} px, loaded in {:.1f} s{}",
        *(info.backend, info.precision, info.device, compiled, info.resolution, seconds),
        f" ({why})" if why else "",
    )


def show_results(
    results: Iterator[ImageResult],
    report: BatchReport,
    progress: Progress,
    *,
    task: str | None = "Predicting",
    target_name: Callable[[Path], object] = lambda target: target,
    written: Callable[[ImageResult], None] | None = None,
    each: Callable[[ImageResult], None] | None = None,
) -> None:
    """Consume ``results`` into ``report``, printing one line per result; stops at a full disk.

    progress: the bar of the run (``task``: a bar over ``report.total``; None: none);
    target_name: how a skipped result's target is named; written: prints a written result
    (default: ``<photo> -> <target>  (<seconds> s)``); each: called with every result first.
    A failure prints its ``hint`` when set.  Ctrl+C or SIGTERM (a ``KeyboardInterrupt``) stops the
    bar and prints one line, ``interrupted: N of M written; rerun to resume``, before it goes on up.
    """
    bar = progress.add_task(task, total=report.total) if task and report.total else None  # no 0/0 bar
    try:
        _show_each(results, report, progress, bar, target_name, written, each)
    except KeyboardInterrupt:
        progress.stop()
        show("[bold red]interrupted:[/] {} of {} written; rerun to resume", report.written, report.total)
        raise


def _show_each(results, report: BatchReport, progress: Progress, bar, target_name, written, each) -> None:
    """The loop of :func:`show_results`."""
    for result in report.track(results):
        if each is not None:
            each(result)
        if result.error is not None:
            show("[red]failed[/] {}: {}", result.source, result.error)
            if result.hint:
                show("  [dim]hint:[/] {}", result.hint)
        elif result.skipped is not None:  # another process makes or made it: not a failure
            show("{} -> {}: {}, skipped", result.source.name, target_name(result.target), result.skipped)
        elif result.added:  # the output was kept as it was
            seconds = f"{sum(result.seconds.values()):.2f}"
            added = " and ".join(result.added)
            show("{}: kept {}, added its {}  ({} s)", result.source.name, result.target, added, seconds)
        elif written is not None:
            written(result)
        else:
            seconds = f"{sum(result.seconds.values()):.2f}"
            show("{} -> {}  ({} s)", result.source.name, result.target, seconds)
        if bar is not None:
            progress.advance(bar)


def summary_table(
    written: int, done: int, failed: int, gaussians: int, wall: float, totals, added: int = 0
) -> Table:
    """The end-of-run summary as label/value rows: readable at any width, in a terminal or a file.

    added: outputs kept as they were, with their missing videos / depth maps made (a row only when > 0).
    """
    run = written + added  # images this run predicted
    table = Table(title="sharp-rt predict", show_header=False)
    table.add_column("", no_wrap=True)
    table.add_column("", justify="right", no_wrap=True)
    rows = [
        ("written", str(written)),
        *([("kept, videos/depth added", str(added))] if added else []),
        ("already done", str(done)),
        ("failed", str(failed)),
        ("Gaussians written", f"{gaussians:,}"),
        ("images/s", f"{run / wall:.2f}" if wall > 0 and run else "-"),
    ]
    rows += [(f"mean {stage} (s)", f"{seconds / run:.3f}") for stage, seconds in totals.items()]
    for label, value in rows:
        table.add_row(label, value)
    return table


def show_summary(report: BatchReport) -> None:
    """``predict``'s end of run: where a full disk stopped it, then the summary table."""
    from sharp_rt.cli.console import console

    if report.stopped is not None:
        show("[bold red]stopped[/] at the first write that found the disk full: {}", report.stopped.message)
        total, hint = report.total, report.stopped.hint
        show("  {} of {} {} not run; [dim]hint:[/] {}", report.not_run, total, plural(total, "image"), hint)
    done = report.done + report.skipped
    table = summary_table(
        *(report.written, done, len(report.failures), report.gaussians, report.wall, report.seconds),
        added=report.added,
    )
    console.print(table)


def show_failures(failures: list[tuple[Path, str]]) -> None:
    """The ``Failed:`` list: one line per input that failed, with why."""
    if failures:
        show("[bold red]Failed:[/]")
        for path, message in failures:
            show("  {}: {}", path, message.replace("\n", "\n  "))  # its hint line under it, indented


def show_leftovers(removed: list[Path]) -> None:
    """Say how many temporary files of earlier, killed runs were removed (nothing if none)."""
    if removed:
        files = plural(len(removed), "temporary file")
        show("Removed {} {} of earlier, interrupted runs (e.g. {})", len(removed), files, removed[0])


def report_plan(batch: BatchPlan, total: int, out_dir: Path) -> None:
    """Say which images are skipped as done, which get only their video, and which outputs are renamed."""
    plan, unrendered, images = batch.plan, batch.unrendered, plural(total, "image")
    if batch.done:
        n = batch.done
        show(
            "{} of {} {} already {} {} in {}/: skipped (--overwrite redoes {})",
            *(n, total, images, plural(n, "has", "have"), plural(n, "a complete output", "complete outputs")),
            *(out_dir, plural(n, "it", "them")),
        )
    if unrendered:
        n = len(unrendered)
        show(
            "{} of {} {} {} a complete output in {}/ but not the requested video or depth maps: "
            "predicting {} again to make those (the existing output is kept)",
            *(n, total, images, plural(n, "has", "have"), out_dir, plural(n, "it", "them")),
        )
    if plan.renamed:
        image, target = plan.renamed[0]
        show(
            "1 image shares its output name with another input (or an input is named like its output), or "
            "has a very long name: its output keeps the extension or gets a short hash"
            if len(plan.renamed) == 1
            else "{} images share their output name with another input (or an input is named like their "
            "output), or have very long names: their outputs keep the extension or get a short hash",
            *([] if len(plan.renamed) == 1 else [len(plan.renamed)]),
        )
        show("  e.g. {} -> {} (README: Output names)", image, target.name)
    if plan.clashes:
        image, held = plan.clashes[0]
        aside = dict(plan.todo + plan.done).get(image)
        show(
            "1 image is another photo than the one whose output already holds its name in {}/: that output "
            "is kept, and this one gets the content hash in its name"
            if len(plan.clashes) == 1
            else "{} images are other photos than the ones whose outputs already hold their names in {}/: "
            "those outputs are kept, and these get the content hash in their names",
            *([out_dir] if len(plan.clashes) == 1 else [len(plan.clashes), out_dir]),
        )
        show(
            "  e.g. {} -> {} ({} holds another photo's scene; README: Output names)",
            *(image, aside.name if aside else "-", held.name),
        )
