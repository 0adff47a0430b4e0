"""Plotly figures for the course. Every helper takes tensors and labels and returns a figure
(tests read `fig.data`); the notebook displays it. Axis labels use TransformerLens's words.

Colour convention for every diverging plot in the course (scores, attributions, differences,
patching results): **positive = red, negative = blue, zero = white**, on a range symmetric around 0
(`zmin = -zmax`), so that the same colour means the same sign in every chapter. `DIVERGING_SCALE` is that
scale; `heatmap` (and `layer_head_grid`) use it unless called with `diverging=False`. Prose that names a
colour should say "red" for positive and "blue" for negative."""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
import torch


def setup_renderer() -> str:
    """Choose a plotly renderer that shows figures wherever a notebook is read, and return its name.

    - Colab: "colab".
    - Any other Jupyter kernel (JupyterLab, Notebook, VS Code, nbclient in CI): "plotly_mimetype+notebook".
      JupyterLab renders the plotly mimetype with its bundled extension (offline); the "notebook" part adds
      an HTML version of each figure, with plotly.js embedded once per notebook (no CDN), so that HTML
      exported from a headless run (`jupyter nbconvert --to html`) shows every figure. plotly's own default
      in a kernel is the mimetype alone, which static pages cannot show.
    - PLOTLY_RENDERER set, or not in a kernel (a script, a test, a grading worker): plotly's choice is kept, and
      made only when a figure is first shown (reading `pio.renderers` imports nbformat: about a second), and ""
      is returned.
    """
    in_kernel = "ipykernel" in sys.modules or "google.colab" in sys.modules
    if os.environ.get("PLOTLY_RENDERER") or not in_kernel:
        return ""
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
        pio.renderers.default = "colab"
    elif pio.renderers.default == "plotly_mimetype":
        pio.renderers.default = "plotly_mimetype+notebook"
    return pio.renderers.default


setup_renderer()


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return x


def _check_2d(values, what: str):
    values = to_numpy(values)
    if getattr(values, "ndim", None) != 2:
        raise ValueError(f"{what} needs a 2-D tensor (rows x columns); got shape {getattr(values, 'shape', None)}")
    return values


# ColorBrewer's RdBu reversed (blue at the bottom of the range, red at the top) with its centre set to pure
# white: value -zmax is dark blue, 0 white, +zmax dark red.
DIVERGING_SCALE = [[0.0, "rgb(5,48,97)"], [0.1, "rgb(33,102,172)"], [0.2, "rgb(67,147,195)"], [0.3, "rgb(146,197,222)"],
                   [0.4, "rgb(209,229,240)"], [0.5, "rgb(255,255,255)"], [0.6, "rgb(253,219,199)"],
                   [0.7, "rgb(244,165,130)"], [0.8, "rgb(214,96,77)"], [0.9, "rgb(178,24,43)"], [1.0, "rgb(103,0,31)"]]


def heatmap(values, x_labels: Sequence | None = None, y_labels: Sequence | None = None, title: str = "",
            x_title: str = "", y_title: str = "", diverging: bool = True, zmax: float | None = None,
            **kwargs) -> go.Figure:
    """A labelled heatmap.

    Diverging by default, for scores and differences: positive = red, negative = blue, 0 = white, on the
    symmetric range [-zmax, +zmax] (`zmax` defaults to the largest |value|; pass the same `zmax` to figures that
    should be compared). With `diverging=False` it is a plain sequential heatmap (pass `range_color`, or
    `zmin`/`zmax`, and a `color_continuous_scale` if you like)."""
    values = _check_2d(values, "heatmap")
    if diverging:
        for key in ("zmin", "range_color", "color_continuous_scale"):
            if key in kwargs:
                raise ValueError(f"a diverging heatmap is always blue (negative) - white (0) - red (positive) on "
                                 f"[-zmax, +zmax]: pass zmax, not {key} (or diverging=False)")
        zmax = abs(float(zmax)) if zmax is not None else float(np.nan_to_num(np.nanmax(np.abs(values)))) or 1.0
        kwargs = {"color_continuous_scale": DIVERGING_SCALE, "zmin": -zmax, "zmax": zmax, **kwargs}
    elif zmax is not None:
        kwargs["zmax"] = zmax
    fig = px.imshow(values, x=list(map(str, x_labels)) if x_labels is not None else None,
                    y=list(map(str, y_labels)) if y_labels is not None else None,
                    labels={"x": x_title, "y": y_title, "color": ""}, title=title, aspect="auto", **kwargs)
    return fig


def layer_head_grid(values, title: str = "", **kwargs) -> go.Figure:
    """A [n_layers, n_heads] score grid with layer rows and head columns (e.g. induction scores)."""
    values = _check_2d(values, "layer_head_grid")
    n_layers, n_heads = values.shape
    return heatmap(values, x_labels=range(n_heads), y_labels=range(n_layers), title=title,
                   x_title="head", y_title="layer", **kwargs)


def attention_pattern(pattern, tokens: Sequence[str], title: str = "") -> go.Figure:
    """One head's attention pattern [query_pos, key_pos] with token labels (queries down, keys across)."""
    pattern = _check_2d(pattern, "attention_pattern")
    if pattern.shape[0] != len(tokens) or pattern.shape[1] != len(tokens):
        raise ValueError(f"pattern has shape {pattern.shape} but {len(tokens)} tokens were given")
    labels = [f"{i}: {t}" for i, t in enumerate(tokens)]
    return heatmap(pattern, x_labels=labels, y_labels=labels, title=title, x_title="key (source)",
                   y_title="query (destination)", diverging=False, color_continuous_scale="Blues", zmin=0, zmax=1)


def lines(ys, x=None, names: Sequence[str] | None = None, title: str = "", x_title: str = "", y_title: str = "",
          log_y: bool = False) -> go.Figure:
    """One line per row of `ys` ([n_lines, n_points] or a single [n_points] tensor)."""
    ys = to_numpy(ys)
    ys = ys[None] if ys.ndim == 1 else ys
    x = to_numpy(x) if x is not None else list(range(ys.shape[1]))
    names = names if names is not None else [str(i) for i in range(ys.shape[0])]
    if len(names) != ys.shape[0]:
        raise ValueError(f"{len(names)} names for {ys.shape[0]} lines")
    fig = go.Figure([go.Scatter(x=x, y=y, mode="lines", name=str(n)) for y, n in zip(ys, names)])
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def scatter(x, y, labels: Sequence[str] | None = None, title: str = "", x_title: str = "", y_title: str = "",
            color=None) -> go.Figure:
    """A scatter plot; `labels` become hover text."""
    fig = px.scatter(x=to_numpy(x), y=to_numpy(y), hover_name=labels, color=to_numpy(color) if color is not None else None,
                     title=title, labels={"x": x_title, "y": y_title})
    return fig


def bar(values, labels: Sequence[str] | None = None, title: str = "", x_title: str = "", y_title: str = "") -> go.Figure:
    values = to_numpy(values)
    labels = list(map(str, labels)) if labels is not None else list(map(str, range(len(values))))
    fig = px.bar(x=labels, y=values, title=title, labels={"x": x_title, "y": y_title})
    return fig
