"""Pruning (``--max-gaussians`` / ``--prune``): counts, importance, merging, the CLI and the Python API.

Render quality against splat-transform's decimation is measured in benchmarks/prune.py
(docs/benchmarks.md), not asserted here.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import DATA
from test_writers import ATTRS
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime import prune
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.ply import read_ply
from sharp_rt.runtime.prune import (
    footprint_scores,
    importance,
    kept_count,
    prune_gaussians,
    reduce_gaussians,
    transmittance,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def golden() -> Gaussians:
    with np.load(DATA / "tiny_coffee_seed0.npz") as z:
        height, width = (int(v) for v in z["image_hw"])
        return Gaussians(
            *(z[f"metric_{a}"] for a in ATTRS), f_px=float(z["f_px"]), image_size=(width, height)
        )


def scene(means, scales, opacities, colors=None) -> Gaussians:
    """Axis-aligned Gaussians seen by a 100 px camera with a 200 x 200 image."""
    n = len(means)
    q = np.tile(np.float32([1, 0, 0, 0]), (n, 1))
    colors = np.full((n, 3), 0.5, np.float32) if colors is None else np.float32(colors)
    return Gaussians(
        np.float32(means),
        np.float32(scales),
        q,
        colors,
        np.float32(opacities),
        f_px=100.0,
        image_size=(200, 200),
    )


def test_kept_count_and_its_errors():
    assert kept_count(1000) == 1000
    assert kept_count(1000, max_gaussians=300) == 300
    assert kept_count(1000, max_gaussians=5000) == 1000
    assert kept_count(1000, prune=0.25) == 750
    assert kept_count(1000, max_gaussians=600, prune=0.25) == 600
    for bad in ({"max_gaussians": 0}, {"max_gaussians": -3}, {"prune": 1.0}, {"prune": -0.1}):
        with pytest.raises(SharpError):
            kept_count(1000, **bad)


def test_footprint_is_opacity_times_projected_area():
    g = scene([[0, 0, 1], [0, 0, 2], [0, 0, 1], [0, 0, -1]], [[0.01] * 3] * 4, [1.0, 1.0, 0.5, 1.0])
    scores = footprint_scores(g)
    # sigma = 0.01 m at 1 m and 100 px: 1 px, area (sqrt det) 1 + 0.3; at 2 m: 0.25 + 0.3.
    np.testing.assert_allclose(scores[:3], [1.3, 0.55, 0.65], rtol=1e-6)
    assert scores[3] == 0  # behind the camera


def test_transmittance_dims_what_is_behind_an_opaque_gaussian():
    g = scene([[0, 0, 2], [0, 0, 1], [0.5, 0, 1]], [[0.01] * 3] * 3, [0.6, 0.75, 0.9])
    light = transmittance(g)
    np.testing.assert_allclose(light, [0.25, 1.0, 1.0])  # the first is behind the second
    assert importance(g)[0] < importance(g, occlusion=False)[0]


def test_transmittance_does_not_dim_gaussians_side_by_side_in_one_pixel():
    # Centres 0.4 px apart in one pixel at the same depth (and 0.5 % deeper): side by side, not
    # one behind the other; a third 30 % deeper is behind both.
    g = scene([[0, 0, 1], [0.004, 0, 1], [0.002, 0, 1.005], [0.002, 0, 1.3]], [[0.01] * 3] * 4, [0.5] * 4)
    np.testing.assert_allclose(transmittance(g), [1.0, 1.0, 1.0, 0.125])


def test_select_keeps_the_most_important_in_their_order():
    big, small, faint = [0.05] * 3, [0.01] * 3, [0.05] * 3
    g = scene(
        [[0, 0, 1], [0.3, 0, 1], [-0.3, 0, 1], [0, 0.3, 1]], [big, small, faint, big], [0.9, 0.9, 0.05, 0.8]
    )
    kept = prune_gaussians(g, max_gaussians=2, method="select")
    np.testing.assert_array_equal(kept.mean_vectors, g.mean_vectors[[0, 3]])


def test_merging_a_gaussian_and_one_just_behind_it_keeps_coverage_and_the_colour_the_photo_shows():
    # Red in front of blue (3 cm behind it at 1 m), 50 % opaque each: the photo's view shows
    # 0.5 red over 0.25 blue, 75 % coverage; the merged Gaussian shows the same.
    g = scene(
        [[0, 0, 1], [0, 0, 1.03], [0.5, 0.5, 2]],
        [[0.02] * 3] * 3,
        [0.5, 0.5, 0.9],
        [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
    )
    merged = reduce_gaussians(g, 2)
    assert len(merged) == 2
    np.testing.assert_allclose(merged.mean_vectors[0, :2], [0, 0], atol=1e-7)
    assert 1.0 < merged.mean_vectors[0, 2] < 1.012  # nearer the visible (front) member
    # Weights: opacity x footprint (sqrt det, px^2: (2 px / z)^2 + 0.3) x light reaching it.
    red, blue = 0.5 * 4.3, 0.5 * (4 / 1.03**2 + 0.3) * 0.5
    np.testing.assert_allclose(merged.colors[0], [red / (red + blue), 0, blue / (red + blue)], atol=1e-3)
    np.testing.assert_allclose(np.sort(merged.singular_values[0])[:2], [0.02] * 2, rtol=1e-3)
    assert merged.opacities[0] == pytest.approx(0.75, abs=0.01)  # 1 - (1 - 0.5)^2: what the two drew
    np.testing.assert_array_equal(merged.mean_vectors[1], g.mean_vectors[2])  # untouched


def test_merging_a_hidden_gaussian_into_the_opaque_one_in_front_leaves_the_front_one_in_place():
    # An opaque Gaussian hides one 30 cm behind it in the photo's view: merging the two
    # must not pull the visible one back (merge weights are what the photo's view sees).
    g = scene([[0, 0, 1], [0, 0, 1.3]], [[0.02] * 3] * 2, [0.95, 0.95], [[1, 0, 0], [0, 0, 1]])
    merged = reduce_gaussians(g, 1)
    assert merged.mean_vectors[0, 2] < 1.02
    assert merged.colors[0, 0] > 0.95 and merged.colors[0, 2] < 0.05
    assert merged.opacities[0] == pytest.approx(0.9975, abs=0.01)  # what the two covered together


def test_merging_takes_the_pair_whose_merge_changes_the_image_least():
    # Two touching grey Gaussians, and two as close but red and green: merging the grey pair
    # changes the image least; the red and green ones stay as they were.
    g = scene(
        [[0, 0, 1], [0.01, 0, 1], [0.5, 0, 1], [0.51, 0, 1]],
        [[0.01] * 3] * 4,
        [0.6] * 4,
        [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0]],
    )
    merged = reduce_gaussians(g, 3)
    np.testing.assert_array_equal(merged.mean_vectors[1:], g.mean_vectors[2:])
    np.testing.assert_allclose(merged.mean_vectors[0], [0.005, 0, 1], atol=1e-6)


def test_rounds_below_half_merge_at_most_15_percent_from_more_candidates(golden, monkeypatch):
    # Below half the input (the L2 phase) a round removes at most L2_MERGED_PER_ROUND of the
    # Gaussians, the cheapest of the mutual-best pairs, from L2_ORDERINGS Z-curves of candidates.
    rounds = []
    original = prune._candidate_pairs

    def recording(e, round_number, orderings=prune.ORDERINGS):
        rounds.append((len(e), orderings))
        return original(e, round_number, orderings)

    monkeypatch.setattr(prune, "_candidate_pairs", recording)
    n, keep = len(golden), len(golden) // 10
    assert len(reduce_gaussians(golden, keep)) == keep
    above = {k for count, k in rounds if count > n // 2}
    below = [(count, k) for count, k in rounds if count <= n // 2]
    assert above == {prune.ORDERINGS} and {k for _, k in below} == {prune.L2_ORDERINGS}
    counts = [count for count, _ in below]
    for before, after in zip(counts, [*counts[1:], keep], strict=True):
        assert 0 < before - after <= max(1, int(0.15 * before)), (before, after)


def test_smaller_rounds_below_half_render_the_photo_view_closer_than_merging_every_mutual_pair(
    golden, monkeypatch
):
    # Merging every mutual-best pair per round (the previous L2 phase: rounds of up to 25 %, 3
    # Z-curves) keeps the photo's view less well at 10 % of the Gaussians than the default.
    from sharp_rt.render import Camera, Renderer

    width, height = golden.image_size
    camera = Camera.for_gaussians(golden, (width // 4, height // 4))
    reference = Renderer(golden, backend="torch", device="cpu").render(camera).image

    def error(g: Gaussians) -> float:
        image = Renderer(g, backend="torch", device="cpu").render(camera).image
        return float(np.mean((np.asarray(image, np.float64) - reference) ** 2))

    keep = len(golden) // 10
    default = error(reduce_gaussians(golden, keep))
    monkeypatch.setattr(prune, "L2_MERGED_PER_ROUND", 0.25)
    monkeypatch.setattr(prune, "L2_ORDERINGS", 3)
    assert default < error(reduce_gaussians(golden, keep))


def test_prune_returns_exactly_n_finite_gaussians_that_writers_take(tmp_path, golden):
    for method in ("merge", "select"):
        pruned = prune_gaussians(golden, max_gaussians=10_000, method=method)
        assert len(pruned) == 10_000
        for name in ATTRS:
            assert np.isfinite(getattr(pruned, name)).all(), (method, name)
        assert np.all(pruned.singular_values > 0) and np.all(
            (pruned.opacities >= 0) & (pruned.opacities <= 1)
        )
        assert (pruned.f_px, pruned.image_size) == (golden.f_px, golden.image_size)
    assert prune_gaussians(golden) is golden
    assert len(prune_gaussians(golden, prune=0.5)) == len(golden) // 2


def test_predict_refuses_bad_pruning_options_before_loading_an_engine(tmp_path):
    missing = tmp_path / "missing.pt"  # never opened: the options fail first
    for option, value, words in (
        ("--max-gaussians", "0", "positive"),
        ("--max-gaussians", "-5", "positive"),
        ("--prune", "1.5", "[0, 1)"),
    ):
        args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "-c", str(missing), option, value]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert (
            words in result.output and "Traceback" not in result.output and "missing.pt" not in result.output
        )


def test_predict_writes_n_gaussians_and_resumes(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["predict", str(DATA / "coffee.png"), "-o", str(out), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, "--max-gaussians", "5000", "--format", "sog"])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out / "coffee.sog") as archive:
        assert json.loads(archive.read("meta.json"))["count"] == 5000
    again = runner.invoke(app, [*args, "--max-gaussians", "5000", "--format", "sog"])
    assert again.exit_code == 0 and "already" in again.output
    result = runner.invoke(app, [*args, "--prune", "0.75"])
    assert result.exit_code == 0, result.output
    assert len(read_ply(out / "coffee.ply")) == 73_728 - 55_296


def test_predictor_prunes_every_result(tiny_checkpoint):
    from sharp_rt.predict.predictor import Predictor

    with Predictor.from_checkpoint(tiny_checkpoint, device="cpu") as predictor:
        predictor.max_gaussians = 1234
        assert len(predictor.predict(DATA / "coffee.png")) == 1234
    with pytest.raises(SharpError, match="positive"):
        Predictor(predictor.engine, max_gaussians=0)


def test_predictor_refuses_bad_pruning_options_before_inference(tiny_checkpoint):
    """A bad max_gaussians / prune, also one set after construction, fails at the call with
    ValueError / TypeError (ArgumentError / ArgumentTypeError), before the engine runs."""
    from sharp_rt.predict.predictor import Predictor

    image = np.zeros((48, 64, 3), np.uint8)
    with Predictor.from_checkpoint(tiny_checkpoint, device="cpu") as predictor:
        ran = []
        run_engine = predictor.run_engine
        predictor.run_engine = lambda prepared: ran.append(1) or run_engine(prepared)
        for name, value, error in (
            ("max_gaussians", 0, ValueError),
            ("max_gaussians", 2.5, TypeError),
            ("max_gaussians", "300000", TypeError),
            ("prune", 1.0, ValueError),
            ("prune", float("nan"), ValueError),
            ("prune", "0.5", TypeError),
        ):
            setattr(predictor, name, value)
            with pytest.raises(error):
                predictor.predict(image)
            with pytest.raises(error):
                predictor.predict_many([DATA / "coffee.png"])
            with pytest.raises(error):
                Predictor(predictor.engine, **{name: value})
            setattr(predictor, name, None)
        assert ran == []
        predictor.max_gaussians = 100
        assert len(predictor.predict(image)) == 100 and ran == [1]
