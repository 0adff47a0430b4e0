"""Hidden checks of chapter 6: each compares the learner's function with the reference on random inputs and on the
shipped models (`ioi_gpt2_2l` on prompts the notebook uses and prompts it never uses, `attn_only_2l` on repeated
tokens), and checks a behaviour (a patch that changes nothing gives 0, one-hot inputs land in one cell, invariances,
agreement with finite differences and with TransformerLens's own sweeps)."""
import functools

import torch

from tests.ch06_attribution.conftest import _ld, cached
from tests.harness import as_number, assert_close, changed_in_place, exercise, tensor_of

_close = functools.partial(assert_close, atol=1e-4)
_tensor, _num = tensor_of, as_number


def _ioi_args(s):
    return s["clean"], s["corrupted"], s["answer_ids"], s["end"]


def _random_dicts(template, shape, seed, n_layers=2):
    gen = torch.Generator().manual_seed(seed)
    make = lambda: {template.format(li): torch.randn(shape, generator=gen) for li in range(n_layers)}
    return make(), make(), make()


def _one_hot(template, shape, index, layer):
    base = {template.format(li): torch.zeros(shape) for li in range(2)}
    source = {k: v.clone() for k, v in base.items()}
    source[template.format(layer)][index] = 1.0
    return base, source, {k: torch.full(shape, -3.0) for k in base}


def _qk_random(seed, batch=2, pos=5, heads=3, d_head=4):
    gen = torch.Generator().manual_seed(seed)
    base, source, grads = {}, {}, {}
    causal = torch.tril(torch.ones(pos, pos, dtype=torch.bool))
    for li in range(2):
        p = f"blocks.{li}.attn."
        for d in (base, source):
            d[p + "hook_q"] = torch.randn(batch, pos, heads, d_head, generator=gen)
            d[p + "hook_k"] = torch.randn(batch, pos, heads, d_head, generator=gen)
        scores = torch.einsum("bqhd,bkhd->bhqk", base[p + "hook_q"], base[p + "hook_k"]) / 2.0
        base[p + "hook_pattern"] = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        grads[p + "hook_pattern"] = torch.randn(batch, heads, pos, pos, generator=gen)
    return base, source, grads


# ------------------------------------------------------------------------------------------- Part 1
@exercise("toy_network")
def test_toy_network_matches_reference_on_random_inputs(impl, ref, seed):
    x, W, u = torch.randn(7, 5), torch.randn(5, 9), torch.randn(9)
    _close(impl.toy_network(x, W, u), ref.toy_network(x, W, u), "toy_network on random inputs")


@exercise("toy_network")
def test_toy_network_matches_reference_when_saturated(impl, ref, seed):
    x, W, u = torch.randn(4, 3), 30 * torch.randn(3, 6), torch.randn(6)
    _close(impl.toy_network(x, W, u), ref.toy_network(x, W, u), "toy_network with a large W (saturated sigmoids)")


@exercise("toy_network")
def test_toy_network_treats_rows_independently(impl, seed):
    x, W, u = torch.randn(6, 4), torch.randn(4, 5), torch.randn(5)
    out = _tensor(impl.toy_network(x, W, u), "toy_network")
    assert out.shape == (6,), f"toy_network should return [batch] = (6,); got {tuple(out.shape)}"
    perm = torch.randperm(6)
    _close(impl.toy_network(x[perm], W, u), out[perm], "permuting the rows of x should permute the outputs")
    _close(impl.toy_network(torch.zeros(2, 4), W, u), torch.full((2,), u.sum().item() / 2), "x = 0 should give u.sum() / 2")


@exercise("toy_gradient")
def test_toy_gradient_matches_reference_on_random_inputs(impl, ref, seed):
    x, W, u = torch.randn(6, 4), torch.randn(4, 7), torch.randn(7)
    _close(impl.toy_gradient(x, W, u), ref.toy_gradient(x, W, u), "toy_gradient on random inputs", atol=1e-5)


@exercise("toy_gradient")
def test_toy_gradient_matches_finite_differences(impl, seed):
    x, W, u = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    got = _tensor(impl.toy_gradient(x, W, u), "toy_gradient")
    f = lambda y: torch.sigmoid(y @ W) @ u
    eps = 1e-6
    want = torch.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in torch.eye(4, dtype=torch.float64)], dim=1)
    _close(got, want, "toy_gradient vs central finite differences", atol=1e-5)


@exercise("toy_gradient")
def test_toy_gradient_leaves_x_alone_and_works_without_grad(impl, ref, seed):
    x, W, u = torch.randn(5, 3), torch.randn(3, 4), torch.randn(4)
    with torch.no_grad():
        got = impl.toy_gradient(x, W, u)
    assert not changed_in_place(impl), "toy_gradient changed its inputs in place: leave x, W and u as they are"
    _close(got, ref.toy_gradient(x, W, u), "toy_gradient called under torch.no_grad() (turn gradients on inside)", atol=1e-5)


@exercise("linear_estimate")
def test_linear_estimate_matches_reference_on_random_inputs(impl, ref, seed):
    a, b, g = torch.randn(6, 5), torch.randn(6, 5), torch.randn(6, 5)
    _close(impl.linear_estimate(a, b, g), ref.linear_estimate(a, b, g), "linear_estimate on random inputs")


@exercise("linear_estimate")
def test_linear_estimate_is_exact_for_a_linear_function(impl, seed):
    c = torch.randn(4)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    _close(impl.linear_estimate(a, b, c.expand(5, 4)), b @ c - a @ c, "for f(x) = x . c the estimate must be exact")


@exercise("linear_estimate")
def test_linear_estimate_is_zero_without_a_step_and_has_the_right_sign(impl, seed):
    a, g = torch.randn(3, 4), torch.randn(3, 4)
    _close(impl.linear_estimate(a, a, g), torch.zeros(3), "b = a should give 0")
    _close(impl.linear_estimate(a, a + g, g), (g * g).sum(-1), "stepping along the gradient should increase f: (b - a) . grad")


@exercise("relative_error")
def test_relative_error_matches_reference_on_random_inputs(impl, ref, seed):
    est, exact = torch.randn(3, 7), torch.randn(3, 7)
    assert abs(_num(impl.relative_error(est, exact), "relative_error") - ref.relative_error(est, exact)) < 1e-5, \
        "relative_error differs from sum |estimate - exact| / sum |exact| on random tensors"


@exercise("relative_error")
def test_relative_error_on_attribution_sized_grids(impl, ref, seed):
    est, exact = torch.randn(2, 15, 4) * 0.1, torch.randn(2, 15, 4)
    assert abs(_num(impl.relative_error(est, exact), "relative_error") - ref.relative_error(est, exact)) < 1e-5, \
        "relative_error on a [n_layers, pos, n_heads] grid"


@exercise("relative_error")
def test_relative_error_is_scale_free(impl, seed):
    est, exact = torch.randn(10), torch.randn(10)
    base = _num(impl.relative_error(est, exact), "relative_error")
    assert abs(_num(impl.relative_error(3 * est, 3 * exact), "relative_error") - base) < 1e-5, \
        "scaling estimate and exact by the same factor must not change the relative error"
    assert abs(_num(impl.relative_error(torch.zeros(10), exact), "relative_error") - 1) < 1e-6, "zeros should give 1"


# ------------------------------------------------------------------------------------------- Part 2
@exercise("mean_logit_diff")
def test_mean_logit_diff_matches_reference_on_random_logits(impl, ref, seed):
    logits, answers, end = torch.randn(5, 7, 11), torch.randint(0, 11, (5, 2)), torch.randint(0, 7, (5,))
    _close(impl.mean_logit_diff(logits, answers, end), ref.mean_logit_diff(logits, answers, end), "mean_logit_diff on random logits")


@exercise("mean_logit_diff")
def test_mean_logit_diff_matches_reference_on_padded_prompts(impl, ref, ioi_model, ioi_mixed):
    d = ioi_mixed
    with torch.no_grad():
        logits = ioi_model(d.tokens)
    _close(impl.mean_logit_diff(logits, d.answer_ids, d.word_idx["end"]), ref.mean_logit_diff(logits, d.answer_ids, d.word_idx["end"]),
           "mean_logit_diff on prompts of different lengths (END is word_idx['end'], not position -1)", atol=1e-3)


@exercise("mean_logit_diff")
def test_mean_logit_diff_is_differentiable(impl, seed):
    logits = torch.randn(3, 4, 6)
    answers, end = torch.tensor([[1, 2], [3, 4], [5, 0]]), torch.tensor([1, 3, 2])
    leaf = logits.clone().requires_grad_(True)
    with torch.enable_grad():
        out = impl.mean_logit_diff(leaf, answers, end)
        assert isinstance(out, torch.Tensor) and out.requires_grad, "mean_logit_diff must return a tensor that keeps the graph"
        assert out.shape == (), f"mean_logit_diff should return a 0-d tensor; got shape {tuple(out.shape)}"
        out.backward()
    want = torch.zeros(3, 4, 6)
    for b in range(3):
        want[b, end[b], answers[b, 0]] += 1 / 3
        want[b, end[b], answers[b, 1]] -= 1 / 3
    _close(leaf.grad, want, "the gradient of mean_logit_diff (+-1/batch on the two answers at END)")


@exercise("normalised_metric")
def test_normalised_metric_matches_reference_on_a_grid(impl, ref, seed):
    ld, clean, corrupted = torch.randn(3, 4), torch.tensor(2.5), torch.tensor(-1.0)
    _close(impl.normalised_metric(ld, clean, corrupted), ref.normalised_metric(ld, clean, corrupted), "normalised_metric on a grid")


@exercise("normalised_metric")
def test_normalised_metric_matches_reference_on_model_values(impl, ref, ioi_small):
    s = ioi_small
    ld = torch.linspace(float(s["corrupted_ld"]), float(s["clean_ld"]), 5)
    _close(impl.normalised_metric(ld, s["clean_ld"], s["corrupted_ld"]), ref.normalised_metric(ld, s["clean_ld"], s["corrupted_ld"]),
           "normalised_metric between the shipped model's corrupted and clean logit differences")


@exercise("normalised_metric")
def test_normalised_metric_maps_clean_to_one_and_corrupted_to_zero(impl, seed):
    clean, corrupted = torch.tensor(-3.0), torch.tensor(5.0)
    _close(impl.normalised_metric(torch.tensor([-3.0, 5.0]), clean, corrupted), torch.tensor([1.0, 0.0]),
           "clean -> 1 and corrupted -> 0 (even when clean < corrupted)")


def _acts_and_grads_compare(impl, ref, model, s, names, what):
    args = (model, s["corrupted"], s["answer_ids"], s["end"], s["clean_ld"], s["corrupted_ld"], names)
    got, want = impl.acts_and_grads(*args), ref.acts_and_grads(*args)
    assert isinstance(got, (tuple, list)) and len(got) == 3, "acts_and_grads should return (value, acts, grads)"
    assert abs(_num(got[0], "the value") - want[0]) < 1e-4, f"{what}: the metric value differs"
    for i, kind in ((1, "acts"), (2, "grads")):
        assert isinstance(got[i], dict) and set(got[i]) == set(names), f"{what}: {kind} should be a dict keyed by the names asked for"
        for name in names:
            _close(got[i][name], want[i][name], f"{what}: {kind}[{name!r}]", atol=1e-5, rtol=1e-3)


@exercise("acts_and_grads")
def test_acts_and_grads_matches_reference_on_shipped_model(impl, ref, ioi_model, ioi_small):
    names = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.1.attn.hook_q", "blocks.1.mlp.hook_post"]
    _acts_and_grads_compare(impl, ref, ioi_model, ioi_small, names, "acts_and_grads on the notebook's template")


@exercise("acts_and_grads")
def test_acts_and_grads_matches_reference_on_fresh_prompts(impl, ref, ioi_model, ioi_fresh):
    names = ["blocks.1.hook_resid_pre", "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.0.mlp.hook_post"]
    _acts_and_grads_compare(impl, ref, ioi_model, ioi_fresh, names, "acts_and_grads on fresh prompts")


@exercise("acts_and_grads")
def test_acts_and_grads_gradient_predicts_a_small_patch(impl, ioi_model, ioi_small):
    s = ioi_small
    name = "blocks.1.attn.hook_z"
    with torch.no_grad():
        value, acts, grads = impl.acts_and_grads(ioi_model, s["corrupted"], s["answer_ids"], s["end"], s["clean_ld"],
                                                 s["corrupted_ld"], [name])
    gen = torch.Generator().manual_seed(3)
    step = 1e-2 * torch.randn(acts[name].shape, generator=gen)
    with torch.no_grad():
        moved = ioi_model.run_with_hooks(s["corrupted"], fwd_hooks=[(name, lambda z, hook: z + step)])
    exact = ((_ld(moved, s["data"]) - s["corrupted_ld"]) / (s["clean_ld"] - s["corrupted_ld"])).item()
    estimate = (step * _tensor(grads[name], "grads")).sum().item()
    assert abs(_num(value, "the value")) < 1e-4, "on the corrupted prompts the normalised metric should be 0"
    assert abs(exact - estimate) <= 1e-3 + 0.05 * abs(exact), (
        f"a small step in {name} changed the normalised metric by {exact:.5f}, but gradient . step = {estimate:.5f}: "
        "the gradient should be that of the normalised metric (called under no_grad, gradients must be turned on inside)")


# ------------------------------------------------------------------------------------------- Part 3
@exercise("attr_resid")
def test_attr_resid_matches_reference_on_random_dicts(impl, ref, seed):
    b, s, g = _random_dicts("blocks.{}.hook_resid_pre", (3, 5, 4), seed=1)
    _close(impl.attr_resid(b, s, g, 2), ref.attr_resid(b, s, g, 2), "attr_resid on random activations and gradients")


@exercise("attr_resid")
def test_attr_resid_matches_reference_on_shipped_model(impl, ref, ioi_stored):
    b, s, g = ioi_stored
    _close(impl.attr_resid(b, s, g, 2), ref.attr_resid(b, s, g, 2), "attr_resid on the shipped model's stored activations", atol=1e-5)


@exercise("attr_resid")
def test_attr_resid_sums_one_hot_changes_over_the_batch(impl, seed):
    b, s, g = _one_hot("blocks.{}.hook_resid_pre", (2, 3, 4), (1, 2, 3), layer=0)
    s["blocks.0.hook_resid_pre"][0, 2, 0] = 1.0
    want = torch.zeros(2, 3)
    want[0, 2] = -6.0
    _close(impl.attr_resid(b, s, g, 2), want, "two prompts changed at position 2 of layer 0, gradient -3: the attribution "
           "is the sum over prompts (-6), not the mean")


@exercise("attr_heads_by_pos")
def test_attr_heads_by_pos_matches_reference_on_random_dicts(impl, ref, seed):
    for act in ("z", "q", "k", "v"):
        b, s, g = _random_dicts("blocks.{}.attn.hook_" + act, (2, 5, 3, 4), seed=2)
        _close(impl.attr_heads_by_pos(b, s, g, 2, act), ref.attr_heads_by_pos(b, s, g, 2, act), f"attr_heads_by_pos(..., {act!r}) on random dicts")


@exercise("attr_heads_by_pos")
def test_attr_heads_by_pos_matches_reference_on_shipped_model(impl, ref, ioi_stored):
    b, s, g = ioi_stored
    for act in ("z", "k"):
        _close(impl.attr_heads_by_pos(b, s, g, 2, act), ref.attr_heads_by_pos(b, s, g, 2, act),
               f"attr_heads_by_pos(..., {act!r}) on the shipped model", atol=1e-5)
    _close(impl.attr_heads_by_pos(b, s, g, 2), ref.attr_heads_by_pos(b, s, g, 2), "attr_heads_by_pos with the default act", atol=1e-5)


@exercise("attr_heads_by_pos")
def test_attr_heads_by_pos_puts_a_one_hot_change_in_its_cell(impl, seed):
    b, s, g = _one_hot("blocks.{}.attn.hook_v", (3, 4, 2, 5), (2, 3, 1, 4), layer=1)
    want = torch.zeros(2, 4, 2)
    want[1, 3, 1] = -3.0
    _close(impl.attr_heads_by_pos(b, s, g, 2, "v"), want, "one changed entry of layer 1 (prompt 2, position 3, head 1)")


@exercise("attr_patterns")
def test_attr_patterns_matches_reference_on_random_dicts(impl, ref, seed):
    b, s, g = _random_dicts("blocks.{}.attn.hook_pattern", (2, 3, 5, 5), seed=3)
    _close(impl.attr_patterns(b, s, g, 2), ref.attr_patterns(b, s, g, 2), "attr_patterns on random dicts")


@exercise("attr_patterns")
def test_attr_patterns_matches_reference_on_shipped_model(impl, ref, ioi_stored):
    b, s, g = ioi_stored
    _close(impl.attr_patterns(b, s, g, 2), ref.attr_patterns(b, s, g, 2), "attr_patterns on the shipped model", atol=1e-5)


@exercise("attr_patterns")
def test_attr_patterns_uses_the_head_axis_of_patterns(impl, seed):
    b, s, g = _one_hot("blocks.{}.attn.hook_pattern", (2, 4, 3, 3), (0, 1, 2, 1), layer=0)
    want = torch.zeros(2, 4)
    want[0, 1] = -3.0
    _close(impl.attr_patterns(b, s, g, 2), want, "one changed entry of layer 0, head 1 (patterns are [batch, n_heads, q, k])")


@exercise("attr_neurons")
def test_attr_neurons_matches_reference_on_random_dicts(impl, ref, seed):
    b, s, g = _random_dicts("blocks.{}.mlp.hook_post", (2, 5, 7), seed=4)
    _close(impl.attr_neurons(b, s, g, 2), ref.attr_neurons(b, s, g, 2), "attr_neurons on random dicts")


@exercise("attr_neurons")
def test_attr_neurons_matches_reference_on_shipped_model(impl, ref, ioi_stored):
    b, s, g = ioi_stored
    _close(impl.attr_neurons(b, s, g, 2), ref.attr_neurons(b, s, g, 2), "attr_neurons on the shipped model", atol=1e-5)


@exercise("attr_neurons")
def test_attr_neurons_sums_over_batch_and_positions(impl, seed):
    b, s, g = _one_hot("blocks.{}.mlp.hook_post", (2, 3, 4), (1, 2, 3), layer=1)
    s["blocks.1.mlp.hook_post"][0, 0, 3] = 2.0
    want = torch.zeros(2, 4)
    want[1, 3] = -9.0
    _close(impl.attr_neurons(b, s, g, 2), want, "neuron 3 of layer 1 changed in two prompts at two positions: the sum (-9)")


def _ref_patch(ref_results, ref, name, model, s, *extra):
    key = (name, id(s)) + tuple(map(str, extra))
    return cached(ref_results, key, lambda: getattr(ref, name)(model, *_ioi_args(s), *extra))


@exercise("act_patch_resid")
def test_act_patch_resid_matches_reference_on_shipped_model(impl, ref, ioi_model, ioi_small, ref_results):
    _close(impl.act_patch_resid(ioi_model, *_ioi_args(ioi_small)), _ref_patch(ref_results, ref, "act_patch_resid", ioi_model, ioi_small),
           "act_patch_resid on the notebook's template", atol=1e-3)


@exercise("act_patch_resid")
def test_act_patch_resid_matches_reference_on_fresh_prompts(impl, ref, ioi_model, ioi_fresh, ref_results):
    _close(impl.act_patch_resid(ioi_model, *_ioi_args(ioi_fresh)), _ref_patch(ref_results, ref, "act_patch_resid", ioi_model, ioi_fresh),
           "act_patch_resid on fresh prompts", atol=1e-3)


@exercise("act_patch_resid")
def test_act_patch_resid_layer_zero_is_one_exactly_at_s2(impl, ioi_model, ioi_fresh):
    s = ioi_fresh
    out = _tensor(impl.act_patch_resid(ioi_model, *_ioi_args(s)), "act_patch_resid")
    want = torch.zeros(s["clean"].shape[1])
    want[int(s["data"].word_idx["S2"][0])] = 1.0
    _close(out[0], want, "before layer 0 only S2 differs: restoring it gives 1, every other position 0", atol=1e-3)


@exercise("act_patch_heads_by_pos")
def test_act_patch_heads_by_pos_matches_reference_on_shipped_model(impl, ref, ioi_model, ioi_small, ref_results):
    _close(impl.act_patch_heads_by_pos(ioi_model, *_ioi_args(ioi_small)),
           _ref_patch(ref_results, ref, "act_patch_heads_by_pos", ioi_model, ioi_small), "act_patch_heads_by_pos (z)", atol=1e-3)


@exercise("act_patch_heads_by_pos")
def test_act_patch_heads_by_pos_matches_reference_for_keys_on_fresh_prompts(impl, ref, ioi_model, ioi_fresh, ref_results):
    _close(impl.act_patch_heads_by_pos(ioi_model, *_ioi_args(ioi_fresh), "k"),
           _ref_patch(ref_results, ref, "act_patch_heads_by_pos", ioi_model, ioi_fresh, "k"), "act_patch_heads_by_pos(..., 'k') on fresh prompts",
           atol=1e-3)


@exercise("act_patch_heads_by_pos")
def test_act_patch_heads_by_pos_is_zero_where_nothing_differs(impl, ioi_model, ioi_small, ref_results):
    s = ioi_small
    s2 = int(s["data"].word_idx["S2"][0])
    out = _tensor(impl.act_patch_heads_by_pos(ioi_model, *_ioi_args(s), "q"), "act_patch_heads_by_pos")
    assert out.shape == (2, s["clean"].shape[1], 4), f"expected [n_layers, pos, n_heads]; got {tuple(out.shape)}"
    _close(out[:, :s2], torch.zeros(2, s2, 4), "queries before S2 are the same in clean and corrupted runs: restoring them "
           "should give 0", atol=1e-4)


@exercise("act_patch_patterns")
def test_act_patch_patterns_matches_reference_on_shipped_model(impl, ref, ioi_model, ioi_small, ref_results):
    _close(impl.act_patch_patterns(ioi_model, *_ioi_args(ioi_small)), _ref_patch(ref_results, ref, "act_patch_patterns", ioi_model, ioi_small),
           "act_patch_patterns", atol=1e-3)


@exercise("act_patch_patterns")
def test_act_patch_patterns_matches_reference_on_fresh_prompts(impl, ref, ioi_model, ioi_fresh, ref_results):
    _close(impl.act_patch_patterns(ioi_model, *_ioi_args(ioi_fresh)), _ref_patch(ref_results, ref, "act_patch_patterns", ioi_model, ioi_fresh),
           "act_patch_patterns on fresh prompts", atol=1e-3)


@exercise("act_patch_patterns")
def test_act_patch_patterns_matches_transformerlens(impl, ioi_model, ioi_small):
    import contextlib
    import io

    from transformer_lens import patching

    s = ioi_small
    with torch.no_grad():
        _, cache = ioi_model.run_with_cache(s["clean"])
    metric = lambda logits: (_ld(logits, s["data"]) - s["corrupted_ld"]) / (s["clean_ld"] - s["corrupted_ld"])
    with contextlib.redirect_stderr(io.StringIO()):
        want = patching.get_act_patch_attn_head_pattern_all_pos(ioi_model, s["corrupted"], cache, metric)
    _close(impl.act_patch_patterns(ioi_model, *_ioi_args(s)), want, "act_patch_patterns vs TransformerLens's sweep", atol=1e-3)


@exercise("act_patch_neurons")
def test_act_patch_neurons_matches_reference_on_shipped_model(impl, ref, ioi_model, ioi_small, ioi_stored, ref_results):
    b, s, g = ioi_stored
    name, s2 = "blocks.0.mlp.hook_post", int(ioi_small["data"].word_idx["S2"][0])
    at_s2 = ((s[name] - b[name]) * g[name])[:, s2].sum(0).abs()  # layer-0 neurons that matter through S2, not END
    neurons = at_s2.topk(3).indices.tolist() + [17]
    _close(impl.act_patch_neurons(ioi_model, *_ioi_args(ioi_small), 0, neurons),
           _ref_patch(ref_results, ref, "act_patch_neurons", ioi_model, ioi_small, 0, neurons),
           "act_patch_neurons in layer 0 (restore the neuron at every position, not only at END)", atol=1e-3)


@exercise("act_patch_neurons")
def test_act_patch_neurons_matches_reference_on_fresh_prompts(impl, ref, ioi_model, ioi_fresh, ref_results):
    neurons = [5, 400]
    _close(impl.act_patch_neurons(ioi_model, *_ioi_args(ioi_fresh), 0, neurons),
           _ref_patch(ref_results, ref, "act_patch_neurons", ioi_model, ioi_fresh, 0, neurons), "act_patch_neurons on fresh prompts", atol=1e-3)


@exercise("act_patch_neurons")
def test_act_patch_neurons_follows_the_order_of_the_list(impl, ioi_model, ioi_small):
    one = _tensor(impl.act_patch_neurons(ioi_model, *_ioi_args(ioi_small), 1, [9, 42]), "act_patch_neurons")
    two = _tensor(impl.act_patch_neurons(ioi_model, *_ioi_args(ioi_small), 1, [42, 9]), "act_patch_neurons")
    _close(two, one.flip(0), "reversing the list of neurons should reverse the result", atol=1e-5)


@exercise("pearson_correlation")
def test_pearson_correlation_matches_reference_on_random_tensors(impl, ref, seed):
    x, y = torch.randn(4, 6), torch.randn(24)
    y = y + 0.5 * x.flatten()
    assert abs(_num(impl.pearson_correlation(x, y), "pearson_correlation") - ref.pearson_correlation(x, y)) < 1e-5, \
        "pearson_correlation differs from the Pearson correlation of the flattened entries"


@exercise("pearson_correlation")
def test_pearson_correlation_matches_reference_on_attributions(impl, ref, ioi_stored):
    b, s, g = ioi_stored
    x = ((s["blocks.1.attn.hook_z"] - b["blocks.1.attn.hook_z"]) * g["blocks.1.attn.hook_z"]).sum((0, 3))
    y = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert abs(_num(impl.pearson_correlation(x, y), "pearson_correlation") - ref.pearson_correlation(x, y)) < 1e-5, \
        "pearson_correlation on attribution-sized values"


@exercise("pearson_correlation")
def test_pearson_correlation_is_invariant_to_affine_maps(impl, seed):
    x, y = torch.randn(30), torch.randn(30)
    base = _num(impl.pearson_correlation(x, y), "pearson_correlation")
    assert abs(_num(impl.pearson_correlation(5 * x - 7, 0.1 * y + 3), "pearson_correlation") - base) < 1e-5, \
        "scaling by positive numbers and shifting must not change the correlation"
    assert abs(_num(impl.pearson_correlation(x, -2 * x + 1), "pearson_correlation") + 1) < 1e-6, "y = -2x + 1 should give -1"


# ------------------------------------------------------------------------------------------- Part 4
@exercise("second_copy_logprob")
def test_second_copy_logprob_matches_reference_on_random_logits(impl, ref, seed):
    n = 4
    logits, tokens = torch.randn(3, 9, 13), torch.randint(0, 13, (3, 9))
    _close(impl.second_copy_logprob(logits, tokens, n), ref.second_copy_logprob(logits, tokens, n), "second_copy_logprob on random logits")


@exercise("second_copy_logprob")
def test_second_copy_logprob_matches_reference_on_shipped_model(impl, ref, ind_model, rep_fresh):
    with torch.no_grad():
        logits = ind_model(rep_fresh["clean"])
    _close(impl.second_copy_logprob(logits, rep_fresh["clean"], rep_fresh["n"]), ref.second_copy_logprob(logits, rep_fresh["clean"], rep_fresh["n"]),
           "second_copy_logprob on attn_only_2l", atol=1e-4)


@exercise("second_copy_logprob")
def test_second_copy_logprob_reads_only_the_second_copy(impl, seed):
    n = 3
    logits, tokens = torch.randn(2, 7, 5), torch.randint(0, 5, (2, 7))
    base = _tensor(impl.second_copy_logprob(logits, tokens, n), "second_copy_logprob")
    changed = logits.clone()
    changed[:, :n + 1] = 100 * torch.randn(2, n + 1, 5)  # predictions of the first copy and of R[0] of the second copy
    changed[:, -1] = 100 * torch.randn(2, 5)  # the last position predicts nothing
    _close(impl.second_copy_logprob(changed, tokens, n), base, "second_copy_logprob must use only the predictions of R[1:] of "
           "the second copy (made at positions n + 1 ... 2n - 1)")


@exercise("corrupt_first_copy")
def test_corrupt_first_copy_matches_reference_on_random_tokens(impl, ref, seed):
    tokens, other = torch.randint(0, 50, (4, 11)), torch.randint(0, 50, (4, 11))
    _close(impl.corrupt_first_copy(tokens, 5, other), ref.corrupt_first_copy(tokens, 5, other), "corrupt_first_copy on random tokens")


@exercise("corrupt_first_copy")
def test_corrupt_first_copy_matches_reference_on_repeated_tokens(impl, ref, rep_fresh):
    r = rep_fresh
    _close(impl.corrupt_first_copy(r["clean"], r["n"], r["corrupted"]), ref.corrupt_first_copy(r["clean"], r["n"], r["corrupted"]),
           "corrupt_first_copy on BOS + R + R")


@exercise("corrupt_first_copy")
def test_corrupt_first_copy_keeps_bos_and_the_second_copy(impl, seed):
    tokens, other = torch.randint(0, 50, (2, 9)), torch.randint(50, 100, (2, 9))
    out = _tensor(impl.corrupt_first_copy(tokens, 4, other), "corrupt_first_copy")
    assert not changed_in_place(impl), "corrupt_first_copy modified its input tokens: return a modified copy"
    assert torch.equal(out[:, 0], tokens[:, 0]) and torch.equal(out[:, 5:], tokens[:, 5:]), "BOS and the second copy must stay"
    assert torch.equal(out[:, 1:5], other[:, 1:5]), "positions 1 ... n must come from other"


def _iag_compare(impl, ref, model, tokens, names, what):
    got, want = impl.induction_acts_and_grads(model, tokens, names), ref.induction_acts_and_grads(model, tokens, names)
    assert isinstance(got, (tuple, list)) and len(got) == 3, "induction_acts_and_grads should return (value, acts, grads)"
    assert abs(_num(got[0], "the value") - want[0]) < 1e-4, f"{what}: the metric value differs"
    for i, kind in ((1, "acts"), (2, "grads")):
        assert isinstance(got[i], dict) and set(got[i]) == set(names), f"{what}: {kind} should be keyed by the names asked for"
        for name in names:
            _close(got[i][name], want[i][name], f"{what}: {kind}[{name!r}]", atol=1e-5, rtol=1e-3)


@exercise("induction_acts_and_grads")
def test_induction_acts_and_grads_matches_reference_on_shipped_model(impl, ref, ind_model, rep_small):
    _iag_compare(impl, ref, ind_model, rep_small["clean"], ["blocks.0.attn.hook_z", "blocks.1.attn.hook_q"], "on BOS + R + R")


@exercise("induction_acts_and_grads")
def test_induction_acts_and_grads_matches_reference_on_fresh_tokens(impl, ref, ind_model, rep_fresh):
    _iag_compare(impl, ref, ind_model, rep_fresh["corrupted"], ["blocks.1.attn.hook_pattern", "blocks.0.attn.hook_v"],
                 "on other tokens (a corrupted batch)")


@exercise("induction_acts_and_grads")
def test_induction_acts_and_grads_agrees_with_transformerlens_hooks(impl, ind_model, rep_small, rep_stored):
    base, _, grads = rep_stored
    names = ["blocks.0.attn.hook_k", "blocks.1.attn.hook_z"]
    with torch.no_grad():
        value, acts, got = impl.induction_acts_and_grads(ind_model, rep_small["clean"], names)
    for name in names:
        _close(acts[name], base[name], f"acts[{name!r}] vs TransformerLens's cache", atol=1e-5)
        _close(got[name], grads[name], f"grads[{name!r}] vs the gradient of the second-copy log-probability (called under "
               "no_grad: turn gradients on inside)", atol=1e-5, rtol=1e-3)


@exercise("induction_head_attribution")
def test_induction_head_attribution_matches_reference_on_shipped_model(impl, ref, ind_model, rep_small, ref_results):
    want = cached(ref_results, "iha_small", lambda: ref.induction_head_attribution(ind_model, rep_small["clean"], rep_small["corrupted"]))
    _close(impl.induction_head_attribution(ind_model, rep_small["clean"], rep_small["corrupted"]), want, "induction_head_attribution", atol=1e-4)


@exercise("induction_head_attribution")
def test_induction_head_attribution_matches_reference_on_fresh_tokens(impl, ref, ind_model, rep_fresh, ref_results):
    want = cached(ref_results, "iha_fresh", lambda: ref.induction_head_attribution(ind_model, rep_fresh["clean"], rep_fresh["corrupted"]))
    _close(impl.induction_head_attribution(ind_model, rep_fresh["clean"], rep_fresh["corrupted"]), want,
           "induction_head_attribution on other repeated tokens", atol=1e-4)


@exercise("induction_head_attribution")
def test_induction_head_attribution_is_zero_without_corruption(impl, ind_model, rep_small):
    out = _tensor(impl.induction_head_attribution(ind_model, rep_small["clean"], rep_small["clean"].clone()), "induction_head_attribution")
    assert out.shape == (2, 4), f"expected [n_layers, n_heads] = (2, 4); got {tuple(out.shape)}"
    _close(out, torch.zeros(2, 4), "with corrupted = clean tokens every attribution should be 0", atol=1e-6)


@exercise("induction_patch_by_pos")
def test_induction_patch_by_pos_matches_reference_on_shipped_model(impl, ref, ind_model, rep_small, ref_results):
    want = cached(ref_results, "ipp_z", lambda: ref.induction_patch_by_pos(ind_model, rep_small["clean"], rep_small["corrupted"], "z"))
    _close(impl.induction_patch_by_pos(ind_model, rep_small["clean"], rep_small["corrupted"], "z"), want, "induction_patch_by_pos (z)", atol=1e-4)


@exercise("induction_patch_by_pos")
def test_induction_patch_by_pos_matches_reference_for_keys_on_fresh_tokens(impl, ref, ind_model, rep_fresh, ref_results):
    want = cached(ref_results, "ipp_k", lambda: ref.induction_patch_by_pos(ind_model, rep_fresh["clean"], rep_fresh["corrupted"], "k"))
    _close(impl.induction_patch_by_pos(ind_model, rep_fresh["clean"], rep_fresh["corrupted"], "k"), want,
           "induction_patch_by_pos(..., 'k') on other repeated tokens", atol=1e-4)


@exercise("induction_patch_by_pos")
def test_induction_patch_by_pos_is_zero_without_corruption_and_at_bos(impl, ind_model, rep_small):
    r = rep_small
    same = _tensor(impl.induction_patch_by_pos(ind_model, r["clean"], r["clean"].clone(), "v"), "induction_patch_by_pos")
    _close(same, torch.zeros_like(same), "with corrupted = clean tokens nothing can change", atol=1e-5)
    out = _tensor(impl.induction_patch_by_pos(ind_model, r["clean"], r["corrupted"], "z"), "induction_patch_by_pos")
    _close(out[:, 0], torch.zeros(2, 4), "at BOS both runs are the same: patching there changes nothing", atol=1e-5)


# ------------------------------------------------------------------------------------------- Part 5
@exercise("qk_fix_keys")
def test_qk_fix_keys_matches_reference_on_random_inputs(impl, ref, seed):
    b, s, g = _qk_random(5)
    _close(impl.qk_fix_keys(b, s, g, 2, 2.0), ref.qk_fix_keys(b, s, g, 2, 2.0), "qk_fix_keys on random q, k and gradients", atol=1e-5)


@exercise("qk_fix_keys")
def test_qk_fix_keys_matches_reference_on_shipped_model(impl, ref, rep_stored, ind_model):
    b, s, g = rep_stored
    scale = ind_model.cfg.d_head ** 0.5
    _close(impl.qk_fix_keys(b, s, g, 2, scale), ref.qk_fix_keys(b, s, g, 2, scale), "qk_fix_keys on attn_only_2l", atol=1e-5)


@exercise("qk_fix_keys")
def test_qk_fix_keys_changes_only_the_patched_key(impl, ref, seed):
    b, s, g = _qk_random(6)
    for li in range(2):  # the source keys equal the base keys except at position 3
        name = f"blocks.{li}.attn.hook_k"
        s[name] = b[name].clone()
        s[name][:, 3] += torch.randn(s[name][:, 3].shape)
    out = _tensor(impl.qk_fix_keys(b, s, g, 2, 2.0), "qk_fix_keys")
    assert out.shape == (2, 5, 3), f"expected [n_layers, pos, n_heads] = (2, 5, 3); got {tuple(out.shape)}"
    keep = torch.ones(5, dtype=torch.bool)
    keep[3] = False
    _close(out[:, keep], torch.zeros(2, 4, 3), "keys equal to the base keys must give 0", atol=1e-6)
    ones = {k: torch.ones_like(v) for k, v in g.items()}
    _close(impl.qk_fix_keys(b, s, ones, 2, 2.0), torch.zeros(2, 5, 3), "a gradient of 1 everywhere gives 0 (softmax rows sum to 1; "
           "apply the causal mask)", atol=1e-5)


@exercise("qk_fix_queries")
def test_qk_fix_queries_matches_reference_on_random_inputs(impl, ref, seed):
    b, s, g = _qk_random(7)
    _close(impl.qk_fix_queries(b, s, g, 2, 2.0), ref.qk_fix_queries(b, s, g, 2, 2.0), "qk_fix_queries on random inputs", atol=1e-5)


@exercise("qk_fix_queries")
def test_qk_fix_queries_matches_reference_on_shipped_model(impl, ref, rep_stored, ind_model):
    b, s, g = rep_stored
    scale = ind_model.cfg.d_head ** 0.5
    _close(impl.qk_fix_queries(b, s, g, 2, scale), ref.qk_fix_queries(b, s, g, 2, scale), "qk_fix_queries on attn_only_2l", atol=1e-5)


@exercise("qk_fix_queries")
def test_qk_fix_queries_is_exact_for_one_patched_query(impl, seed):
    b, s, g = _qk_random(8)
    out = _tensor(impl.qk_fix_queries(b, s, g, 2, 2.0), "qk_fix_queries")
    assert out.shape == (2, 5, 3), f"expected [n_layers, pos, n_heads] = (2, 5, 3); got {tuple(out.shape)}"
    p, t, h = "blocks.1.attn.", 4, 2
    k = b[p + "hook_k"]
    row = (torch.einsum("bd,bkd->bk", s[p + "hook_q"][:, t, h], k[:, : t + 1, h]) / 2.0).softmax(-1)
    want = ((row - b[p + "hook_pattern"][:, h, t, : t + 1]) * g[p + "hook_pattern"][:, h, t, : t + 1]).sum()
    _close(out[1, t, h], want, "query 4 of head 2 in layer 1: (softmax of the source query's scaled scores over keys 0..4 "
           "minus the base row) . gradient", atol=1e-5)


@exercise("graddrop_heads_by_pos")
def test_graddrop_heads_by_pos_matches_reference_on_shipped_model(impl, ref, ioi_model, ioi_small, ref_results):
    want = cached(ref_results, "gd_small", lambda: ref.graddrop_heads_by_pos(ioi_model, *_ioi_args(ioi_small)))
    _close(impl.graddrop_heads_by_pos(ioi_model, *_ioi_args(ioi_small)), want, "graddrop_heads_by_pos", atol=1e-5)


@exercise("graddrop_heads_by_pos")
def test_graddrop_heads_by_pos_matches_reference_on_fresh_prompts(impl, ref, ioi_model, ioi_fresh, ref_results):
    want = cached(ref_results, "gd_fresh", lambda: ref.graddrop_heads_by_pos(ioi_model, *_ioi_args(ioi_fresh)))
    _close(impl.graddrop_heads_by_pos(ioi_model, *_ioi_args(ioi_fresh)), want, "graddrop_heads_by_pos on fresh prompts", atol=1e-5)


@exercise("graddrop_heads_by_pos")
def test_graddrop_last_layer_is_plain_attribution_magnitude(impl, ioi_model, ioi_small, ioi_stored):
    b, s, g = ioi_stored
    out = _tensor(impl.graddrop_heads_by_pos(ioi_model, *_ioi_args(ioi_small)), "graddrop_heads_by_pos")
    assert (out >= 0).all(), "GradDrop scores are sums of absolute values: none can be negative"
    name = "blocks.1.attn.hook_z"
    _close(out[1], ((s[name] - b[name]) * g[name]).sum((0, 3)).abs(), "a last-layer head keeps its whole gradient when layer "
           "0 is dropped and none when layer 1 is: its score is |plain attribution| / (L - 1)", atol=1e-5)
