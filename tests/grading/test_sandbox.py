"""What crosses the worker boundary (tools/sandbox.py): plain data back, gradients, RNG, models by name."""

from __future__ import annotations

import io

import nbformat
import pytest
import torch

from tools import sandbox

CODE = '''
import numpy as np
import torch
from transformer_lens import FactoredMatrix

class Sub(torch.Tensor):
    pass

def double(x):
    return 2 * x

def scale_in_place(x):
    x.mul_(0)
    return x.sum()

def mixed():
    return {"t": torch.ones(2).as_subclass(Sub), "n": np.float64(1.5), "a": np.arange(3), "l": [1, "s", (None, True)]}

def factored(a, b):
    return FactoredMatrix(a, b)

def noise(n):
    return torch.rand(n)

def opaque():
    return object()

def first_weight(model):
    return model.W_E[0, :4].clone()

def zero_first(xs, scale=None):
    xs[0].zero_()
    return xs[1] * 2
'''


@pytest.fixture(scope="module")
def worker():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE)])
    w = sandbox.Worker([("nb.ipynb", nbformat.writes(nb).encode())])
    yield w
    w.stop()


def test_values_come_back_as_plain_data(worker):
    out = worker.call("mixed", (), {})
    assert type(out["t"]) is torch.Tensor and out["n"] == 1.5 and torch.equal(out["a"], torch.arange(3))
    assert out["l"] == [1, "s", (None, True)]
    with pytest.raises(sandbox.RemoteError, match="cannot carry back"):
        worker.call("opaque", (), {})
    fm = worker.call("factored", (torch.ones(3, 2), torch.ones(2, 4)), {})
    assert type(fm).__name__ == "FactoredMatrix" and torch.allclose(fm.AB, torch.full((3, 4), 2.0))


def test_gradients_flow_back_and_arguments_are_never_changed(worker):
    x = torch.randn(3, requires_grad=True)
    (worker.call("double", (x,), {}) ** 2).sum().backward()
    assert torch.allclose(x.grad, 8 * x.detach())
    y = torch.ones(3)
    worker.call("scale_in_place", (y,), {})
    assert torch.equal(y, torch.ones(3)), "the worker changed a tensor of the trusted process"


def test_in_place_writes_never_reach_the_caller_and_are_reported_alike_in_process(tmp_path):
    import types

    from tests import harness

    module = types.ModuleType("submission")
    exec(CODE, module.__dict__)
    nb = tmp_path / "nb.ipynb"
    nb.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE)])))
    remote = harness.RemoteImpl([nb], "a test notebook")
    try:
        for impl in (harness.Impl(module, [], "a test module"), remote):
            _check_in_place_writes(lambda name, a, k: getattr(impl, name)(*a, **k), lambda: harness.changed_in_place(impl))
    finally:
        remote._close()


def _check_in_place_writes(call, changed):
    y, nan = torch.ones(3), torch.tensor([float("nan"), 1.0])
    call("scale_in_place", (y,), {})
    assert torch.equal(y, torch.ones(3)) and [id(t) for t in changed()] == [id(y)]
    call("double", (nan,), {})
    assert changed() == [], "a NaN left as it was is not a change"
    xs, scale = [torch.ones(2), torch.ones(2)], torch.ones(1)
    assert torch.equal(call("zero_first", (xs,), {"scale": scale}), torch.full((2,), 2.0))
    assert torch.equal(xs[0], torch.ones(2)) and [id(t) for t in changed()] == [id(xs[0])]
    x = torch.randn(3, requires_grad=True)
    (call("double", (x,), {}) ** 2).sum().backward()
    assert torch.allclose(x.grad, 8 * x.detach()) and changed() == []


def test_random_draws_follow_the_callers_seed(worker):
    torch.manual_seed(3)
    got = worker.call("noise", (4,), {})
    torch.manual_seed(3)
    assert torch.equal(got, torch.rand(4))


def test_a_course_model_goes_by_name_with_its_current_weights(worker):
    from micourse.models import load_model

    model = load_model("attn_only_2l", verbose=False)
    assert torch.allclose(worker.call("first_weight", (model,), {}), model.W_E[0, :4])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    assert torch.allclose(worker.call("first_weight", (model,), {}), model.W_E[0, :4])


class Evil:
    def __reduce__(self):
        return (print, ("code ran in the grader",))


def test_replies_with_anything_but_plain_data_are_refused():
    buf = io.BytesIO()
    torch.save({"status": "ok", "result": Evil()}, buf)
    with pytest.raises(Exception, match="[Ww]eights only"):
        sandbox._check_reply(sandbox._load_plain(buf.getvalue()))
    with pytest.raises(TypeError):
        sandbox._check_reply({"status": "ok", "result": {1, 2}})
    plain = sandbox._check_reply({"status": "ok", "result": torch.nn.Parameter(torch.ones(2))})
    assert type(plain["result"]) is torch.Tensor
