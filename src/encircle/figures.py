"""Figures of a run: ROC, score histograms, output spaces, confusion matrices, curves.

Every ``plot_*`` function takes the PNG path first and the data as NumPy arrays or torch
tensors, draws one figure with matplotlib's Agg canvas (no pyplot, no global backend
switch, no display needed), writes it atomically and returns the path. matplotlib is the
``plot`` extra: it is imported on first use, and a missing install raises
:class:`~encircle.errors.ConfigError` naming ``pip install encircle[plot]``.

:func:`write_run_figures` draws every figure a run directory supports (its
``results.json`` history and its ``artifacts/*.npz``, see
:mod:`encircle.artifacts`) into ``RUN/figures/``.

The two pieces of math are exact and tested: :func:`roc_curve` (OOD / unknown is the
positive class; equal to ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``) and
:func:`pca_2d` (principal axes from an SVD of the centered data).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from encircle._io import atomic_open
from encircle.artifacts import Artifacts, load_artifacts
from encircle.errors import ConfigError, DataError
from encircle.metrics import as_is_ood, auroc, confusion_matrix

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURES_DIR = "figures"
"""The folder of a run directory that :func:`write_run_figures` writes to."""

IN_COLOR, OUT_COLOR, CENTER_COLOR = "#1f77b4", "#d62728", "black"
_DPI = 100

History = Sequence[Mapping[str, Any]]


def plotting_available() -> bool:
    """Whether matplotlib (the ``plot`` extra) can be imported."""
    try:
        _matplotlib()
    except ConfigError:
        return False
    return True


# ------------------------------------------------------------------------------- math


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact ROC curve; **OOD / unknown / anomaly is the positive class**.

    A sample is flagged when its score is ``>= threshold``. There is one point per
    distinct score (tied scores form one point), from the highest threshold down, after a
    first point ``(0, 0)`` at threshold ``+inf``: the output of
    ``sklearn.metrics.roc_curve(is_ood, scores, drop_intermediate=False)``.

    Args:
        scores: ``(N,)`` finite real scores, higher = more anomalous.
        labels: ``(N,)`` integer labels (``-1`` = OOD, ``>= 0`` = a known class) or
            booleans (``True`` = OOD); both kinds of sample must be present.

    Returns:
        ``(fpr, tpr, thresholds)``: float64 arrays of equal length, fpr and tpr rising
        from 0 to 1, thresholds falling from ``inf``.

    Raises:
        DataError: on shapes or dtypes other than the above, non-finite scores, or only
            one kind of sample.
    """
    s = _vector(scores, "scores").astype(np.float64)
    positive = _is_ood(labels, len(s))
    n_pos = int(positive.sum())
    n_neg = len(s) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"labels must hold both OOD and in-distribution samples, got {n_pos} OOD of {len(s)}")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tps = np.cumsum(positive[order])[last_of_tie]
    fps = last_of_tie + 1 - tps
    fpr = np.r_[0, fps] / n_neg
    tpr = np.r_[0, tps] / n_pos
    return fpr.astype(np.float64), tpr.astype(np.float64), np.r_[np.inf, s_sorted[last_of_tie]]


@dataclass(frozen=True)
class Projection:
    """A linear map to 2-D: ``(x - mean) @ components.T``."""

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    def transform(self, x: Any) -> np.ndarray:
        """Project ``(N, D)`` points (``D`` as fitted) to ``(N, 2)``."""
        points = _matrix(x, "x", cols=self.mean.shape[0]).astype(np.float64)
        return (points - self.mean) @ self.components.T


def pca_2d(x: Any) -> Projection:
    """The first two principal axes of ``x``, from an SVD of the centered data.

    ``x - mean = U S V^T``; the components are the first two rows of ``V^T`` (the
    directions of largest variance), each signed so that its largest-magnitude
    coordinate is positive (a deterministic choice; PCA fixes axes only up to sign).
    ``explained`` holds the shares of the total variance of the two axes.

    Args:
        x: ``(N, D)`` finite points with ``N >= 2`` and ``D >= 2``.

    Raises:
        DataError: on any other shape or non-finite values.
    """
    points = _matrix(x, "x").astype(np.float64)
    if points.shape[0] < 2 or points.shape[1] < 2:
        raise DataError(f"x must have shape (N, D) with N >= 2 and D >= 2 for a 2-D projection, got {points.shape}")
    mean = points.mean(axis=0)
    _, singular, vt = np.linalg.svd(points - mean, full_matrices=False)
    components = vt[:2].copy()
    rows = np.arange(2)
    components *= np.sign(components[rows, np.abs(components).argmax(axis=1)])[:, None]
    total = float((singular**2).sum())
    explained = singular[:2] ** 2 / total if total > 0 else np.zeros(2)
    return Projection(mean, components, explained)


# ---------------------------------------------------------------------------- figures


def plot_roc(path: str | Path, curves: Mapping[str, tuple[Any, Any]]) -> Path:
    """ROC curves (OOD / unknown positive), one per ``name -> (scores, labels)``, with AUROC."""
    if not curves:
        raise DataError("curves must hold at least one name -> (scores, labels) pair, got none")
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(scores, labels)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUROC {auroc(_tensor(scores), _tensor(labels)):.4f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (in-distribution flagged)")
    ax.set(ylabel="true positive rate (OOD / unknown flagged)", title="ROC, OOD / unknown = positive")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_score_histogram(path: str | Path, scores: Any, labels: Any, *, threshold: float | None = None) -> Path:
    """Histograms of the in-distribution and the OOD scores, each normalised to sum to 1.

    Scores spanning more than two orders of magnitude (all positive) get log-spaced bins.
    """
    s = _vector(scores, "scores").astype(np.float64)
    is_ood = _is_ood(labels, len(s))
    log_x = bool(s.min() > 0 and s.max() / s.min() > 100)
    edges = np.geomspace(s.min(), s.max(), 51) if log_x else np.histogram_bin_edges(s, bins=50)
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot()
    for mask, color, name in ((~is_ood, IN_COLOR, "in-distribution / known"), (is_ood, OUT_COLOR, "OOD / unknown")):
        if mask.any():
            part = s[mask]
            ax.hist(
                part,
                bins=edges.tolist(),
                weights=np.full(len(part), 1 / len(part)),
                color=color,
                alpha=0.55,
                label=f"{name} (n={len(part)})",
            )
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.4g}")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="score (higher = more anomalous)", ylabel="share of the set", title="Score distributions")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_output_space(path: str | Path, embeddings: Any, labels: Any, center: Any, radius: float) -> Path:
    """A 2-D output space: in / OOD points, the center and the circle of radius ``radius``.

    The view covers the circle and 99% of the points; points outside it are counted in
    the title.
    """
    points = _matrix(embeddings, "embeddings", cols=2).astype(np.float64)
    is_ood = _is_ood(labels, len(points))
    c = _vector(center, "center").astype(np.float64)
    if c.shape != (2,):
        raise DataError(f"center must have shape (2,), got {c.shape}")
    if not math.isfinite(radius) or radius < 0:
        raise DataError(f"radius must be a finite number >= 0, got {radius}")
    offsets = np.abs(points - c).max(axis=1)
    half = 1.08 * max(radius, float(np.quantile(offsets, 0.99)), 1e-12)
    hidden = int((offsets > half).sum())
    fig = _figure(6.0, 6.0)
    ax = fig.add_subplot()
    for mask, color, name in ((~is_ood, IN_COLOR, "in-distribution"), (is_ood, OUT_COLOR, "OOD")):
        if mask.any():
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=5,
                alpha=0.45,
                color=color,
                lw=0,
                label=f"{name} (n={int(mask.sum())})",
            )
    mpl = _matplotlib()
    ax.add_patch(
        mpl.patches.Circle(
            tuple(c), radius, fill=False, color=CENTER_COLOR, ls="--", lw=1.5, label=f"radius {radius:.4g}"
        )
    )
    ax.scatter([c[0]], [c[1]], marker="x", s=80, color=CENTER_COLOR, lw=2.5, label="center", zorder=3)
    ax.set(xlim=(c[0] - half, c[0] + half), ylim=(c[1] - half, c[1] + half), aspect="equal")
    title = "2-D output space"
    ax.set_title(f"{title} ({hidden} points outside the view)" if hidden else title)
    _legend(ax, loc="upper right")
    return _save(fig, path)


def plot_embeddings(
    path: str | Path,
    embeddings: Any,
    labels: Any,
    centers: Any = None,
    *,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Embeddings coloured by class (unknown in grey) with their centers, in 2-D.

    ``D == 2`` is drawn as is; larger ``D`` is projected with :func:`pca_2d` fitted on the
    embeddings (the centers go through the same projection).
    """
    points = _matrix(embeddings, "embeddings").astype(np.float64)
    y = _class_ids(labels, "labels", len(points))
    dim = points.shape[1]
    if dim < 2:
        raise DataError(f"embeddings must have D >= 2 dimensions to draw, got shape {points.shape}")
    ctr = None if centers is None else _matrix(centers, "centers", cols=dim).astype(np.float64)
    if dim == 2:
        axes: tuple[str, ...] = ("dimension 1", "dimension 2")
        xy, cxy = points, ctr
    else:
        projection = pca_2d(points)
        xy = projection.transform(points)
        cxy = None if ctr is None else projection.transform(ctr)
        axes = tuple(f"PC{i + 1} ({100 * v:.1f}% of variance)" for i, v in enumerate(projection.explained))
    fig = _figure(6.5, 6.0)
    ax = fig.add_subplot()
    cmap = _matplotlib().colormaps["tab10"]
    if (y < 0).any():
        ax.scatter(xy[y < 0, 0], xy[y < 0, 1], s=5, alpha=0.35, color="grey", lw=0, label="unknown")
    for k in np.unique(y[y >= 0]):
        ax.scatter(
            xy[y == k, 0],
            xy[y == k, 1],
            s=5,
            alpha=0.5,
            color=cmap(int(k) % 10),
            lw=0,
            label=_class_name(int(k), class_names),
        )
    if cxy is not None:
        ax.scatter(
            cxy[:, 0], cxy[:, 1], marker="X", s=110, color=CENTER_COLOR, edgecolor="white", label="centers", zorder=3
        )
        for k, (cx, cy) in enumerate(cxy):
            ax.annotate(_class_name(k, class_names), (cx, cy), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set(xlabel=axes[0], ylabel=axes[1], title="Embeddings" + (" (PCA)" if dim > 2 else ""))
    _legend(ax, loc="best", ncol=2)
    return _save(fig, path)


def plot_confusion_matrix(
    path: str | Path, predictions: Any, labels: Any, *, class_names: Sequence[str] | None = None
) -> Path:
    """Open-set confusion matrix (rows = true, columns = predicted) with counts.

    Known classes are ``0..K-1`` and ``-1`` is the extra "unknown" row and column; ``K``
    is ``len(class_names)`` when given, else one more than the largest class id.
    """
    pred = _class_ids(predictions, "predictions")
    true = _class_ids(labels, "labels", len(pred))
    k = len(class_names) if class_names else max(int(pred.max()), int(true.max()), 0) + 1
    cm = confusion_matrix(_tensor(pred), _tensor(true), k).numpy()
    names = [_class_name(i, class_names) for i in range(k)] + ["unknown"]
    size = min(max(4.5, 0.42 * (k + 1) + 1.6), 10.0)  # shown about 450 px wide: keep the counts legible
    fontsize = 10 if k < 6 else 8 if k < 12 else 6
    fig = _figure(size, size * 0.95)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    peak = max(int(cm.max()), 1)
    for (i, j), count in np.ndenumerate(cm):
        color = "white" if count > peak / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(k + 1), names, rotation=45, ha="right", fontsize=fontsize + 1)
    ax.set_yticks(range(k + 1), names, fontsize=fontsize + 1)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    return _save(fig, path)


def plot_training_curves(path: str | Path, history: History | Mapping[str, History]) -> Path:
    """Loss and every ``*auroc`` key per epoch, one line per history.

    ``history`` is a list of per-epoch records (``epoch``, ``loss``, ...) or a mapping of
    names to such lists (several trainings, as ``oneclass`` keeps).
    """
    runs = _histories(history)
    if not runs:
        raise DataError("history must be a non-empty list of per-epoch dicts (or a mapping of names to such lists)")
    panels = _curve_keys(runs)
    if not panels:
        raise DataError("history must hold a 'loss' or a '*auroc' value in at least one record, got neither")
    fig = _figure(5.0 * len(panels), 4.0)
    for i, key in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, records in runs.items():
            x, v = _series(records, key)
            if v.size:
                ax.plot(x, v, marker="o" if len(v) < 30 else None, ms=3, lw=1.3, label=name or None)
        if key == "loss":
            _log_scale_if_wide(ax, runs)
        ax.set(xlabel="epoch", ylabel=key, title=key)
        ax.grid(alpha=0.3)
        if 1 < len(runs) <= 12:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_prediction_grid(
    path: str | Path,
    images: Any,
    predictions: Any,
    scores: Any,
    *,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    columns: int = 8,
) -> Path:
    """Images captioned with their predicted class (or "unknown") and score.

    With ``labels`` the caption is green where the prediction is right (an unknown
    sample predicted "unknown" is right) and red where it is wrong.
    """
    imgs = _numpy(images, "images")
    if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[1] not in (1, 3) or imgs.shape[0] == 0:
        raise DataError(f"images must be uint8 (M, C, H, W) with M >= 1, C = 1 or 3, got {imgs.dtype} {imgs.shape}")
    m = imgs.shape[0]
    pred = _class_ids(predictions, "predictions", m)
    s = _vector(scores, "scores", m)
    true = None if labels is None else _class_ids(labels, "labels", m)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise DataError(f"columns must be an integer >= 1, got {columns!r}")
    cols = min(columns, m)
    rows = math.ceil(m / cols)
    fig = _figure(1.6 * cols, 1.85 * rows)
    for i in range(m):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = imgs[i]
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
        name = "unknown" if pred[i] < 0 else _class_name(int(pred[i]), class_names)
        color = "black" if true is None else ("#1a7f37" if pred[i] == true[i] else "#cf222e")
        ax.set_title(f"{name}\n{s[i]:.3g}", fontsize=9, color=color)
        ax.set_axis_off()
    fig.suptitle("Predictions (class or unknown) and scores", fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------ run figures


def write_run_figures(out_dir: str | Path) -> list[Path]:
    """Draw every figure the run directory supports into ``out_dir/figures/``.

    From ``results.json``'s ``history`` (or ``history.jsonl``): ``training.png``. From the
    artifacts (:func:`~encircle.artifacts.load_artifacts`): ``roc.png`` (one
    curve per artifact set with both kinds of sample) and, per set ``NAME``,
    ``NAME_scores.png``, ``NAME_output_space.png`` (2-D embeddings, one center and a
    radius) or ``NAME_embeddings.png`` (otherwise, with embeddings), ``NAME_confusion.png``
    (with predictions) and ``NAME_predictions.png`` (with images and predictions).

    Returns:
        The paths written, in that order.

    Raises:
        DataError: ``out_dir`` is not a directory, or its ``results.json``,
            ``history.jsonl`` or artifacts are unreadable.
        ConfigError: matplotlib is not installed.
    """
    run = Path(out_dir)
    if not run.is_dir():
        raise DataError(f"out_dir must be an existing run directory, got {str(run)!r}")
    figures = run / FIGURES_DIR
    written: list[Path] = []
    history = _run_history(run)
    if _curve_keys(_histories(history)):
        written.append(plot_training_curves(figures / "training.png", history))
    artifacts = load_artifacts(run)
    both = {n: (a.scores, a.labels) for n, a in artifacts.items() if 0 < int((a.labels < 0).sum()) < len(a.labels)}
    if both:
        written.append(plot_roc(figures / "roc.png", both))
    for name, art in artifacts.items():
        written.extend(_artifact_figures(figures, name, art, name in both))
    return written


def _artifact_figures(figures: Path, name: str, art: Artifacts, has_both: bool) -> list[Path]:
    written = []
    if has_both:
        written.append(
            plot_score_histogram(figures / f"{name}_scores.png", art.scores, art.labels, threshold=art.threshold)
        )
    emb, centers = art.embeddings, art.centers
    if emb is not None and emb.shape[1] == 2 and centers is not None and len(centers) == 1 and art.radius is not None:
        written.append(plot_output_space(figures / f"{name}_output_space.png", emb, art.labels, centers[0], art.radius))
    elif emb is not None and emb.shape[1] >= 2 and len(emb) >= 2:
        written.append(
            plot_embeddings(figures / f"{name}_embeddings.png", emb, art.labels, centers, class_names=art.class_names)
        )
    if art.predictions is not None:
        written.append(
            plot_confusion_matrix(
                figures / f"{name}_confusion.png", art.predictions, art.labels, class_names=art.class_names
            )
        )
        if art.images is not None and art.image_index is not None:
            idx = art.image_index
            written.append(
                plot_prediction_grid(
                    figures / f"{name}_predictions.png",
                    art.images,
                    art.predictions[idx],
                    art.scores[idx],
                    labels=art.labels[idx],
                    class_names=art.class_names,
                )
            )
    return written


def _run_history(run: Path) -> Any:
    """``results.json``'s ``history``, else the records of ``history.jsonl``, else ``[]``."""
    results = run / "results.json"
    if results.is_file():
        try:
            data = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{str(results)!r} is not readable JSON: {exc}") from None
        if isinstance(data, dict) and "history" in data:
            return data["history"]
    jsonl = run / "history.jsonl"
    if jsonl.is_file():
        try:
            return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{str(jsonl)!r} is not readable JSON lines: {exc}") from None
    return []


# ---------------------------------------------------------------------------- helpers


def _matplotlib() -> Any:
    """The matplotlib package (with ``patches``, ``figure`` and the Agg canvas loaded)."""
    try:
        import matplotlib
        import matplotlib.backends.backend_agg
        import matplotlib.figure
        import matplotlib.patches
    except ImportError as exc:
        raise ConfigError(
            f"figures need matplotlib, which is not installed ({exc}): pip install encircle[plot]"
        ) from None
    return matplotlib


def _figure(width: float, height: float) -> Figure:
    mpl = _matplotlib()
    fig = mpl.figure.Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    mpl.backends.backend_agg.FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` as PNG in memory, then write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    target = Path(path)
    with atomic_open(target, "wb") as handle:
        handle.write(buffer.getvalue())
    return target


def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise DataError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _tensor(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(_numpy(x, "array")))


def _vector(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """A 1-D, non-empty, finite real array (of length ``n`` when given)."""
    v = _numpy(x, name)
    if v.ndim != 1 or v.dtype.kind not in "biuf" or v.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 1-D array of real numbers, got {v.dtype} {v.shape}")
    if n is not None and v.shape[0] != n:
        raise DataError(f"{name} must have {n} entries (one per sample), got {v.shape[0]}")
    if not np.isfinite(v).all():
        raise DataError(f"{name} must be finite, got {int((~np.isfinite(v)).sum())} NaN or infinite value(s)")
    return v


def _matrix(x: Any, name: str, cols: int | None = None) -> np.ndarray:
    """A 2-D, non-empty, finite real array (with ``cols`` columns when given)."""
    m = _numpy(x, name)
    if m.ndim != 2 or m.dtype.kind not in "biuf" or m.shape[0] == 0 or (cols is not None and m.shape[1] != cols):
        want = f"(N, {cols})" if cols is not None else "(N, D)"
        raise DataError(f"{name} must be a non-empty real array of shape {want}, got {m.dtype} {m.shape}")
    if not np.isfinite(m).all():
        raise DataError(f"{name} must be finite, got {int((~np.isfinite(m)).sum())} NaN or infinite value(s)")
    return m


def _is_ood(labels: Any, n: int) -> np.ndarray:
    """Boolean ``is_ood`` (``-1`` or ``True`` = OOD) of length ``n``."""
    is_ood = as_is_ood(_tensor(_numpy(labels, "labels"))).numpy()
    if is_ood.shape[0] != n:
        raise DataError(f"labels must have {n} entries (one per sample), got {is_ood.shape[0]}")
    return is_ood


def _class_ids(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """Integer class ids ``>= -1`` (``-1`` = unknown), non-empty, of length ``n`` when given."""
    v = _numpy(x, name)
    if v.ndim != 1 or v.dtype.kind not in "iu" or v.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 1-D array of integer class ids, got {v.dtype} {v.shape}")
    if n is not None and v.shape[0] != n:
        raise DataError(f"{name} must have {n} entries (one per sample), got {v.shape[0]}")
    if int(v.min()) < -1:
        raise DataError(f"{name} must be -1 (unknown) or a class id >= 0, got {int(v.min())}")
    return v.astype(np.int64)


def _legend(ax: Axes, **kwargs: Any) -> None:
    """A legend whose scatter markers share one readable size."""
    legend = ax.legend(fontsize=8, **kwargs)
    for handle in legend.legend_handles:
        if handle is not None and hasattr(handle, "set_sizes"):
            handle.set_sizes([30])
            handle.set_alpha(1)


def _class_name(k: int, class_names: Sequence[str] | None) -> str:
    return class_names[k] if class_names is not None and k < len(class_names) else str(k)


def _histories(history: Any) -> dict[str, list[Mapping[str, Any]]]:
    """``{"": records}`` for a list of records, ``{name: records}`` for a mapping; else ``{}``."""

    def records(value: Any) -> list[Mapping[str, Any]]:
        if isinstance(value, list | tuple) and value and all(isinstance(r, Mapping) for r in value):
            return list(value)
        return []

    if isinstance(history, Mapping):
        return {str(k): records(v) for k, v in history.items() if records(v)}
    return {"": records(history)} if records(history) else {}


def _curve_keys(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """``loss`` and the ``*auroc`` keys that hold a number in at least one record."""
    keys = ["loss", *sorted({k for records in runs.values() for r in records for k in r if k.endswith("auroc")})]
    return [k for k in keys if any(_series(records, k)[1].size for records in runs.values())]


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the records holding a finite number under ``key``."""
    xs, vs = [], []
    for i, r in enumerate(records):
        value = r.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            epoch = r.get("epoch")
            xs.append(epoch if isinstance(epoch, int | float) and not isinstance(epoch, bool) else i + 1)
            vs.append(float(value))
    return np.asarray(xs, dtype=np.float64), np.asarray(vs, dtype=np.float64)


def _log_scale_if_wide(ax: Axes, runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Log y for a positive loss spanning more than two orders of magnitude."""
    values = np.concatenate([_series(records, "loss")[1] for records in runs.values()])
    if values.size and values.min() > 0 and values.max() / values.min() > 100:
        ax.set_yscale("log")
