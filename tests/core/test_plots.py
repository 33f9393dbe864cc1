"""The plots adapters log: real PNGs drawn with Pillow, readable and honest on awkward input
(no features, NaN scores, hundreds of labels, long names), without matplotlib or FreeType."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")  # the extras that log plots install Pillow (MLflow does too)

from PIL import Image

import mltrail
from mltrail.recording.plots import (
    confusion_matrix_plot,
    history_plot,
    importance_plot,
    log_history,
    residual_plot,
)

BLUE, ORANGE, GREEN = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # the series' colours
DARKEST = (8, 48, 107)  # the confusion matrix's most frequent cell


def opened(path: Path) -> Image.Image:
    """The PNG at ``path``, checked to be a real picture of a readable size."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    assert 250 <= image.width <= 1200 and 120 <= image.height <= 1200, image.size
    pixels = np.asarray(image)
    assert (pixels[[0, 0, -1, -1], [0, -1, 0, -1]] == 255).all()  # on white
    assert (pixels[:36].max(axis=-1) < 80).any()  # a title in dark text
    return image


def pixels_of(image: Image.Image, color: tuple[int, int, int]) -> np.ndarray:
    """A boolean map of the pixels exactly of ``color``."""
    return (np.asarray(image) == color).all(axis=-1)


def bar_lengths(image: Image.Image, color: tuple[int, int, int]) -> list[int]:
    """The length in pixels of each horizontal bar of ``color``, from the top down."""
    mask = pixels_of(image, color)
    rows = mask.sum(axis=1)
    lengths, previous = [], 0
    for count in rows:
        if count and not previous:
            lengths.append(int(count))
        previous = count
    return lengths


def test_importance_bars_are_each_types_share_of_its_total(tmp_path: Path) -> None:
    scores = {
        "gain": {"a": 6.0, "b": 3.0, "c": 1.0},
        "weight": {"a": 1.0, "b": 1.0, "c": 2.0},
    }
    path = tmp_path / "importance.png"
    importance_plot(scores, path, "Feature importance")
    image = opened(path)
    legend_and_bars = bar_lengths(image, BLUE)
    gain = legend_and_bars[1:]  # the legend's square comes first
    assert len(gain) == 3  # a, b, c from the top: the first type orders the features
    assert gain[0] == pytest.approx(2 * gain[1], abs=2)  # 60% and 30%
    assert gain[1] == pytest.approx(3 * gain[2], abs=2)  # 30% and 10%
    weight = bar_lengths(image, ORANGE)[1:]
    assert weight[2] == pytest.approx(2 * weight[0], abs=2)  # c: 50%, a: 25%
    assert weight[0] == pytest.approx(gain[1] * 25 / 30, abs=2)  # one scale for both types


def test_importance_top_features_long_names_and_many_types(tmp_path: Path) -> None:
    names = [f"onehot__{'very_long_category_' * 4}{i}" for i in range(40)]
    scores = {kind: {name: float(i + 1) for i, name in enumerate(names)} for kind in "abcde"}
    path = tmp_path / "importance.png"
    importance_plot(scores, path, "A title far too long to fit in one line " * 4, top=20)
    image = opened(path)
    assert len(bar_lengths(image, GREEN)) == 1 + 20  # the legend and the top 20
    # The labels are shortened: the bars start where a shortened label's column ends.
    assert np.argmax(pixels_of(image, GREEN).any(axis=0)) < image.width / 2


@pytest.mark.parametrize(
    "scores",
    [
        {},
        {"gain": {}},
        {"gain": {"only": 2.0}},
        {"gain": {"a": float("nan"), "b": float("inf"), "c": 1.0}, "weight": {"a": -1.0}},
        {"gain": {"a": float("nan")}},
        {"gain": {"a": 0.0, "b": 0.0}},
        {"gain": {"a": "not a number", "b": None, "c": np.float32(2.5)}},  # type: ignore[dict-item]
    ],
    ids=["no-types", "no-features", "one", "nan-inf-negative", "all-nan", "all-zero", "odd-types"],
)
def test_importance_edge_cases_draw_a_picture(tmp_path: Path, scores) -> None:
    path = tmp_path / "importance.png"
    importance_plot(scores, path, "Feature importance")
    opened(path)


def test_importance_nan_scores_drawn_as_zero(tmp_path: Path) -> None:
    clean, with_nan = tmp_path / "clean.png", tmp_path / "nan.png"
    importance_plot({"gain": {"a": 3.0, "b": 1.0, "c": 0.0}}, clean, "t")
    importance_plot({"gain": {"a": 3.0, "b": 1.0, "c": float("nan")}}, with_nan, "t")
    # Same bars (NaN as 0), and the legend says so: the pictures differ in its text only.
    assert bar_lengths(opened(clean), BLUE) == bar_lengths(opened(with_nan), BLUE)
    assert with_nan.read_bytes() != clean.read_bytes()


def test_confusion_matrix_colours_by_count(tmp_path: Path) -> None:
    path = tmp_path / "cm.png"
    confusion_matrix_plot(np.array([[40, 2, 0], [3, 30, 5], [0, 1, 10]]), ["a", "b", "c"], path)
    image = np.asarray(opened(path)).astype(int)
    dark = pixels_of(Image.fromarray(image.astype(np.uint8)), DARKEST)
    top = int(np.nonzero(dark.any(axis=1))[0].min())
    cols = np.nonzero(dark[top])[0]
    left = int(cols.min())
    cell = int(np.argmax(np.diff(cols) > 1)) + 1  # the top-left cell, then the colour scale
    assert 24 <= cell <= 100

    def colour(row: int, col: int) -> np.ndarray:  # a corner of the cell, away from its text
        return image[top + row * cell + 3, left + col * cell + 3]

    assert tuple(colour(0, 0)) == DARKEST  # 40: the most
    assert tuple(colour(0, 2)) == (247, 251, 255)  # 0: white-ish
    brightness = [colour(k, k).sum() for k in range(3)]  # 40, 30, 10 down the diagonal
    assert brightness[0] < brightness[1] < brightness[2] < colour(2, 1).sum()  # then 1


def test_confusion_matrix_counts_are_written_up_to_twenty_labels(tmp_path: Path) -> None:
    def text_in_cells(size: int) -> int:
        path = tmp_path / f"cm-{size}.png"
        confusion_matrix_plot(np.full((size, size), 7), list(range(size)), path)
        dark = pixels_of(opened(path), DARKEST)  # every cell is the darkest colour
        cols = np.nonzero(dark.any(axis=0))[0]
        right = cols[np.argmax(np.diff(cols) > 1)]  # the matrix, not the colour scale
        rows = np.nonzero(dark[:, cols.min()])[0]
        cells = dark[rows.min() : rows.max() + 1, cols.min() : right + 1]
        return int((~cells).sum())  # pixels of the counts written in them

    assert text_in_cells(20) > 20 * 20 * 10
    assert text_in_cells(21) == 0


@pytest.mark.parametrize("size", [0, 1, 300, 1000])  # 1000: more labels than pixels
def test_confusion_matrix_sizes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "cm.png"
    rng = np.random.default_rng(0)
    labels = [f"a rather long class name {i}" for i in range(size)]
    confusion_matrix_plot(rng.integers(0, 9, (size, size)), labels, path)
    opened(path)


def test_confusion_matrix_odd_input(tmp_path: Path) -> None:
    path = tmp_path / "cm.png"
    matrix = np.array([[0.5, np.nan], [np.inf, 0.25]])  # normalised, with holes
    confusion_matrix_plot(matrix, ["x"], path)  # fewer labels than rows
    opened(path)


def test_residuals_scattered_around_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=20_000)
    y_pred = y_true + rng.normal(scale=0.1, size=y_true.size)
    y_true[:5] = np.nan
    path = tmp_path / "residuals.png"
    residual_plot(y_true, y_pred, path, max_points=1000)
    image = np.asarray(opened(path)).astype(int)
    bluish = (image[..., 2] > image[..., 0] + 40) & (image[..., 2] > 150)
    rows = np.nonzero(bluish.any(axis=1))[0]
    black = (image.max(axis=-1) < 60).sum(axis=1)
    zero_line = int(np.argmax(black))  # the longest dark line across: residual 0
    assert rows.min() < zero_line < rows.max()  # points on both sides of it


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        ([], []),
        ([1.0], [1.0]),
        ([np.nan, np.inf], [1.0, 2.0]),
        ([[1, 2], [3, 4]], [[1, 2], [3, 5]]),
    ],
    ids=["empty", "one", "none-finite", "two-outputs"],
)
def test_residuals_edge_cases(tmp_path: Path, y_true, y_pred) -> None:
    path = tmp_path / "residuals.png"
    residual_plot(y_true, y_pred, path)
    opened(path)


def test_history_plot_best_so_far(tmp_path: Path) -> None:
    points = [(0, 5.0), (1, 7.0), (2, 2.0), (3, float("nan")), (4, 3.0), (6, 1.0)]
    minimize, maximize = tmp_path / "min.png", tmp_path / "max.png"
    history_plot(points, minimize, "Optimization history of s")
    history_plot(points, maximize, "Optimization history of s", maximize=True)
    low, high = opened(minimize), opened(maximize)
    # The best-so-far line: it steps down when minimising and up when maximising.
    for image, falls in ((low, True), (high, False)):
        line = pixels_of(image, ORANGE)
        line[:60] = False  # not the legend
        cols = np.nonzero(line.any(axis=0))[0]
        first = np.nonzero(line[:, cols.min()])[0].mean()
        last = np.nonzero(line[:, cols.max()])[0].mean()
        assert bool(last > first) == falls  # image rows grow downwards
    for points in ([], [(0, float("inf"))], [(3, 1.0)], [(0, None), (1, 2.0)]):
        path = tmp_path / "edge.png"
        history_plot(points, path, "t")
        opened(path)


def test_plots_draw_without_matplotlib_or_freetype(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        sys.modules["matplotlib"] = None  # importing it would fail
        if sys.argv[2] == "no-freetype":
            sys.modules["PIL._imagingft"] = None  # a Pillow built without FreeType
        from PIL import ImageFont
        from mltrail.recording import plots
        out = Path(sys.argv[1])
        plots.preload_matplotlib()
        names = {"特征_" + "x" * 40: 2.0, "é": 1.0}
        plots.importance_plot({"gain": names}, out / "importance.png", "Importance ✓")
        plots.confusion_matrix_plot([[1, 2], [3, 4]], ["猫", "dog"], out / "cm.png")
        plots.residual_plot([1.0, 2.0, 3.0], [1.1, 1.9, 3.2], out / "residuals.png")
        plots.history_plot([(0, 1.0), (1, 0.5)], out / "history.png", "History")
        freetype = isinstance(plots._font(12), ImageFont.FreeTypeFont)
        loaded = [name for name, module in sys.modules.items() if "matplotlib" in name and module]
        print(bool(loaded), freetype)
        """
    )
    for mode in ("plain", "no-freetype"):
        out = tmp_path / mode
        out.mkdir()
        result = subprocess.run(
            [sys.executable, "-c", script, str(out), mode], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["False", str(mode == "plain")]
        for name in ("importance", "cm", "residuals", "history"):
            opened(out / f"{name}.png")


def test_without_pillow_the_caller_gets_an_import_error(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        sys.modules["PIL"] = None  # Pillow is not installed
        from mltrail.recording import plots
        plots.preload_matplotlib()  # harmless
        try:
            plots.importance_plot({"gain": {"a": 1.0}}, Path(sys.argv[1]), "t")
        except ImportError:
            print("ImportError")
        """
    )
    path = tmp_path / "importance.png"
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ImportError"
    assert not path.exists()


def test_an_optimisation_history_is_logged_as_a_png(client, monkeypatch) -> None:
    points = [(0, 3.0), (1, 1.0), (2, 2.0)]
    with mltrail.start_run(experiment="plots", capture=False) as trail:
        log_history(trail, iter(points), "demo/optimization_history", "History of s")
    local = client.download_artifacts(trail.run_id, "demo/optimization_history.png")
    opened(Path(local))
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    warned = pytest.warns(mltrail.MltrailWarning, match="demo: plotting the optimization history")
    with warned, mltrail.start_run(experiment="plots", capture=False) as trail:
        log_history(trail, [("not a trial number", 1.0)], "demo/optimization_history", "t")
