"""Plot helpers return figures whose data tests can read, and refuse inputs of the wrong shape."""

import pytest
import torch

from micourse import plots


def test_heatmap_and_layer_head_grid_carry_the_values():
    values = torch.arange(6.0).reshape(2, 3)
    fig = plots.layer_head_grid(values, title="scores")
    assert fig.data[0].z.tolist() == values.tolist()
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"


def _rgb(colour: str) -> tuple[int, int, int]:
    from plotly.colors import hex_to_rgb, unlabel_rgb

    return tuple(round(c) for c in (hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)))


def _colour_at(colorscale, where: float) -> tuple[int, int, int]:
    """The colour a plotly colour scale gives at `where` in [0, 1] (exact stop, as plotly interpolates between stops)."""
    for position, colour in colorscale:
        if abs(position - where) < 1e-9:
            return _rgb(colour)
    raise AssertionError(f"the colour scale has no stop at {where}: {colorscale}")


def test_diverging_heatmaps_are_red_positive_blue_negative_white_zero_on_a_symmetric_range():
    """The course-wide convention: positive = red, negative = blue, 0 = white, zmin = -zmax."""
    for fig in (plots.heatmap(torch.tensor([[0.5, -2.0], [1.0, 0.0]])), plots.layer_head_grid(torch.tensor([[3.0, 1.0]])),
                plots.layer_head_grid(torch.tensor([[0.2, -0.1]]), zmax=1)):
        axis = fig.layout.coloraxis
        assert axis.cmin == -axis.cmax and axis.cmax > 0, f"range should be symmetric around 0: [{axis.cmin}, {axis.cmax}]"
        scale = axis.colorscale
        top, middle, bottom = _colour_at(scale, 1.0), _colour_at(scale, 0.5), _colour_at(scale, 0.0)
        assert top[0] > 2 * max(top[1], top[2]), f"the top of the range (positive) should be red, got rgb{top}"
        assert bottom[2] > 2 * max(bottom[0], bottom[1]), f"the bottom of the range (negative) should be blue, got rgb{bottom}"
        assert middle == (255, 255, 255), f"0 (the middle of a symmetric range) should be white, got rgb{middle}"
        positions = [p for p, _ in scale]
        assert positions == sorted(positions) and positions[0] == 0 and positions[-1] == 1
        for p, colour in scale:  # red grows with the value, blue shrinks: no other hue sneaks in
            r, g, b = _rgb(colour)
            assert (r >= b) if p > 0.5 else (b >= r) if p < 0.5 else True, f"stop {p} is rgb{(r, g, b)}"
    assert plots.heatmap(torch.tensor([[0.5, -2.0]])).layout.coloraxis.cmax == 2.0, "zmax defaults to the largest |value|"
    assert plots.heatmap(torch.tensor([[0.5, 0.2]]), zmax=-3).layout.coloraxis.cmin == -3.0


def test_diverging_heatmaps_refuse_a_lopsided_range_or_another_scale():
    with pytest.raises(ValueError, match="zmax"):
        plots.heatmap(torch.randn(2, 2), zmin=0)
    with pytest.raises(ValueError, match="zmax"):
        plots.heatmap(torch.randn(2, 2), color_continuous_scale="Viridis")
    seq = plots.heatmap(torch.rand(2, 2), diverging=False, zmin=0, zmax=2)  # sequential plots keep their own range
    assert (seq.layout.coloraxis.cmin, seq.layout.coloraxis.cmax) == (0, 2)


def test_attention_pattern_labels_tokens_and_checks_size():
    fig = plots.attention_pattern(torch.eye(3), ["a", "b", "c"])
    assert list(fig.data[0].x) == ["0: a", "1: b", "2: c"]
    with pytest.raises(ValueError, match="3 tokens"):
        plots.attention_pattern(torch.eye(4), ["a", "b", "c"])


def test_lines_scatter_bar():
    assert len(plots.lines(torch.randn(3, 5), names=["a", "b", "c"]).data) == 3
    assert len(plots.scatter(torch.randn(4), torch.randn(4), labels=list("wxyz")).data[0].x) == 4
    assert list(plots.bar(torch.tensor([1.0, 2.0]), labels=["p", "q"]).data[0].x) == ["p", "q"]
    with pytest.raises(ValueError):
        plots.heatmap(torch.randn(2, 2, 2))
    with pytest.raises(ValueError, match="names"):
        plots.lines(torch.randn(2, 5), names=["only one"])


def test_circuitsvis_view_is_built_without_rendering():
    from micourse import vis

    view = vis.attention_heads(torch.softmax(torch.randn(2, 3, 3), -1), ["x", "y", "z"])
    assert "x" in str(view) or view is not None
    with pytest.raises(ValueError, match="n_heads"):
        vis.attention_heads(torch.randn(2, 3, 4), ["x", "y", "z"])
