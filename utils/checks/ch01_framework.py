"""Visible checks of chapter 1 (the mathematical framework of transformer circuits).

They compare your functions with hand-worked answers on tiny inputs and with what TransformerLens itself
computes on the shipped model `attn_only_2l` (its cached activations, logits, `QK`/`OV` and composition
scores). They contain no reference solution.
"""

from __future__ import annotations

import functools
import math
import time

import torch

from micourse.checks.core import CheckFailed, expect, expect_close, expect_shape, visible
from micourse.checks.core import as_float as _float, no_grad as _no_grad


# --------------------------------------------------------------------------------------------- helpers
@functools.cache
def _model(folded: bool):
    """The shipped model; `folded=True`: after enable_compatibility_mode() (LayerNorm folded, weights centred)."""
    from micourse.models import load_model

    model = load_model("attn_only_2l", verbose=False)
    if folded:
        model.enable_compatibility_mode()
    return model


@functools.cache
def _run(folded: bool):
    """(tokens, logits, cache) on two sequences BOS + R + R with R = 10 random tokens."""
    model = _model(folded)
    gen = torch.Generator().manual_seed(7)
    r = torch.randint(1, model.cfg.d_vocab, (2, 10), generator=gen)
    tokens = torch.cat([torch.full((2, 1), model.tokenizer.bos_token_id), r, r], dim=1)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def _params(folded: bool = False) -> dict:
    return {k: v.detach() for k, v in _model(folded).tl_parameters().items() if ".mlp." not in k}


def _dense(x, what: str) -> torch.Tensor:
    """A FactoredMatrix (read through its factors A and B) or a tensor, as a dense tensor."""
    if isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "A") and hasattr(x, "B"):
        return x.A @ x.B
    raise CheckFailed(f"{what} should be a FactoredMatrix (or a tensor); got {type(x).__name__}")


# ------------------------------------------------------------------------------------------- Part 1
@visible("embed")
@_no_grad
def _embed(fn):
    W_E = torch.arange(12.0).reshape(4, 3)
    tokens = torch.tensor([[3, 0], [1, 1]])
    expect_close(fn(W_E, tokens), torch.tensor([[[9, 10, 11], [0, 1, 2]], [[3, 4, 5], [3, 4, 5]]]).float(),
                 "embed(W_E, tokens) on a 4-token vocabulary")
    tokens, _, cache = _run(False)
    expect_close(fn(_params()["embed.W_E"], tokens), cache["hook_embed"], "embed on the shipped model (vs cache['hook_embed'])")


@visible("pos_embed")
@_no_grad
def _pos_embed(fn):
    W_pos = torch.arange(12.0).reshape(4, 3)
    out = fn(W_pos, torch.tensor([[3, 0], [1, 1]]))
    expect_close(out, torch.tensor([[[0, 1, 2], [3, 4, 5]], [[0, 1, 2], [3, 4, 5]]]).float(),
                 "pos_embed(W_pos, tokens) for 2 sequences of 2 tokens (rows 0 and 1 of W_pos, whatever the tokens)")
    tokens, _, cache = _run(False)
    expect_close(fn(_params()["pos_embed.W_pos"], tokens), cache["hook_pos_embed"],
                 "pos_embed on the shipped model (vs cache['hook_pos_embed'])")


@visible("layer_norm")
@_no_grad
def _layer_norm(fn):
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    want = torch.tensor([[-1.5, -0.5, 0.5, 1.5]]) / math.sqrt(1.25 + 1e-5)  # mean 2.5, biased variance 1.25
    expect_close(fn(x, torch.ones(4), torch.zeros(4)), want, "layer_norm([1, 2, 3, 4]) with w = 1, b = 0")
    expect_close(fn(x, 2 * torch.ones(4), torch.ones(4)), 2 * want + 1, "layer_norm([1, 2, 3, 4]) with w = 2, b = 1")
    # eps is added to the variance, under the square root: variance 1.25 + eps 0.75 = 2
    expect_close(fn(x, torch.ones(4), torch.zeros(4), 0.75), torch.tensor([[-1.5, -0.5, 0.5, 1.5]]) / math.sqrt(2.0),
                 "layer_norm([1, 2, 3, 4], eps=0.75): (x - mean) / sqrt(var + eps) with var 1.25 (use the eps argument)")
    tiny = x * 1e-3  # variance 1.25e-6, smaller than eps = 1e-5
    expect_close(fn(tiny, torch.ones(4), torch.zeros(4)), torch.tensor([[-1.5e-3, -0.5e-3, 0.5e-3, 1.5e-3]]) / math.sqrt(1.25e-6 + 1e-5),
                 "layer_norm([0.001, 0.002, 0.003, 0.004]) (variance below eps: eps belongs inside the square root)")
    _, _, cache = _run(False)
    p = _params()
    for layer in range(2):
        expect_close(fn(cache["resid_pre", layer], p[f"blocks.{layer}.ln1.w"], p[f"blocks.{layer}.ln1.b"]),
                     cache[f"blocks.{layer}.ln1.hook_out"],
                     f"layer_norm of layer {layer}'s residual stream (vs cache['blocks.{layer}.ln1.hook_out'])")


@visible("project_to_heads")
@_no_grad
def _project_to_heads(fn):
    _, _, cache = _run(False)
    p = _params()
    x = cache["blocks.0.ln1.hook_out"]
    for name in ("q", "k", "v"):
        W, b = p[f"blocks.0.attn.W_{name.upper()}"], p[f"blocks.0.attn.b_{name.upper()}"]
        expect_close(fn(x, W, b), cache[name, 0], f"project_to_heads(ln1_out, W_{name.upper()}[0], b_{name.upper()}[0]) "
                     f"(vs cache['{name}', 0])")


@visible("attention_scores")
@_no_grad
def _attention_scores(fn):
    ones = torch.ones(1, 3, 1, 4)
    out = fn(ones, ones)
    expect_shape(out, (1, 1, 3, 3), "attention_scores of q, k with batch 1, pos 3, 1 head, d_head 4")
    lower = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    expect_close(out[0, 0][lower], torch.full((6,), 2.0),
                 "scores q.k / sqrt(d_head) for all-ones q and k with d_head 4 (4 / 2 = 2) on and below the diagonal")
    expect(bool((out[0, 0][~lower] < -1e4).all()),
           "entries above the diagonal (keys in the future) should be -inf or a very large negative number")
    _, _, cache = _run(False)
    scores = fn(cache["q", 0], cache["k", 0])
    expect_shape(scores, tuple(cache["pattern", 0].shape), "attention_scores on the shipped model")
    n = scores.shape[-1]
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    expect(bool((scores[..., future] < -1e4).all()), "future keys must be masked on the shipped model too")
    # softmax is shift-invariant: scores - log(pattern) must be the same for every allowed key of a row
    past = ~future
    diff = torch.where(past, scores - cache["pattern", 0].log(), torch.nan)
    row_const = diff.nanmean(-1, keepdim=True)
    expect_close(torch.where(past, diff - row_const, 0.0), torch.zeros_like(diff),
                 "scores on the shipped model: scores minus log(cache['pattern', 0]) should be constant along each "
                 "row (i.e. your scores give TransformerLens's pattern after a softmax)", atol=1e-3)


@visible("attention_pattern")
@_no_grad
def _attention_pattern(fn):
    scores = torch.tensor([[0.0, float("-inf")], [0.0, 0.0]])[None, None]
    expect_close(fn(scores), torch.tensor([[1.0, 0.0], [0.5, 0.5]])[None, None],
                 "attention_pattern of [[0, -inf], [0, 0]] (a softmax over keys, each row sums to 1)")
    big = torch.tensor([[1000.0, float("-inf")], [1000.0, 0.0]])[None, None]
    out = fn(big)
    expect(bool(torch.isfinite(out).all()), "attention_pattern of scores around 1000 gave inf or nan: subtract each "
                                            "row's maximum before exponentiating (or use torch.softmax)")
    expect_close(out, torch.tensor([[1.0, 0.0], [1.0, 0.0]])[None, None], "attention_pattern of large scores")
    _, _, cache = _run(False)
    pattern = cache["pattern", 0]
    expect_close(fn(pattern.log()), pattern, "attention_pattern(log(pattern)) on the shipped model should give back "
                 "cache['pattern', 0]")


@visible("attention_z")
@_no_grad
def _attention_z(fn):
    v = torch.arange(6.0).reshape(1, 3, 1, 2)  # v[0, k, 0] = [2k, 2k + 1]
    one_hot = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])[None, None]
    expect_close(fn(one_hot, v), torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 3.0]]).reshape(1, 3, 1, 2),
                 "attention_z where query 0 and 1 attend to key 0 and query 2 attends to key 1")
    _, _, cache = _run(False)
    expect_close(fn(cache["pattern", 1], cache["v", 1]), cache["z", 1], "attention_z on the shipped model (vs cache['z', 1])")


@visible("head_results")
@_no_grad
def _head_results(fn):
    _, _, cache = _run(False)
    p = _params()
    for layer in range(2):
        out = fn(cache["z", layer], p[f"blocks.{layer}.attn.W_O"])
        b, pos = cache["z", layer].shape[:2]
        expect_shape(out, (b, pos, 4, 64), "head_results on the shipped model ([batch, pos, n_heads, d_model])")
        expect_close(out.sum(2) + p[f"blocks.{layer}.attn.b_O"], cache["attn_out", layer],
                     f"sum over heads of head_results + b_O in layer {layer} (vs cache['attn_out', {layer}])")


@visible("attention_layer")
@_no_grad
def _attention_layer(fn):
    _, _, cache = _run(False)
    p = _params()
    for layer in range(2):
        w = {n: p[f"blocks.{layer}.attn.{n}"] for n in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")}
        expect_close(fn(cache[f"blocks.{layer}.ln1.hook_out"], **w), cache["attn_out", layer],
                     f"attention_layer on layer {layer} of the shipped model (vs cache['attn_out', {layer}])")


@visible("attn_only_forward")
@_no_grad
def _attn_only_forward(fn):
    tokens, logits, _ = _run(False)
    out = fn(tokens, _params(), 2)
    expect_close(out, logits, "attn_only_forward on the shipped model (vs TransformerLens's logits)", atol=1e-3)
    tokens, logits, _ = _run(True)
    folded = _params(True)
    expect_close(fn(tokens, folded, 2), logits, "attn_only_forward with the folded weights, whose b_U is not zero "
                 "(vs TransformerLens's logits)", atol=1e-3)
    # With LayerNorm weights 1, biases 0 (folded) and an enormous eps, every LayerNorm outputs ~0, so the final
    # residual stream contributes nothing and the logits at every position are just b_U.
    out = fn(tokens, folded, 2, 1e16)
    expect_close(out, folded["unembed.b_U"].expand_as(out), "attn_only_forward(tokens, folded_params, 2, eps=1e16) "
                 "(every LayerNorm then outputs ~0, so every logit is b_U: pass eps on to each layer_norm)", atol=1e-3)


@visible("per_token_loss")
@_no_grad
def _per_token_loss(fn):
    tokens = torch.tensor([[0, 3, 1, 2]])
    out = fn(torch.zeros(1, 4, 5), tokens)
    expect_close(out, torch.full((1, 3), math.log(5)), "per_token_loss of uniform logits over 5 tokens (log 5 each)")
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 3] = 100.0  # position 0 predicts token 3 with certainty: and token 3 comes next
    expect(abs(fn(logits, tokens)[0, 0].item()) < 1e-3, "a confident correct prediction of the next token should "
                                                          "have loss ~0 (is the target the *next* token?)")
    tokens, logits, _ = _run(False)
    model = _model(False)
    want = model(tokens, return_type="loss", loss_per_token=True)
    expect_close(fn(logits, tokens), want, "per_token_loss on the shipped model (vs loss_per_token=True)")


# ------------------------------------------------------------------------------------------- Part 2
@visible("diagonal_score")
@_no_grad
def _diagonal_score(fn):
    n = 4
    prev = torch.diag(torch.ones(n - 1), -1)
    prev[0, 0] = 1.0
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    pattern = torch.stack([prev, uniform])[None].repeat(3, 1, 1, 1)  # [batch 3, heads 2, 4, 4]
    out = fn(pattern, -1)
    expect_shape(out, (2,), "diagonal_score of a [batch, n_heads=2, 4, 4] pattern")
    expect_close(out, torch.tensor([1.0, (1 / 2 + 1 / 3 + 1 / 4) / 3]),
                 "diagonal_score at offset -1 of a previous-token head and of a uniform causal head")
    expect_close(fn(pattern, 0), torch.tensor([0.25, (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4]),
                 "diagonal_score at offset 0 (attention to the token itself)")


@visible("direct_path_logits")
@_no_grad
def _direct_path_logits(fn):
    W_E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    W_U = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]])
    expect_close(fn(W_E, W_U), torch.tensor([[1.0, 2, 3, 4], [0, 1, 0, 1], [1, 3, 3, 5]]),
                 "direct_path_logits with 3 input tokens, d_model 2 and 4 output tokens")


@visible("bigram_counts")
@_no_grad
def _bigram_counts(fn):
    tokens = torch.tensor([[0, 1, 0, 1], [1, 1, 2, 0]])
    want = torch.zeros(3, 3)
    want[0, 1], want[1, 0], want[1, 1], want[1, 2], want[2, 0] = 2, 1, 1, 1, 1
    expect_close(fn(tokens, 3), want, "bigram_counts of [[0, 1, 0, 1], [1, 1, 2, 0]] (the pair 0 -> 1 occurs twice; "
                 "no pair crosses from one row to the next)")


@visible("residual_stack")
@_no_grad
def _residual_stack(fn):
    # 2 layers x 3 heads, d_head 1, d_model 8: head (l, h) writes the unit vector e_{3l + h}, the biases e_6 and e_7
    W_O = torch.eye(8)[:6].reshape(2, 3, 1, 8)
    z = torch.ones(2, 1, 1, 3, 1)
    b_O = torch.eye(8)[6:]
    embed, pos_embed = torch.full((1, 1, 8), 2.0), torch.full((1, 1, 8), 3.0)
    out = fn(embed, pos_embed, z, W_O, b_O)
    want = torch.cat([embed[None], pos_embed[None], torch.eye(8)[:6].reshape(6, 1, 1, 8), (b_O[0] + b_O[1]).reshape(1, 1, 1, 8)])
    expect_close(out, want, "residual_stack of a hand-made model whose head (layer l, head h) writes the unit vector "
                 "e_{3l + h}: components embed, pos_embed, L0H0, L0H1, L0H2, L1H0, L1H1, L1H2 (layer by layer), sum of b_O")
    _, _, cache = _run(True)
    model = _model(True)
    z = torch.stack([cache["z", layer] for layer in range(2)])
    out = fn(cache["embed"], cache["pos_embed"], z, model.W_O, model.b_O)
    b, pos = cache["embed"].shape[:2]
    expect_shape(out, (2 + 8 + 1, b, pos, 64), "residual_stack on the folded model ([2 + n_layers * n_heads + 1, batch, pos, d_model])")
    expect_close(out[0], cache["embed"], "component 0 (the token embedding)")
    expect_close(out[1], cache["pos_embed"], "component 1 (the positional embedding)")
    expect_close(out.sum(0), cache["resid_post", 1], "the sum of all components (vs cache['resid_post', 1])")


@visible("logit_attribution")
@_no_grad
def _logit_attribution(fn):
    stack = torch.tensor([[3.0, 3.0], [1.0, -1.0]]).reshape(2, 1, 1, 2).repeat(1, 1, 2, 1)  # 2 components, 2 positions
    out = fn(stack, torch.full((1, 2, 1), 2.0), torch.eye(2), torch.tensor([[0, 1]]))
    expect_close(out, torch.tensor([0.0, -0.5]).reshape(2, 1, 1),
                 "logit_attribution with d_model 2, W_U = I, ln_scale 2, next token 1: component [3, 3] centres to [0, 0] "
                 "(attribution 0); [1, -1] gives -1 / 2 = -0.5 (centre each component over d_model, divide by ln_scale)")
    tokens, logits, cache = _run(True)
    model = _model(True)
    stack = torch.cat([cache["embed"][None], cache["pos_embed"][None], cache["attn_out", 0][None],
                       cache["attn_out", 1][None]])  # any decomposition of the final residual stream
    out = fn(stack, cache["ln_final.hook_scale"], model.W_U, tokens)
    b, pos = tokens.shape
    expect_shape(out, (4, b, pos - 1), "logit_attribution of 4 components ([component, batch, pos - 1])")
    next_logit = logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0] - model.b_U[tokens[:, 1:]]
    expect_close(out.sum(0), next_logit, "sum over components of logit_attribution (vs the model's logit of the next "
                 "token, minus b_U)", atol=1e-3)


@visible("qk_circuit")
@_no_grad
def _qk_circuit(fn):
    model = _model(False)
    eye = torch.eye(64)
    for layer, head in [(0, 1), (1, 2)]:
        got = _dense(fn(eye, eye, model.W_Q[layer, head], model.W_K[layer, head]), "qk_circuit")
        expect_close(got, model.QK[layer, head].AB, f"qk_circuit(I, I, W_Q[{layer}, {head}], W_K[{layer}, {head}]) "
                     f"(vs model.QK[{layer}, {head}].AB)")
    X_q, X_k = torch.randn(5, 64), torch.randn(3, 64)
    got = _dense(fn(X_q, X_k, model.W_Q[0, 0], model.W_K[0, 0]), "qk_circuit")
    expect_shape(got, (5, 3), "qk_circuit with 5 query rows and 3 key rows")


@visible("positional_attention")
@_no_grad
def _positional_attention(fn):
    model = _model(True)
    args = (model.W_Q[0, 0], model.b_Q[0, 0], model.W_K[0, 0], model.b_K[0, 0])
    out = fn(model.W_pos[:16], *args)
    expect_shape(out, (16, 16), "positional_attention of 16 positions")
    expect_close(out.sum(-1), torch.ones(16), "row sums of positional_attention")
    expect(bool((out.triu(1).abs() < 1e-6).all()), "positional_attention must be causal: zero above the diagonal")
    # Hand-worked: d_model 2, d_head 4. Rows [1, -1], [3, -3], [-2, 2] normalise to [1, -1], [1, -1], [-1, 1];
    # W_Q, W_K read coordinate 0 into every d_head dimension: q = 0.5 x_0 + b_Q = [2, 2, 1], k = x_0 = [1, 1, -1],
    # score = 4 q k / sqrt(4) = 2 q k: rows [4], [4, 4], [2, 2, -2].
    W_pos = torch.tensor([[1.0, -1.0], [3.0, -3.0], [-2.0, 2.0]])
    W_Q, W_K = torch.tensor([[0.5] * 4, [0.0] * 4]), torch.tensor([[1.0] * 4, [0.0] * 4])
    e = math.exp(-4.0)
    want = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / (2 + e), 1 / (2 + e), e / (2 + e)]])
    expect_close(fn(W_pos, W_Q, torch.full((4,), 1.5), W_K, torch.zeros(4)), want,
                 "positional_attention of a hand-made head (normalise each position's embedding, add b_Q, scale by "
                 "1/sqrt(d_head))", atol=1e-4)
    same = model.W_pos[3].repeat(6, 1)  # every position identical: every key scores the same
    expect_close(fn(same, *args), torch.tril(torch.ones(6, 6)) / torch.arange(1, 7)[:, None],
                 "positional_attention when all positions have the same embedding (uniform over the past)")


@visible("ov_circuit")
@_no_grad
def _ov_circuit(fn):
    model = _model(False)
    eye = torch.eye(64)
    for layer, head in [(0, 1), (1, 2)]:
        got = _dense(fn(eye, model.W_V[layer, head], model.W_O[layer, head], eye), "ov_circuit")
        expect_close(got, model.OV[layer, head].AB, f"ov_circuit(I, W_V[{layer}, {head}], W_O[{layer}, {head}], I) "
                     f"(vs model.OV[{layer}, {head}].AB)")
    W_E, W_U = torch.randn(5, 64), torch.randn(64, 3)
    got = _dense(fn(W_E, model.W_V[0, 0], model.W_O[0, 0], W_U), "ov_circuit")
    expect_shape(got, (5, 3), "ov_circuit with 5 source tokens and 3 output tokens ([source, output])")


@visible("top_ov_pairs")
@_no_grad
def _top_ov_pairs(fn):
    ov = torch.zeros(5, 7)
    ov[4, 6], ov[0, 5], ov[2, 1] = 3.0, 2.0, 1.0
    out = fn(ov, 3)
    expect(isinstance(out, (tuple, list)) and len(out) == 3, "top_ov_pairs should return a tuple (src, out, values)")
    src, dst, values = out
    expect_close(torch.as_tensor(values).float(), torch.tensor([3.0, 2.0, 1.0]), "values of the 3 planted entries, largest first")
    expect(torch.as_tensor(src).tolist() == [4, 0, 2], f"source (row) indices should be [4, 0, 2]; got {torch.as_tensor(src).tolist()}")
    expect(torch.as_tensor(dst).tolist() == [6, 5, 1], f"output (column) indices should be [6, 5, 1]; got {torch.as_tensor(dst).tolist()}")
    ov = torch.zeros(3, 8)
    ov[1, 2], ov[1, 7], ov[2, 0] = 5.0, 4.0, 3.0  # two of the three largest share a row
    src, dst, _ = fn(ov, 3)
    expect(torch.as_tensor(src).tolist() == [1, 1, 2] and torch.as_tensor(dst).tolist() == [2, 7, 0],
           "the 3 largest entries of a matrix with 5 and 4 in row 1 and 3 in row 2 are (1, 2), (1, 7), (2, 0): "
           "search the whole matrix, not one entry per row")


@visible("copying_score")
@_no_grad
def _copying_score(fn):
    gen = torch.Generator().manual_seed(0)
    W_E, W_V, W_O = torch.randn(20, 8, generator=gen), torch.randn(8, 3, generator=gen), torch.randn(3, 8, generator=gen)
    W_U = torch.linalg.pinv(W_O) @ (W_E @ W_V).T  # makes the OV circuit symmetric positive semi-definite
    expect(abs(_float(fn(W_E, W_V, W_O, W_U), "copying_score") - 1) < 1e-3,
           "copying_score of a circuit whose eigenvalues are all positive should be 1")
    expect(abs(_float(fn(W_E, W_V, W_O, -W_U), "copying_score") + 1) < 1e-3,
           "copying_score of a circuit whose eigenvalues are all negative should be -1")
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalues i, -i, 1
    W_U_rot = torch.linalg.pinv(W_O) @ rot @ torch.linalg.pinv(W_E @ W_V)
    expect(abs(_float(fn(W_E, W_V, W_O, W_U_rot), "copying_score") - 1 / 3) < 1e-3,
           "copying_score of a circuit with eigenvalues i, -i, 1 should be (0 + 1) / (1 + 1 + 1) = 1/3: use the "
           "complex modulus |λ|, not the absolute value of the real part")
    model = _model(True)
    start = time.perf_counter()
    _float(fn(model.W_E, model.W_V[1, 0], model.W_O[1, 0], model.W_U), "copying_score")
    seconds = time.perf_counter() - start
    expect(seconds < 3.0, f"copying_score took {seconds:.1f} s on a 1024-token vocabulary: compute the eigenvalues in "
                          f"the small [d_head, d_head] space")


@visible("composition_score")
@_no_grad
def _composition_score(fn):
    expect(abs(_float(fn(torch.eye(4), torch.eye(4)), "composition_score") - 0.5) < 1e-5,
           "composition_score(I, I) for 4 x 4 identities should be ||I|| / ||I||^2 = 1 / sqrt(4) = 0.5")
    writes_second = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # x @ W_A puts x's first coordinate in the second slot
    reads_first = torch.tensor([[1.0, 0.0], [0.0, 0.0]])   # x @ W_B keeps only the first coordinate
    expect(abs(_float(fn(writes_second, reads_first), "composition_score")) < 1e-6,
           "composition_score(W_A, W_B) should be 0 when W_B reads nothing of what W_A writes (is the product W_A @ W_B?)")
    expect(abs(_float(fn(reads_first, writes_second), "composition_score") - 1) < 1e-5,
           "composition_score(W_A, W_B) should be 1 when W_B reads exactly what W_A writes")


@visible("composition_scores")
@_no_grad
def _composition_scores(fn):
    model = _model(True)
    out = fn(model.W_Q, model.W_K, model.W_V, model.W_O)
    expect(isinstance(out, dict) and set(out) >= {"Q", "K", "V"}, "composition_scores should return a dict with keys 'Q', 'K', 'V'")
    for mode in "QKV":
        want = model.all_composition_scores(mode).scores[0, :, 1, :]
        expect_close(out[mode], want, f"{mode}-composition scores of the shipped model (vs "
                     f"model.all_composition_scores('{mode}').scores[0, :, 1, :])")


@visible("random_composition_baseline")
@_no_grad
def _random_composition_baseline(fn):
    a = _float(fn(64, 16, 200), "random_composition_baseline")
    b = _float(fn(64, 16, 200), "random_composition_baseline")
    expect(0 < a < 1, f"a composition score lies between 0 and 1; got {a:.3f}")
    expect(abs(a - b) < 0.01, f"two calls gave {a:.3f} and {b:.3f}: average more samples, and draw fresh matrices each time")
    # Rank-1 factors (d_head 1): W_A = u v^T, W_B = w x^T give a score |cos(v, w)|, whose mean for random
    # Gaussian directions in d dimensions is Gamma(d/2) / (sqrt(pi) Gamma((d + 1)/2)) (0.20 for d = 16).
    d = 16
    want = math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)
    rank1 = _float(fn(d, 1, 2000), "random_composition_baseline")
    expect(abs(rank1 - want) < 0.015, f"random_composition_baseline(16, 1) should be about {want:.3f} (the mean |cosine| of "
                                      f"two random directions in 16 dimensions); got {rank1:.3f}: are W_A and W_B products of a "
                                      f"[d_model, d_head] and a [d_head, d_model] Gaussian matrix?")
    small = _float(fn(4, 2, 200), "random_composition_baseline")
    expect(small > a, f"random matrices in a smaller space (d_model 4) should overlap more than in d_model 64; "
                      f"got {small:.3f} vs {a:.3f}")
