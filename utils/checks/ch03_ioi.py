"""Visible checks of chapter 3 (indirect object identification).

They compare your functions with hand-worked answers on tiny inputs, with what TransformerLens itself computes
(its cache, `accumulated_resid`, `decompose_resid`, `stack_head_results`, `apply_ln_to_stack` and the sweeps of
`transformer_lens.patching`), and with invariances (a patch that changes nothing gives 0; ablating with a
prompt's own means changes nothing). They always use the shipped offline model `ioi_gpt2_2l` on a few prompts,
whichever model your notebook loaded. They contain no reference solution.
"""

from __future__ import annotations

import contextlib
import functools
import io

import torch

from micourse.checks.core import expect, expect_close, expect_shape, visible
from micourse.checks.core import as_float as _float, no_grad as _no_grad


# --------------------------------------------------------------------------------------------- helpers
@functools.cache
def _model():
    from micourse.models import load_model

    return load_model("ioi_gpt2_2l", verbose=False)


@functools.cache
def _data(n: int = 3, kind: str = "ioi"):
    """n prompts of one short template (positions line up), with the same prompts as ABC when kind='abc'."""
    from micourse import ioi

    return ioi.make_ioi_data(n, seed=5, templates=[5], kind=kind)


@functools.cache
def _run(n: int = 3):
    d = _data(n)
    with torch.no_grad():
        logits, cache = _model().run_with_cache(d.tokens)
    return d, logits, cache


def _end_ld(logits, d) -> torch.Tensor:
    """The logit difference at END of every prompt of `d` (the check's own measurement)."""
    end = logits[torch.arange(len(d)), d.word_idx["end"]]
    return end.gather(1, d.answer_ids[:, :1])[:, 0] - end.gather(1, d.answer_ids[:, 1:])[:, 0]


def _bias_share(model, d) -> torch.Tensor:
    return (model.b_U[d.io_ids] - model.b_U[d.s_ids]).mean()


def _attribute(cache, stack, d) -> torch.Tensor:
    """TransformerLens's own attribution: apply_ln_to_stack at every position, then END and the IO - S direction."""
    model = _model()
    normed = cache.apply_ln_to_stack(stack, layer=-1)[:, torch.arange(len(d)), d.word_idx["end"]]
    direction = (model.W_U[:, d.io_ids] - model.W_U[:, d.s_ids]).T
    return (normed * direction).sum(-1).mean(-1)


def _flipped(d) -> torch.Tensor:
    out = d.tokens.clone()
    out[torch.arange(len(d)), d.word_idx["S2"]] = d.io_ids
    return out


def _quiet(fn, *args, **kwargs):
    """Call a TransformerLens sweep without its progress bars."""
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def _grid_shape(out, what):
    m = _model()
    expect_shape(out, (m.cfg.n_layers, m.cfg.n_heads), what)


# ------------------------------------------------------------------------------------------- Part 1
@visible("logit_diff")
@_no_grad
def _logit_diff(fn):
    logits = torch.zeros(2, 3, 5)
    logits[0, 2, 1], logits[0, 2, 4] = 3.0, 1.0
    logits[1, 1, 0] = -1.0
    logits[1, 2, 0] = 100.0  # after END of prompt 1 (padding): must be ignored
    answer_ids, end_pos = torch.tensor([[1, 4], [0, 3]]), torch.tensor([2, 1])
    expect_close(fn(logits, answer_ids, end_pos), torch.tensor([2.0, -1.0]),
                 "logit_diff on hand-made logits (prompt 0 ends at position 2, prompt 1 at position 1)")
    d, model_logits, _ = _run()
    out = fn(model_logits, d.answer_ids, d.word_idx["end"])
    expect_shape(out, (len(d),), "logit_diff on the shipped model")
    expect(bool((out > 0).all()), "the shipped model prefers IO on these prompts, so every logit difference should be positive")
    expect_close(fn(model_logits, d.answer_ids.flip(1), d.word_idx["end"]), -out,
                 "swapping the correct and incorrect columns should negate the logit difference")


@visible("corrupt_s2")
@_no_grad
def _corrupt_s2(fn):
    tokens = torch.tensor([[0, 5, 6, 5, 9], [0, 7, 8, 8, 9]])
    before = tokens.clone()
    out = fn(tokens, torch.tensor([3, 3]), torch.tensor([6, 7]))
    expect_close(out, torch.tensor([[0, 5, 6, 6, 9], [0, 7, 8, 7, 9]]),
                 "corrupt_s2 on two hand-made rows (only position 3 of each row changes; S1 at 1 or 2 stays)")
    expect(torch.equal(tokens, before), "corrupt_s2 must not modify its input: work on tokens.clone()")


# ------------------------------------------------------------------------------------------- Part 2
@visible("logit_diff_directions")
@_no_grad
def _logit_diff_directions(fn):
    W_U = torch.arange(12.0).reshape(3, 4)  # d_model 3, d_vocab 4
    out = fn(W_U, torch.tensor([[3, 0], [1, 2]]))
    expect_close(out, torch.tensor([[3.0, 3.0, 3.0], [-1.0, -1.0, -1.0]]),
                 "logit_diff_directions with W_U = arange(12).reshape(3, 4) and answers (3, 0), (1, 2)")
    d, logits, cache = _run()
    model = _model()
    rows, end = torch.arange(len(d)), d.word_idx["end"]
    normalised = cache["ln_final.hook_normalized"][rows, end]
    directions = fn(model.W_U, d.answer_ids)
    expect_close((normalised * directions).sum(-1), _end_ld(logits, d) - (model.b_U[d.io_ids] - model.b_U[d.s_ids]),
                 "final LayerNorm output at END . your directions should equal the logit difference minus "
                 "b_U[IO] - b_U[S]", atol=1e-3)


@visible("apply_final_ln")
@_no_grad
def _apply_final_ln(fn):
    stack = torch.tensor([[[1.0, 2.0, 6.0]], [[0.0, 0.0, 3.0]]])  # [2 components, batch 1, d_model 3]
    out = fn(stack, torch.tensor([[2.0]]))
    expect_close(out, torch.tensor([[[-1.0, -0.5, 1.5]], [[-0.5, -0.5, 1.0]]]),
                 "apply_final_ln: centre each vector (mean 3 and 1), then divide by the scale 2")
    d, _, cache = _run()
    model = _model()
    rows, end = torch.arange(len(d)), d.word_idx["end"]
    resid = cache["resid_post", model.cfg.n_layers - 1][rows, end]
    scale = cache["ln_final.hook_scale"][rows, end]
    expect_close(fn(resid, scale), cache["ln_final.hook_normalized"][rows, end],
                 "apply_final_ln on the final residual stream at END (vs cache['ln_final.hook_normalized'])", atol=1e-4)
    expect_close(fn(resid[None, None].expand(2, 3, -1, -1), scale), cache["ln_final.hook_normalized"][rows, end].expand(2, 3, -1, -1),
                 "apply_final_ln on a stack with two leading component axes", atol=1e-4)


@visible("logit_lens_logit_diff")
@_no_grad
def _logit_lens_logit_diff(fn):
    d, logits, cache = _run()
    model = _model()
    out = fn(model, d.tokens, d.answer_ids, d.word_idx["end"])
    expect_shape(out, (2 * model.cfg.n_layers + 1,), "logit_lens_logit_diff ([2 n_layers + 1]: 0_pre, 0_mid, ..., final_post)")
    expect_close(out[-1], _end_ld(logits, d).mean() - _bias_share(model, d),
                 "the last entry (final residual stream) should be the mean logit difference minus the unembedding bias "
                 "share", atol=1e-3)
    want = _attribute(cache, cache.accumulated_resid(layer=-1, incl_mid=True), d)
    expect_close(out, want, "logit_lens_logit_diff vs TransformerLens's accumulated_resid + apply_ln_to_stack", atol=1e-3)
    from micourse import ioi

    padded = ioi.make_ioi_data(3, seed=8)  # prompts of different lengths: END is not position -1
    out = fn(model, padded.tokens, padded.answer_ids, padded.word_idx["end"])
    expect_close(out[-1], _end_ld(model(padded.tokens), padded).mean() - _bias_share(model, padded),
                 "the last entry on right-padded prompts of different lengths (read each prompt at its own END)", atol=1e-3)


@visible("dla_by_component")
@_no_grad
def _dla_by_component(fn):
    d, logits, cache = _run()
    model = _model()
    out = fn(model, d.tokens, d.answer_ids, d.word_idx["end"])
    expect_shape(out, (2 + 2 * model.cfg.n_layers,), "dla_by_component ([embed, pos_embed, 0_attn, 0_mlp, ...])")
    expect_close(out.sum() + _bias_share(model, d), _end_ld(logits, d).mean(),
                 "the components plus the unembedding bias share should add up to the mean logit difference", atol=1e-3)
    expect_close(out, _attribute(cache, cache.decompose_resid(layer=-1), d),
                 "dla_by_component vs TransformerLens's decompose_resid + apply_ln_to_stack", atol=1e-3)


def _head_dla(cache, d):
    model = _model()
    per_head = _attribute(cache, cache.stack_head_results(layer=-1), d)
    return per_head.reshape(model.cfg.n_layers, model.cfg.n_heads)


@visible("dla_by_head")
@_no_grad
def _dla_by_head(fn):
    d, _, cache = _run()
    model = _model()
    out = fn(model, d.tokens, d.answer_ids, d.word_idx["end"])
    _grid_shape(out, "dla_by_head")
    layers = _attribute(cache, cache.decompose_resid(layer=-1), d)[2::2]  # each layer's attn_out
    bias = torch.stack([_attribute(cache, model.b_O[layer].expand(1, *cache["resid_post", 0].shape), d)[0]
                        for layer in range(model.cfg.n_layers)])
    expect_close(out.sum(1) + bias, layers, "each layer's heads plus its b_O share should add up to its attention output's "
                 "attribution", atol=1e-3)
    expect_close(out, _head_dla(cache, d), "dla_by_head vs TransformerLens's stack_head_results + apply_ln_to_stack", atol=1e-3)


@visible("dla_on_names")
@_no_grad
def _dla_on_names(fn):
    d, _, cache = _run()
    model = _model()
    names = torch.cat([d.answer_ids, d.io_ids[:, None]], dim=1)  # IO, S, IO again
    out = fn(model, d.tokens, names, d.word_idx["end"])
    expect_shape(out, (model.cfg.n_layers, model.cfg.n_heads, 3), "dla_on_names with 3 names per prompt")
    expect_close(out[..., 0] - out[..., 1], _head_dla(cache, d),
                 "the IO column minus the S column should be each head's logit-difference attribution", atol=1e-3)
    expect_close(out[..., 2], out[..., 0], "the same name twice should get the same attribution")


# ------------------------------------------------------------------------------------------- Part 3
@visible("attention_from_end")
@_no_grad
def _attention_from_end(fn):
    pattern = torch.zeros(2, 2, 4, 4)
    pattern[0, :, 3] = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 0.0]])  # prompt 0: END = 3
    pattern[1, :, 2, :3] = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])  # prompt 1: END = 2
    out = fn(pattern, torch.tensor([3, 2]), torch.tensor([1, 0]))
    expect_close(out, torch.tensor([(0.2 + 0.5) / 2, (1.0 + 0.2) / 2]),
                 "attention_from_end on a hand-made pattern (END 3 and 2, key positions 1 and 0)")
    d, _, cache = _run()
    out = fn(cache["pattern", 1], d.word_idx["end"], d.word_idx["end"])
    expect_close(out, cache["pattern", 1][torch.arange(len(d)), :, d.word_idx["end"], d.word_idx["end"]].mean(0),
                 "attention from END to END itself on the shipped model")


# ------------------------------------------------------------------------------------------- Part 4
@visible("patching_metric")
@_no_grad
def _patching_metric(fn):
    ld = torch.tensor([[2.0, -1.0], [0.5, 3.5]])
    expect_close(fn(ld, torch.tensor(2.0), torch.tensor(-1.0)), torch.tensor([[1.0, 0.0], [0.5, 1.5]]),
                 "patching_metric with clean 2 and corrupted -1 (clean -> 1, corrupted -> 0)")


def _tl_metric(d, clean_ld, corrupted_ld):
    return lambda logits: (_end_ld(logits, d).mean() - corrupted_ld) / (clean_ld - corrupted_ld)


@functools.cache
def _patch_setting():
    """2 prompts, their flipped version, TransformerLens's metric and the clean cache."""
    from transformer_lens import patching

    model, d = _model(), _data(2)
    corrupted = _flipped(d)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(d.tokens)
        clean_ld, corrupted_ld = _end_ld(clean_logits, d).mean(), _end_ld(model(corrupted), d).mean()
    return model, d, corrupted, clean_cache, _tl_metric(d, clean_ld, corrupted_ld), patching


@visible("patch_residual")
@_no_grad
def _patch_residual(fn):
    model, d, corrupted, clean_cache, metric, patching = _patch_setting()
    out = fn(model, d.tokens, corrupted, d.answer_ids, d.word_idx["end"])
    expect_shape(out, (model.cfg.n_layers, d.tokens.shape[1]), "patch_residual ([n_layers, pos])")
    s2 = int(d.word_idx["S2"][0])
    want0 = torch.zeros(d.tokens.shape[1])
    want0[s2] = 1.0
    expect_close(out[0], want0, "before layer 0 only the S2 position differs between clean and corrupted tokens: "
                 "restoring it gives 1, any other position 0", atol=1e-3)
    want = _quiet(patching.get_act_patch_resid_pre, model, corrupted, clean_cache, metric)
    expect_close(out, want, "patch_residual vs transformer_lens.patching.get_act_patch_resid_pre", atol=1e-3)


@visible("patch_head_outputs")
@_no_grad
def _patch_head_outputs(fn):
    model, d, corrupted, clean_cache, metric, patching = _patch_setting()
    out = fn(model, d.tokens, corrupted, d.answer_ids, d.word_idx["end"])
    _grid_shape(out, "patch_head_outputs")
    want = _quiet(patching.get_act_patch_attn_head_out_all_pos, model, corrupted, clean_cache, metric)
    expect_close(out, want, "patch_head_outputs vs transformer_lens.patching.get_act_patch_attn_head_out_all_pos", atol=1e-3)


@visible("patch_head_activation")
@_no_grad
def _patch_head_activation(fn):
    model, d, corrupted, clean_cache, metric, patching = _patch_setting()
    for activation in ("pattern", "q"):
        sweep = f"get_act_patch_attn_head_{activation}_all_pos"
        out = fn(model, d.tokens, corrupted, d.answer_ids, d.word_idx["end"], activation)
        _grid_shape(out, f"patch_head_activation(..., {activation!r})")
        expect_close(out, _quiet(getattr(patching, sweep), model, corrupted, clean_cache, metric),
                     f"patch_head_activation(..., {activation!r}) vs transformer_lens.patching.{sweep}", atol=1e-3)


# ------------------------------------------------------------------------------------------- Part 5
@visible("path_patch_to_logits")
@_no_grad
def _path_patch_to_logits(fn):
    from transformer_lens import patching

    model, d, abc = _model(), _data(2), _data(2, "abc")
    out = fn(model, d.tokens, abc.tokens, d.answer_ids, d.word_idx["end"])
    _grid_shape(out, "path_patch_to_logits")
    clean_logits = model(d.tokens)
    abc_logits, abc_cache = model.run_with_cache(abc.tokens)
    clean_ld, abc_ld = _end_ld(clean_logits, d).mean(), _end_ld(abc_logits, d).mean()
    metric = lambda logits: (_end_ld(logits, d).mean() - clean_ld) / (clean_ld - abc_ld)
    last = model.cfg.n_layers - 1
    want = _quiet(patching.get_act_patch_attn_head_out_all_pos, model, d.tokens, abc_cache, metric)[last]
    expect_close(out[last], want, "the last layer has nothing downstream to freeze: its row should equal plain patching "
                 "of those heads' outputs from the ABC run into the clean run, as (LD - clean) / (clean - ABC)", atol=1e-3)
    # Earlier senders: the same TransformerLens sweep, run while every head's z is held at its clean value (the freeze
    # runs first, the sweep's patch of the one sender after it), is path patching by definition.
    _, clean_cache = model.run_with_cache(d.tokens, names_filter=lambda name: name.endswith("hook_z"))
    pin = lambda z, hook: clean_cache[hook.name].clone()
    with model.hooks(fwd_hooks=[(lambda name: name.endswith("hook_z"), pin)]):
        frozen = _quiet(patching.get_act_patch_attn_head_out_all_pos, model, d.tokens, abc_cache, metric)
    expect_close(out[:last], frozen[:last], "senders below the last layer: with every other head frozen to its clean z, the "
                 "sender's effect must go through the MLPs and the residual stream only (did you freeze the other heads "
                 "in every layer?)", atol=1e-3)


@visible("path_patch_to_heads")
@_no_grad
def _path_patch_to_heads(fn):
    model, d, abc = _model(), _data(2), _data(2, "abc")
    last = model.cfg.n_layers - 1
    out = fn(model, d.tokens, abc.tokens, d.answer_ids, d.word_idx["end"], [(last, 0), (last, 1)], "v", None)
    _grid_shape(out, "path_patch_to_heads")
    expect(bool((out[last] == 0).all()), "senders in the receivers' layer (or later) cannot reach them: their entries must be 0")
    expect(bool(torch.isfinite(out).all()), "path_patch_to_heads returned inf or nan")
    # The layer-`last` head whose own output matters least (noising it alone moves the logit difference least): a path
    # into its values can carry no more than a small part of the answer, while the other heads of its layer can.
    from transformer_lens import patching

    clean_ld = _end_ld(model(d.tokens), d).mean()
    abc_logits, abc_cache = model.run_with_cache(abc.tokens)
    abc_ld = _end_ld(abc_logits, d).mean()
    total = _quiet(patching.get_act_patch_attn_head_out_all_pos, model, d.tokens, abc_cache,
                   lambda logits: (_end_ld(logits, d).mean() - clean_ld) / (clean_ld - abc_ld))[last]
    idle = int(total.abs().argmin())
    out = fn(model, d.tokens, abc.tokens, d.answer_ids, d.word_idx["end"], [(last, idle)], "v", None)
    expect(bool((out.abs() <= total[idle].abs() + 0.05).all()),
           f"L{last}H{idle} barely matters (noising its whole output changes the metric by {total[idle]:+.3f}), so no path "
           f"into its values alone can change it by more; got entries up to {out.abs().max():.3f}: did you write the "
           f"patched inputs into the listed receiver heads only, not into every head of their layer?")
    bos = torch.zeros(len(d), dtype=torch.long)
    out = fn(model, d.tokens, abc.tokens, d.answer_ids, d.word_idx["end"], [(last, h) for h in range(model.cfg.n_heads)],
             "q", bos)
    expect_close(out, torch.zeros_like(out), "the query at position 0 (BOS) can only attend to BOS, so path patching into it "
                 "should change nothing (every entry 0); did you write the receivers' inputs at receiver_pos only?", atol=1e-4)


# ------------------------------------------------------------------------------------------- Part 6
@visible("repeated_token_head_scores")
@_no_grad
def _repeated_token_head_scores(fn):
    n, seq = 3, 7
    prev, dup, ind, uniform = (torch.zeros(seq, seq) for _ in range(4))
    prev[0, 0] = dup[0, 0] = ind[0, 0] = 1.0
    for q in range(1, seq):
        prev[q, q - 1] = 1.0
        dup[q, q - n if q > n else 0] = 1.0
        ind[q, q - n + 1 if q > n else 0] = 1.0
    uniform = torch.tril(torch.ones(seq, seq)) / torch.arange(1, seq + 1)[:, None]
    out = fn(torch.stack([prev, dup, ind, uniform])[None].repeat(2, 1, 1, 1))
    expect(isinstance(out, dict) and set(out) == {"previous token", "duplicate token", "induction"},
           f"repeated_token_head_scores should return a dict with keys 'previous token', 'duplicate token', 'induction'; "
           f"got {type(out).__name__} {list(out) if isinstance(out, dict) else ''}")
    u = uniform
    expect_close(out["previous token"], torch.tensor([1.0, 1 / 6, 1 / 6, float(sum(u[q, q - 1] for q in range(1, 7)) / 6)]),
                 "previous-token scores of a previous-token, a duplicate-token, an induction and a uniform head (n = 3)")
    expect_close(out["duplicate token"], torch.tensor([0.0, 1.0, 0.0, float(sum(u[q, q - 3] for q in range(4, 7)) / 3)]),
                 "duplicate-token scores (queries 4..6 attending to q - 3)")
    expect_close(out["induction"], torch.tensor([0.0, 0.0, 1.0, float(sum(u[q, q - 2] for q in range(4, 7)) / 3)]),
                 "induction scores (queries 4..6 attending to q - 2)")


@visible("ov_copy_score")
@_no_grad
def _ov_copy_score(fn):
    from micourse import ioi

    model = _model()
    names = torch.tensor([model.to_single_token(" " + name) for name in ioi.NAMES[:20]])
    score = _float(fn(model, 1, 0, names, 5, False), "ov_copy_score")
    expect(0.0 <= score <= 1.0, f"a copy score is a fraction of names, between 0 and 1; got {score}")
    expect(abs(_float(fn(model, 1, 0, names, len(names), False), "ov_copy_score") - 1.0) < 1e-6,
           "with k = the number of names, every name is in its row's top k: the score should be 1")
    scores = [_float(fn(model, 0, 1, names, k, True), "ov_copy_score") for k in (1, 5, 10)]
    expect(scores[0] <= scores[1] <= scores[2], f"the score cannot fall as k grows; got {scores} for k = 1, 5, 10")
    n = len(names)
    for layer, head in ((0, 1), (1, 3)):
        for k in (1, 5):
            neg = _float(fn(model, layer, head, names, k, True), "ov_copy_score")
            pos = _float(fn(model, layer, head, names, n - k, False), "ov_copy_score")
            expect(abs(neg + pos - 1.0) < 1e-6,
                   f"with the OV circuit negated, a name is in its row's top {k} exactly when it is in the bottom {k} of the "
                   f"un-negated row, i.e. not in its top {n - k}: negative score (k={k}) + score (k={n - k}) should be 1 "
                   f"for L{layer}H{head}; got {neg:.3f} + {pos:.3f} (does `negative` negate the head's output?)")
    perm = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))
    expect(abs(_float(fn(model, 1, 2, names[perm], 5, True), "ov_copy_score") - _float(fn(model, 1, 2, names, 5, True), "")) < 1e-6,
           "the copy score should not depend on the order of the names")


@visible("classify_heads")
@_no_grad
def _classify_heads(fn):
    z = torch.zeros(2, 3)
    # (0, 1) writes the answer and attends to IO above the threshold, but to S1 even more: it is no name mover.
    scores = {"dla": torch.tensor([[0.0, 1.5, 0.0], [1.0, -2.0, 2.0]]),
              "attn_io": torch.tensor([[0.0, 0.5, 0.0], [0.6, 0.5, 0.1]]),
              "attn_s1": torch.tensor([[0.0, 0.6, 0.0], [0.1, 0.1, 0.1]]),
              "attn_s2": torch.tensor([[0.3, 0.0, 0.0], [0.1, 0.1, 0.7]]),
              "previous token": torch.tensor([[0.0, 0.9, 0.0], [0.0, 0.0, 0.0]]),
              "duplicate token": torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]),
              "induction": z.clone()}
    out = fn(scores, 1.0, 0.3, 0.4)
    want = {"name mover": {(1, 0)}, "negative name mover": {(1, 1)}, "S-inhibition": {(0, 0)},
            "negative S mover": {(1, 2)}, "previous token": {(0, 1)}, "duplicate token": {(0, 2)}, "induction": set()}
    expect(isinstance(out, dict) and set(out) == set(want), f"classify_heads should return a dict with keys {sorted(want)}")
    for kind, heads in want.items():
        got = {tuple(int(x) for x in head) for head in out[kind]}
        expect(got == heads, f"classify_heads on a hand-made 2 x 3 grid: class {kind!r} should be {sorted(heads)}, got "
                             f"{sorted(got)} (thresholds are inclusive: a score equal to its threshold counts; a name mover "
                             f"must attend to IO more than to S1 and to S2)")


# ------------------------------------------------------------------------------------------- Part 7
@visible("mean_head_activations")
@_no_grad
def _mean_head_activations(fn):
    model, abc = _model(), _data(3, "abc")
    out = fn(model, abc.tokens)
    expect_shape(out, (model.cfg.n_layers, abc.tokens.shape[1], model.cfg.n_heads, model.cfg.d_head), "mean_head_activations")
    _, cache = model.run_with_cache(abc.tokens)
    for layer in range(model.cfg.n_layers):
        expect_close(out[layer], cache["z", layer].mean(0), f"layer {layer} of mean_head_activations vs cache['z', {layer}] "
                     "averaged over prompts")


@visible("mean_ablate_heads")
@_no_grad
def _mean_ablate_heads(fn):
    model, d, abc = _model(), _data(3), _data(3, "abc")
    _, cache = model.run_with_cache(abc.tokens)
    means = torch.stack([cache["z", layer].mean(0) for layer in range(model.cfg.n_layers)])
    args = (d.answer_ids, d.word_idx["end"])
    expect_close(fn(model, d.tokens, *args, means, []), _end_ld(model(d.tokens), d),
                 "ablating no heads should give the plain logit difference", atol=1e-3)
    one = d.tokens[:1].expand(2, -1)
    _, own = model.run_with_cache(one)
    own_means = torch.stack([own["z", layer].mean(0) for layer in range(model.cfg.n_layers)])
    every = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    expect_close(fn(model, one, d.answer_ids[:1].expand(2, -1), d.word_idx["end"][:2], own_means, every),
                 _end_ld(model(one), _Sub(d, torch.zeros(2, dtype=torch.long))),
                 "ablating every head with the means of the very same prompt should change nothing", atol=1e-3)
    # "Means" over a single other prompt are that prompt's z: ablating one head with them, at every position, is
    # patching that head's z from the other prompt, which TransformerLens's own sweep does.
    from transformer_lens import patching

    donor = abc.tokens[:1]
    _, donor_cache = model.run_with_cache(donor)
    donor_means = torch.stack([donor_cache["z", layer][0] for layer in range(model.cfg.n_layers)])
    want = _quiet(patching.get_act_patch_attn_head_out_all_pos, model, d.tokens, donor_cache,
                  lambda logits: _end_ld(logits, d).mean())
    for layer, head in ((0, 1), (1, 2)):
        got = fn(model, d.tokens, *args, donor_means, [(layer, head)])
        expect_close(got.mean(), want[layer, head], f"ablating L{layer}H{head} with the z of one ABC prompt as the means "
                     "should equal patching that head's z (at every position) from that prompt, as "
                     "transformer_lens.patching.get_act_patch_attn_head_out_all_pos does", atol=1e-3)
    heads = [(1, 2), (0, 1), (1, 0)]
    full = fn(model, d.tokens, *args, means, heads)
    part = fn(model, d.tokens[1:], d.answer_ids[1:], d.word_idx["end"][1:], means, heads)
    expect_close(full[1:], part, "with fixed means, a prompt's ablated logit difference cannot depend on the other prompts "
                 "of the batch", atol=1e-3)


class _Sub:
    """The answers and END positions of some rows of an IOIData (enough for _end_ld)."""

    def __init__(self, d, rows):
        self.answer_ids, self.word_idx, self._n = d.answer_ids[rows], {"end": d.word_idx["end"][rows]}, len(rows)

    def __len__(self):
        return self._n


@visible("circuit_faithfulness")
@_no_grad
def _circuit_faithfulness(fn):
    model, d, abc = _model(), _data(3), _data(3, "abc")
    every = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    args = (d.answer_ids, d.word_idx["end"])
    f = _float(fn(model, d.tokens, abc.tokens, *args, every), "circuit_faithfulness")
    expect(abs(f - 1.0) < 1e-4, f"a circuit of every head ablates nothing: faithfulness should be 1, got {f:.4f}")
    f = _float(fn(model, d.tokens, abc.tokens, *args, [list(head) for head in every]), "circuit_faithfulness")
    expect(abs(f - 1.0) < 1e-4, f"the circuit may arrive as lists [layer, head] instead of tuples: got {f:.4f} for a circuit of every head")
    from transformer_lens import patching

    donor = abc.tokens[:1]
    _, donor_cache = model.run_with_cache(donor)
    patched = _quiet(patching.get_act_patch_attn_head_out_all_pos, model, d.tokens, donor_cache,
                     lambda logits: _end_ld(logits, d).mean())
    model_ld = _end_ld(model(d.tokens), d).mean()
    for layer, head in ((1, 2), (0, 1)):
        circuit = [h for h in every if h != (layer, head)]
        f = _float(fn(model, d.tokens, donor, *args, circuit), "circuit_faithfulness")
        want = float(patched[layer, head] / model_ld)
        expect(abs(f - want) < 1e-3, f"every head but L{layer}H{head}, with one ABC prompt as the reference (so its means are "
               f"that prompt's z): faithfulness should be mean LD with L{layer}H{head} patched from it / mean LD of the model "
               f"= {want:.4f}, got {f:.4f} (means over ref_tokens; a ratio of two means, not a mean of ratios)")
    one = d.tokens[:1]
    f = _float(fn(model, one, one, d.answer_ids[:1], d.word_idx["end"][:1], [(1, 2)]), "circuit_faithfulness")
    expect(abs(f - 1.0) < 1e-3, f"with the means taken over the same single prompt, ablation changes nothing: faithfulness "
                                f"should be 1, got {f:.4f}")


@visible("dla_after_ablation")
@_no_grad
def _dla_after_ablation(fn):
    model, d, abc = _model(), _data(3), _data(3, "abc")
    _, abc_cache = model.run_with_cache(abc.tokens)
    means = torch.stack([abc_cache["z", layer].mean(0) for layer in range(model.cfg.n_layers)])
    _, _, cache = _run()
    out = fn(model, d.tokens, d.answer_ids, d.word_idx["end"], means, [])
    _grid_shape(out, "dla_after_ablation")
    expect_close(out, _head_dla(cache, d), "ablating nothing should give every head's direct attribution", atol=1e-3)
    out = fn(model, d.tokens, d.answer_ids, d.word_idx["end"], means, [(1, 2)])
    expect(not torch.allclose(out, _head_dla(cache, d), atol=1e-3),
           "ablating a head should change the attributions (is the ablation applied in the run you attribute?)")

    def ablate(z, hook):
        z = z.clone()
        z[:, :, 2] = means[1][: z.shape[1], 2]
        return z

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", ablate)]):
        _, ablated = model.run_with_cache(d.tokens)
    expect_close(out, _head_dla(ablated, d), "with L1H2 mean-ablated, every head's attribution should be read from the "
                 "ablated run's cache: its head results, and its final LayerNorm scale too (not the clean run's)", atol=1e-3)
