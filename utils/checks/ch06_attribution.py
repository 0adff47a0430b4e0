"""Visible checks of chapter 6 (attribution patching).

They compare your functions with hand-worked answers on tiny inputs (one-hot differences and gradients, so that
each attribution lands in one known cell), with what TransformerLens computes itself (its cache, its backward
hooks, the sweeps of `transformer_lens.patching`, `lm_cross_entropy_loss`), with finite differences (a tiny patch
changes the metric by gradient times step) and with invariances (patching something with itself gives 0; softmax
rows sum to 1). They use the shipped offline models `ioi_gpt2_2l` and `attn_only_2l`, whichever model your notebook
loaded. They contain no reference solution.
"""

from __future__ import annotations

import contextlib
import functools
import io

import torch

from micourse.checks.core import as_float as _float
from micourse.checks.core import expect, expect_close, expect_shape, no_grad as _no_grad, visible


# --------------------------------------------------------------------------------------------- helpers
@functools.cache
def _ioi_model():
    from micourse.models import load_model

    return load_model("ioi_gpt2_2l", verbose=False)


@functools.cache
def _ind_model():
    from micourse.models import load_model

    return load_model("attn_only_2l", verbose=False)


@functools.cache
def _ioi(n: int = 2):
    """n prompts of one short template, their flipped version, and the two mean logit differences."""
    from micourse import ioi

    d = ioi.make_ioi_data(n, seed=5, templates=[5])
    flipped = d.tokens.clone()
    flipped[torch.arange(n), d.word_idx["S2"]] = d.io_ids
    model = _ioi_model()
    with torch.no_grad():
        clean_ld, corrupted_ld = _ld(model(d.tokens), d), _ld(model(flipped), d)
    return d, flipped, clean_ld, corrupted_ld


def _ld(logits, d):
    """The check's own mean logit difference at END."""
    end = logits[torch.arange(d.tokens.shape[0]), d.word_idx["end"]]
    return (end.gather(1, d.answer_ids[:, :1]) - end.gather(1, d.answer_ids[:, 1:])).mean()


@functools.cache
def _rep(n_batch: int = 2, n: int = 6, seed: int = 0):
    """BOS + R + R on attn_only_2l and the same with another first copy."""
    model = _ind_model()
    bos, vocab = model.tokenizer.bos_token_id, model.cfg.d_vocab
    gen = torch.Generator().manual_seed(seed)

    def draw():
        r = torch.randint(0, vocab - 1, (n_batch, n), generator=gen)
        r = r + (r >= bos).long()
        return r

    r, other = draw(), draw()
    bos_col = torch.full((n_batch, 1), bos, dtype=torch.long)
    return torch.cat([bos_col, r, r], 1), torch.cat([bos_col, other, r], 1), n


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def _tl_grads(model, tokens, names, metric):
    """Activations and gradients through TransformerLens's own hooks (the check's measurement)."""
    acts, grads = {}, {}
    fwd = [(n, lambda x, hook, n=n: acts.__setitem__(n, x.detach().clone()) or x) for n in names]
    bwd = [(n, lambda g, hook, n=n: grads.__setitem__(n, g.detach().clone())) for n in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        metric(model(tokens)).backward()
    model.zero_grad(set_to_none=True)
    return acts, grads


def _one_hot_dicts(template: str, shape: tuple, index: tuple, n_layers: int = 2, layer: int = 1):
    """base = 0, source = one-hot at `index` of `layer`, grads = 2 everywhere: the attribution is 2 at that cell."""
    base = {template.format(li): torch.zeros(shape) for li in range(n_layers)}
    source = {k: v.clone() for k, v in base.items()}
    source[template.format(layer)][index] = 1.0
    grads = {k: torch.full(shape, 2.0) for k in base}
    return base, source, grads


def _random_dicts(template: str, shape: tuple, n_layers: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    make = lambda: {template.format(li): torch.randn(shape, generator=gen) for li in range(n_layers)}
    return make(), make(), make()


# ------------------------------------------------------------------------------------------- Part 1
@visible("toy_network")
@_no_grad
def _toy_network(fn):
    u = torch.tensor([1.0, 2.0, 3.0])
    W = torch.tensor([[0.0, 100.0, -100.0], [1.0, 0.0, 0.0]])
    out = fn(torch.zeros(4, 2), W, u)
    expect_close(out, torch.full((4,), 3.0), "toy_network on x = 0 (every sigmoid is 1/2, so the output is u.sum() / 2)")
    out = fn(torch.tensor([[1.0, 0.0]]), W, u)
    expect_close(out, torch.tensor([0.5 * 1 + 1.0 * 2 + 0.0 * 3]),
                 "toy_network on x = [1, 0]: hidden pre-activations (0, 100, -100) give sigmoids (1/2, 1, 0)", atol=1e-4)


@visible("toy_gradient")
@_no_grad
def _toy_gradient(fn):
    gen = torch.Generator().manual_seed(0)
    W, u = torch.randn(3, 5, generator=gen), torch.randn(5, generator=gen)
    x = torch.zeros(2, 3)
    before = x.clone()
    out = fn(x, W, u)
    expect_shape(out, (2, 3), "toy_gradient ([batch, d_in])")
    expect(torch.equal(x, before), "toy_gradient must not modify x")
    expect_close(out, (W @ u / 4).expand(2, 3),
                 "toy_gradient at x = 0: sigmoid'(0) = 1/4, so the gradient is W @ u / 4 for every row", atol=1e-5)
    far = fn(torch.full((1, 3), 50.0), W.abs() + 1, u)
    expect_close(far, torch.zeros(1, 3), "toy_gradient deep in the flat part of the sigmoid should be ~0", atol=1e-6)


@visible("linear_estimate")
@_no_grad
def _linear_estimate(fn):
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    g = torch.tensor([[3.0, 1.0], [-1.0, 4.0]])
    expect_close(fn(a, b, g), torch.tensor([3.0 * 1 + 1.0 * -2, -1.0 + 4.0]),
                 "linear_estimate on a hand-made example: (b - a) . grad = (1, -2) . (3, 1) and (1, 1) . (-1, 4)")
    expect_close(fn(a, a, g), torch.zeros(2), "linear_estimate with b = a should be 0")


@visible("relative_error")
@_no_grad
def _relative_error(fn):
    exact = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    expect(abs(_float(fn(torch.zeros(2, 2), exact), "relative_error") - 1.0) < 1e-6, "an estimate of zeros should give 1")
    expect(abs(_float(fn(exact, exact), "relative_error")) < 1e-6, "a perfect estimate should give 0")
    est = torch.tensor([[2.0, -2.0], [3.0, 1.0]])
    got = _float(fn(est, exact), "relative_error")
    expect(abs(got - 2.0 / 6.0) < 1e-6, f"relative_error: |differences| sum to 2 and |exact| to 6, so 1/3; got {got:.4f}")


# ------------------------------------------------------------------------------------------- Part 2
@visible("mean_logit_diff")
def _mean_logit_diff(fn):
    logits = torch.zeros(2, 3, 5)
    logits[0, 2, 1], logits[0, 2, 4] = 3.0, 1.0
    logits[1, 1, 0] = -1.0
    logits[1, 2, 0] = 100.0  # after END of prompt 1: must be ignored
    answer_ids, end_pos = torch.tensor([[1, 4], [0, 3]]), torch.tensor([2, 1])
    out = fn(logits, answer_ids, end_pos)
    expect_shape(out, (), "mean_logit_diff (a 0-d tensor)")
    expect_close(out, torch.tensor(0.5), "mean_logit_diff on hand-made logits: prompt 0 gives 2, prompt 1 gives -1")
    leaf = logits.clone().requires_grad_(True)
    with torch.enable_grad():
        result = fn(leaf, answer_ids, end_pos)
        expect(result.requires_grad, "mean_logit_diff must keep the autograd graph (use tensor operations, not .item())")
        result.backward()
    want = torch.zeros(2, 3, 5)
    want[0, 2, 1], want[0, 2, 4], want[1, 1, 0], want[1, 1, 3] = 0.5, -0.5, 0.5, -0.5
    expect_close(leaf.grad, want, "gradient of mean_logit_diff: +-1/batch at each prompt's END, on its two answers")


@visible("normalised_metric")
@_no_grad
def _normalised_metric(fn):
    clean, corrupted = torch.tensor(4.0), torch.tensor(-2.0)
    expect_close(fn(torch.tensor([4.0, -2.0, 1.0, 7.0]), clean, corrupted), torch.tensor([1.0, 0.0, 0.5, 1.5]),
                 "normalised_metric with clean 4 and corrupted -2")
    expect_shape(fn(torch.zeros(2, 3), clean, corrupted), (2, 3), "normalised_metric on a [2, 3] grid")


@visible("acts_and_grads")
def _acts_and_grads(fn):
    model = _ioi_model()
    d, flipped, clean_ld, corrupted_ld = _ioi()
    names = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern", "blocks.1.mlp.hook_post"]
    out = fn(model, flipped, d.answer_ids, d.word_idx["end"], clean_ld, corrupted_ld, names)
    expect(isinstance(out, tuple) and len(out) == 3, "acts_and_grads should return (value, acts, grads)")
    value, acts, grads = out
    expect(abs(_float(value, "the value") - 0.0) < 1e-4, "on the corrupted prompts the normalised metric should be 0")
    expect(set(acts) == set(names) and set(grads) == set(names),
           f"acts and grads should have exactly the names asked for as keys; got {sorted(acts)} and {sorted(grads)}")
    with torch.no_grad():
        _, cache = model.run_with_cache(flipped)
    for name in names:
        expect_close(acts[name], cache[name], f"acts[{name!r}] vs model.run_with_cache", atol=1e-4)
    metric = lambda logits: (_ld(logits, d) - corrupted_ld) / (clean_ld - corrupted_ld)
    _, tl_grads = _tl_grads(model, flipped, names, metric)
    for name in names:
        expect_close(grads[name], tl_grads[name], f"grads[{name!r}] vs TransformerLens's backward hooks", atol=1e-5, rtol=1e-3)
    # a finite difference along a random direction of layer 0's z
    gen = torch.Generator().manual_seed(0)
    step = 1e-2 * torch.randn(acts["blocks.0.attn.hook_z"].shape, generator=gen)
    with torch.no_grad():
        moved = model.run_with_hooks(flipped, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z + step)])
    exact = metric(moved).item()
    estimate = (step * grads["blocks.0.attn.hook_z"]).sum().item()
    expect(abs(exact - estimate) <= 1e-3 + 0.05 * abs(exact),
           f"a small step in layer 0's z changed the metric by {exact:.5f}; gradient . step gives {estimate:.5f}")


# ------------------------------------------------------------------------------------------- Part 3
@visible("attr_resid")
@_no_grad
def _attr_resid(fn):
    base, source, grads = _one_hot_dicts("blocks.{}.hook_resid_pre", (2, 4, 3), (1, 2, 0))
    want = torch.zeros(2, 4)
    want[1, 2] = 2.0
    expect_close(fn(base, source, grads, 2), want, "attr_resid with one changed entry (layer 1, prompt 1, position 2) and "
                 "gradient 2 everywhere: 2 at (layer 1, position 2), 0 elsewhere (sum over the batch, do not average)")
    base, source, grads = _random_dicts("blocks.{}.hook_resid_pre", (3, 5, 4))
    expect_close(fn(base, base, grads, 2), torch.zeros(2, 5), "attr_resid with source = base should be 0")
    expect_close(fn(source, base, grads, 2), -fn(base, source, grads, 2), "swapping base and source should negate attr_resid")


@visible("attr_heads_by_pos")
@_no_grad
def _attr_heads_by_pos(fn):
    for act in ("z", "k"):
        base, source, grads = _one_hot_dicts("blocks.{}.attn.hook_" + act, (2, 4, 3, 5), (0, 1, 2, 3), layer=0)
        want = torch.zeros(2, 4, 3)
        want[0, 1, 2] = 2.0
        expect_close(fn(base, source, grads, 2, act), want,
                     f"attr_heads_by_pos(..., act={act!r}) with one changed entry of layer 0 (prompt 0, position 1, head 2): "
                     "2 at [0, 1, 2], 0 elsewhere")
    base, source, grads = _random_dicts("blocks.{}.attn.hook_z", (3, 5, 2, 4))
    expect_close(fn(base, base, grads, 2), torch.zeros(2, 5, 2), "attr_heads_by_pos with source = base should be 0")


@visible("attr_patterns")
@_no_grad
def _attr_patterns(fn):
    base, source, grads = _one_hot_dicts("blocks.{}.attn.hook_pattern", (2, 3, 4, 4), (1, 2, 3, 0))
    want = torch.zeros(2, 3)
    want[1, 2] = 2.0
    expect_close(fn(base, source, grads, 2), want, "attr_patterns with one changed entry of layer 1, head 2 "
                 "(patterns are [batch, n_heads, q_pos, k_pos]): 2 at [1, 2], 0 elsewhere")
    base, source, grads = _random_dicts("blocks.{}.attn.hook_pattern", (2, 3, 4, 4))
    expect_close(fn(base, base, grads, 2), torch.zeros(2, 3), "attr_patterns with source = base should be 0")


@visible("attr_neurons")
@_no_grad
def _attr_neurons(fn):
    base, source, grads = _one_hot_dicts("blocks.{}.mlp.hook_post", (2, 4, 6), (1, 3, 5), layer=0)
    want = torch.zeros(2, 6)
    want[0, 5] = 2.0
    expect_close(fn(base, source, grads, 2), want, "attr_neurons with one changed entry of layer 0 (prompt 1, position 3, "
                 "neuron 5): 2 at [0, 5], 0 elsewhere")
    base, source, grads = _random_dicts("blocks.{}.mlp.hook_post", (2, 4, 6))
    total = ((source["blocks.1.mlp.hook_post"] - base["blocks.1.mlp.hook_post"]) * grads["blocks.1.mlp.hook_post"]).sum()
    expect_close(fn(base, source, grads, 2)[1].sum(), total,
                 "the neurons' attributions of a layer should add up to the attribution of the whole layer")


def _patch_setting(short: bool = False):
    """The IOI prompts, or (short) 2 random 4-token rows differing at position 2 with END at position 3."""
    from transformer_lens import patching

    model = _ioi_model()
    d, flipped, clean_ld, corrupted_ld = _ioi()
    if short:
        d, flipped, clean_ld, corrupted_ld = _short()
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(d.tokens)
    metric = lambda logits: (_ld(logits, d) - corrupted_ld) / (clean_ld - corrupted_ld)
    return model, d, flipped, clean_cache, metric, patching


@functools.cache
def _short():
    import types

    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(1000, 20000, (2, 4), generator=gen)
    flipped = tokens.clone()
    flipped[:, 2] = torch.randint(1000, 20000, (2,), generator=gen)
    d = types.SimpleNamespace(tokens=tokens, answer_ids=torch.tensor([[5335, 1757], [1757, 5335]]),
                              word_idx={"end": torch.tensor([3, 3]), "S2": torch.tensor([2, 2])})
    model = _ioi_model()
    with torch.no_grad():
        clean_ld, corrupted_ld = _ld(model(tokens), d), _ld(model(flipped), d)
    return d, flipped, clean_ld, corrupted_ld


@visible("act_patch_resid")
@_no_grad
def _act_patch_resid(fn):
    model, d, flipped, clean_cache, metric, patching = _patch_setting()
    out = fn(model, d.tokens, flipped, d.answer_ids, d.word_idx["end"])
    expect_shape(out, (model.cfg.n_layers, d.tokens.shape[1]), "act_patch_resid ([n_layers, pos])")
    want0 = torch.zeros(d.tokens.shape[1])
    want0[int(d.word_idx["S2"][0])] = 1.0
    expect_close(out[0], want0, "before layer 0 only S2 differs: restoring it gives 1, any other position 0", atol=1e-3)
    expect_close(out, _quiet(patching.get_act_patch_resid_pre, model, flipped, clean_cache, metric),
                 "act_patch_resid vs transformer_lens.patching.get_act_patch_resid_pre", atol=1e-3)


@visible("act_patch_heads_by_pos")
@_no_grad
def _act_patch_heads_by_pos(fn):
    model, d, flipped, clean_cache, metric, patching = _patch_setting(short=True)
    out = fn(model, d.tokens, flipped, d.answer_ids, d.word_idx["end"], "z")
    expect_shape(out, (model.cfg.n_layers, d.tokens.shape[1], model.cfg.n_heads), "act_patch_heads_by_pos ([n_layers, pos, n_heads])")
    expect_close(out, _quiet(patching.get_act_patch_attn_head_out_by_pos, model, flipped, clean_cache, metric),
                 "act_patch_heads_by_pos(..., 'z') on two short rows that differ at position 2 vs "
                 "transformer_lens.patching.get_act_patch_attn_head_out_by_pos", atol=1e-3)
    out_k = fn(model, d.tokens, flipped, d.answer_ids, d.word_idx["end"], "k")
    expect_close(out_k[0, :2], torch.zeros(2, model.cfg.n_heads),
                 "act='k': layer-0 keys before the changed position are the same in both runs, so restoring them should "
                 "give 0", atol=1e-4)
    expect_close(out_k, _quiet(patching.get_act_patch_attn_head_k_by_pos, model, flipped, clean_cache, metric),
                 "act_patch_heads_by_pos(..., 'k') vs transformer_lens.patching.get_act_patch_attn_head_k_by_pos", atol=1e-3)


@visible("act_patch_patterns")
@_no_grad
def _act_patch_patterns(fn):
    model, d, flipped, clean_cache, metric, patching = _patch_setting()
    out = fn(model, d.tokens, flipped, d.answer_ids, d.word_idx["end"])
    expect_shape(out, (model.cfg.n_layers, model.cfg.n_heads), "act_patch_patterns ([n_layers, n_heads])")
    expect_close(out, _quiet(patching.get_act_patch_attn_head_pattern_all_pos, model, flipped, clean_cache, metric),
                 "act_patch_patterns vs transformer_lens.patching.get_act_patch_attn_head_pattern_all_pos", atol=1e-3)


@visible("act_patch_neurons")
@_no_grad
def _act_patch_neurons(fn):
    model, d, flipped, clean_cache, metric, patching = _patch_setting()
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(flipped)
    s2 = int(d.word_idx["S2"][0])
    moved = (clean_cache["blocks.0.mlp.hook_post"] - corrupted_cache["blocks.0.mlp.hook_post"])[:, s2].abs().sum(0)
    top = moved.topk(2).indices.tolist()  # the two neurons that change most at S2 (not at END)
    neurons = [max(top), 3, min(top)]  # in no sorted order: the result must follow the list
    out = fn(model, d.tokens, flipped, d.answer_ids, d.word_idx["end"], 0, neurons)
    expect_shape(out, (len(neurons),), "act_patch_neurons ([len(neurons)])")
    # restoring neuron i of hook_post adds (clean - corrupted)_i * W_out[i] to the MLP's output at every position
    W_out = model.blocks[0].mlp.W_out
    for i, neuron in enumerate(neurons):
        diff = clean_cache["blocks.0.mlp.hook_post"][..., neuron] - corrupted_cache["blocks.0.mlp.hook_post"][..., neuron]
        shift = diff[..., None] * W_out[neuron]
        logits = model.run_with_hooks(flipped, fwd_hooks=[("blocks.0.hook_mlp_out", lambda x, hook: x + shift)])
        expect_close(out[i], metric(logits), f"act_patch_neurons for neuron {neuron} of layer 0 vs adding "
                     "(clean - corrupted activation) * W_out[neuron] to the MLP's output at every position", atol=1e-3)
    expect_shape(fn(model, d.tokens, flipped, d.answer_ids, d.word_idx["end"], 1, []), (0,), "act_patch_neurons with no neurons")


@visible("pearson_correlation")
@_no_grad
def _pearson_correlation(fn):
    x = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    expect(abs(_float(fn(x, 3 * x + 1), "pearson_correlation") - 1) < 1e-6, "y = 3 x + 1 should give 1")
    expect(abs(_float(fn(x, -x), "pearson_correlation") + 1) < 1e-6, "y = -x should give -1")
    got = _float(fn(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])), "pearson_correlation")
    expect(abs(got - 0.5) < 1e-6, f"x = (1, 2, 3), y = (1, 3, 2): centred (-1, 0, 1) and (-1, 1, 0) give 1 / 2; got {got:.4f}")
    got = _float(fn(torch.tensor([1.0, 2.0, 3.0]) + 100, torch.tensor([1.0, 3.0, 2.0])), "pearson_correlation")
    expect(abs(got - 0.5) < 1e-6, "adding a constant to x must not change the correlation (centre both)")


# ------------------------------------------------------------------------------------------- Part 4
@visible("second_copy_logprob")
def _second_copy_logprob(fn):
    from transformer_lens import utilities

    n = 3
    tokens = torch.tensor([[0, 1, 2, 3, 1, 2, 3]])
    logits = torch.zeros(1, 7, 4)
    out = fn(logits, tokens, n)
    expect_shape(out, (), "second_copy_logprob (a 0-d tensor)")
    expect_close(out, -torch.log(torch.tensor(4.0)), "uniform logits over 4 tokens give log(1/4)")
    logits[0, 4, 2] = logits[0, 5, 3] = 50.0  # position 4 predicts position 5 (R[1]), 5 predicts 6 (R[2])
    logits[0, 3, 0] = 50.0  # the prediction of R[0] of the second copy must not count
    expect_close(fn(logits, tokens, n), torch.tensor(0.0), "confident right predictions of R[1], R[2] of the second copy "
                 "(at positions 4 and 5) should give ~0; the prediction of the copy's first token must not count", atol=1e-4)
    model = _ind_model()
    rep, _, n = _rep()
    with torch.no_grad():
        rep_logits = model(rep)
        want = -utilities.lm_cross_entropy_loss(rep_logits, rep, per_token=True)[:, n + 1:].mean()
        expect_close(fn(rep_logits, rep, n), want, "second_copy_logprob vs minus TransformerLens's per-token loss on the "
                     "second copy", atol=1e-4)


@visible("corrupt_first_copy")
@_no_grad
def _corrupt_first_copy(fn):
    tokens = torch.tensor([[9, 1, 2, 1, 2], [9, 3, 4, 3, 4]])
    other = torch.tensor([[9, 5, 6, 5, 6], [9, 7, 8, 7, 8]])
    before = tokens.clone()
    expect_close(fn(tokens, 2, other), torch.tensor([[9, 5, 6, 1, 2], [9, 7, 8, 3, 4]]),
                 "corrupt_first_copy with n = 2: positions 1 and 2 from other, BOS and the second copy kept")
    expect(torch.equal(tokens, before), "corrupt_first_copy must not modify its input")


@visible("induction_acts_and_grads")
def _induction_acts_and_grads(fn):
    from transformer_lens import utilities

    model = _ind_model()
    rep, _, n = _rep()
    names = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_k"]
    out = fn(model, rep, names)
    expect(isinstance(out, tuple) and len(out) == 3, "induction_acts_and_grads should return (value, acts, grads)")
    value, acts, grads = out
    metric = lambda logits: -utilities.lm_cross_entropy_loss(logits, rep, per_token=True)[:, n + 1:].mean()
    with torch.no_grad():
        want = metric(model(rep)).item()
    expect(abs(_float(value, "the value") - want) < 1e-4, f"the value should be minus the mean per-token loss on R[1:] of "
           f"the second copy ({want:.4f}); got {_float(value, 'the value'):.4f}")
    expect(set(acts) == set(names) and set(grads) == set(names), "acts and grads should be keyed by the names asked for")
    tl_acts, tl_grads = _tl_grads(model, rep, names, metric)
    for name in names:
        expect_close(acts[name], tl_acts[name], f"acts[{name!r}] vs TransformerLens's forward hooks", atol=1e-5)
        expect_close(grads[name], tl_grads[name], f"grads[{name!r}] vs TransformerLens's backward hooks", atol=1e-5, rtol=1e-3)


@visible("induction_head_attribution")
def _induction_head_attribution(fn):
    model = _ind_model()
    rep, corrupted, n = _rep(4, 8)
    same = fn(model, rep, rep.clone())
    expect_shape(same, (model.cfg.n_layers, model.cfg.n_heads), "induction_head_attribution ([n_layers, n_heads])")
    expect_close(same, torch.zeros_like(same), "with corrupted = clean tokens every attribution should be 0", atol=1e-6)
    out = fn(model, rep, corrupted)
    with torch.no_grad():
        _, cache = model.run_with_cache(rep)
    prev = int(cache["pattern", 0].diagonal(-1, dim1=-2, dim2=-1).mean((0, -1)).argmax())
    ind_scores = cache["pattern", 1].diagonal(1 - n, dim1=-2, dim2=-1)[..., 2:].mean((0, -1))
    known = {(0, prev)} | {(1, h) for h in range(model.cfg.n_heads) if ind_scores[h] >= 0.4}
    top = {divmod(int(i), model.cfg.n_heads) for i in out.flatten().argsort()[:len(known)]}
    name = lambda heads: sorted(f"L{layer}H{h}" for layer, h in heads)
    expect(top == known, f"the {len(known)} most negative attributions are {name(top)}; expected the previous-token head and "
           f"the induction heads (by their attention scores): {name(known)}. Noising them should hurt the second copy most")


@visible("induction_patch_by_pos")
@_no_grad
def _induction_patch_by_pos(fn):
    from transformer_lens import patching, utilities

    model = _ind_model()
    rep, corrupted, n = _rep(2, 5)
    out = fn(model, rep, corrupted, "z")
    expect_shape(out, (model.cfg.n_layers, rep.shape[1], model.cfg.n_heads), "induction_patch_by_pos ([n_layers, pos, n_heads])")
    with torch.no_grad():
        base = -utilities.lm_cross_entropy_loss(model(rep), rep, per_token=True)[:, n + 1:].mean()
        _, corrupted_cache = model.run_with_cache(corrupted)
    metric = lambda logits: -utilities.lm_cross_entropy_loss(logits, rep, per_token=True)[:, n + 1:].mean() - base
    want = _quiet(patching.get_act_patch_attn_head_out_by_pos, model, rep, corrupted_cache, metric)
    expect_close(out, want, "induction_patch_by_pos(..., 'z') vs transformer_lens.patching.get_act_patch_attn_head_out_by_pos "
                 "(patching corrupted z into the clean run, metric = change in the second-copy log-probability)", atol=1e-4)
    out_q = fn(model, rep, corrupted, "q")
    expect_close(out_q[:, 0], torch.zeros(model.cfg.n_layers, model.cfg.n_heads), "act='q': at BOS (position 0) both runs "
                 "have seen the same single token, so patching there should change nothing", atol=1e-5)


# ------------------------------------------------------------------------------------------- Part 5
@functools.cache
def _qk_setting():
    """Base and source q, k, pattern on attn_only_2l, and the gradients there (via TransformerLens's backward hooks)."""
    from transformer_lens import utilities

    model = _ind_model()
    rep, corrupted, n = _rep(2, 5)
    names = [f"blocks.{li}.attn.hook_{a}" for li in range(2) for a in ("q", "k", "pattern")]
    metric = lambda logits: -utilities.lm_cross_entropy_loss(logits, rep, per_token=True)[:, n + 1:].mean()
    base, grads = _tl_grads(model, rep, names, metric)
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted)
    source = {name: cache[name] for name in names}
    return model, base, source, grads


def _nudged(base, act, eps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = dict(base)
    for li in range(2):
        name = f"blocks.{li}.attn.hook_{act}"
        out[name] = base[name] + eps * torch.randn(base[name].shape, generator=gen)
    return out


def _qk_checks(fn, act, what):
    model, base, source, grads = _qk_setting()
    scale = model.cfg.d_head ** 0.5
    P, H = base["blocks.0.attn.hook_q"].shape[1], model.cfg.n_heads
    out = fn(base, source, grads, 2, scale)
    expect_shape(out, (2, P, H), f"{what} ([n_layers, pos, n_heads])")
    expect_close(fn(base, base, grads, 2, scale), torch.zeros(2, P, H), f"{what} with source = base should be 0", atol=1e-6)
    ones = {k: torch.ones_like(v) for k, v in grads.items()}
    expect_close(fn(base, source, ones, 2, scale), torch.zeros(2, P, H),
                 f"{what} with a gradient of 1 on every pattern entry should be 0 (each softmax row sums to 1)", atol=1e-4)
    # for a tiny change of the queries/keys, the exact softmax and the linearisation agree: compare with grad . step
    nudged = _nudged(base, act, 1e-3)
    got = fn(base, nudged, grads, 2, scale)
    want = torch.stack([((nudged[f"blocks.{li}.attn.hook_{act}"] - base[f"blocks.{li}.attn.hook_{act}"])
                         * grads[f"blocks.{li}.attn.hook_{act}"]).sum((0, 3)) for li in range(2)])
    expect_close(got, want, f"{what} for a tiny change of the {'keys' if act == 'k' else 'queries'} should agree with "
                 "gradient . change (computed from TransformerLens's backward hooks)", atol=2e-5, rtol=2e-2)


@visible("qk_fix_keys")
@_no_grad
def _qk_fix_keys(fn):
    _qk_checks(fn, "k", "qk_fix_keys")


@visible("qk_fix_queries")
@_no_grad
def _qk_fix_queries(fn):
    _qk_checks(fn, "q", "qk_fix_queries")


@visible("graddrop_heads_by_pos")
def _graddrop_heads_by_pos(fn):
    model = _ioi_model()
    d, flipped, clean_ld, corrupted_ld = _ioi()
    out = fn(model, d.tokens, flipped, d.answer_ids, d.word_idx["end"])
    expect_shape(out, (model.cfg.n_layers, d.tokens.shape[1], model.cfg.n_heads), "graddrop_heads_by_pos ([n_layers, pos, n_heads])")
    expect(bool((out >= 0).all()), "GradDrop scores are sums of absolute values: none can be negative")
    names = [f"blocks.{li}.attn.hook_z" for li in range(model.cfg.n_layers)]
    metric = lambda logits: (_ld(logits, d) - corrupted_ld) / (clean_ld - corrupted_ld)
    corrupted_acts, grads = _tl_grads(model, flipped, names, metric)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(d.tokens)
    last = names[-1]
    plain = ((clean_cache[last] - corrupted_acts[last]) * grads[last]).sum((0, 3)).abs()
    expect_close(out[-1], plain / (model.cfg.n_layers - 1), "in the last layer only dropping an earlier layer keeps the "
                 "gradient, and that leaves it unchanged: the score should be |plain attribution| / (L - 1)", atol=1e-5)
