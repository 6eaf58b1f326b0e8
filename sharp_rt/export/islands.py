"""Growing float32 islands: the measured ranking of candidates and the rounds' arithmetic (issue 23).

Shared by the fp16 export (:mod:`sharp_rt.export.pipeline`) and the bf16 layouts
(:mod:`sharp_rt.export.precision_bf16`).  torch is imported only by :func:`measure_ranking`.
"""

from __future__ import annotations

from typing import Any

from sharp_rt.export.artifact import Stage


def measure_ranking(model, probes: list, stage: Stage, precision: str = "fp16") -> list[dict[str, Any]]:
    """Rank the candidate islands by measured fp16 (or bf16) sensitivity on all probe photos (one forward).

    bf16 also ranks the whole networks (:func:`~sharp_rt.export.precision.network_island_candidates`),
    after everything else; their rows carry ``"level": "network"``.
    """
    import numpy as np
    import torch

    from sharp_rt.export.precision import (
        coarse_island_candidates,
        island_candidates,
        network_island_candidates,
        rank_islands,
    )

    image = torch.from_numpy(np.concatenate([image for _, image, _ in probes]))
    factor = torch.from_numpy(np.concatenate([factor for _, _, factor in probes]))
    fine, coarse = island_candidates(model), coarse_island_candidates(model)
    networks = network_island_candidates(model) if precision == "bf16" else {}
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    with stage(f"sensitivity: {precision} error of each candidate island on the probes"):
        ranking = rank_islands(model, image, factor, {**fine, **coarse, **networks}, dtype)
    # the modules first (largest error first), then the whole parts (ViTs, decoders) in the same order,
    # then (bf16) the whole networks
    ranking = (
        [row for row in ranking if row["module"] in fine]
        + [row for row in ranking if row["module"] in coarse]
        + [{**row, "level": "network"} for row in ranking if row["module"] in networks]
    )
    return [{**row, "rank": rank} for rank, row in enumerate(ranking, start=1)]


def covered(path: str, islands) -> bool:
    """Whether ``path`` is one of ``islands`` or inside one."""
    return any(path == island or path.startswith(island + ".") for island in islands)


def next_islands(
    ranking: list[dict[str, Any]], islands: dict[str, str], count: int, max_islands: int | None, added: int
) -> list[dict[str, Any]]:
    """The next ``count`` ranked candidates not yet float32 (fewer at the cap ``max_islands``).

    Every candidate whose fp16 output was non-finite comes in at once, whatever ``count``.
    """
    left = [row for row in ranking if not covered(row["module"], islands)]
    leading_nonfinite = next((i for i, row in enumerate(left) if row["error"] != float("inf")), len(left))
    count = max(count, leading_nonfinite)
    if max_islands is not None:
        count = min(count, max_islands - added)
    return left[: max(count, 0)]


def with_islands(islands: dict[str, str], paths: list[str], ranking: list[dict[str, Any]]) -> dict[str, str]:
    """``islands`` plus ``paths``; an island inside a new one is dropped (the new one covers it)."""
    what = {row["module"]: row["what"] for row in ranking}
    kept = {path: text for path, text in islands.items() if not covered(path, paths)}
    # a new island inside another new one is dropped too: an island nested in an island would cast its
    # output back to the reduced dtype inside the float32 region
    paths = [path for path in paths if not any(other != path and covered(path, [other]) for other in paths)]
    return {**kept, **{path: f"{what[path]} (grown: measured fp16 sensitivity)" for path in paths}}
