"""Visible checks of chapter 2 (induction heads).

They use hand-made inputs with known answers (patterns built to attend exactly one way, tiny matrices),
invariances (a mean-ablation of a batch of one changes nothing; scaling the positional embeddings changes
nothing after LayerNorm), and what TransformerLens itself computes on the shipped model `attn_only_2l`
(its cached attention patterns and per-token losses, `stack_head_results`). They contain no reference
solution.
"""

from __future__ import annotations

import functools

import torch

from micourse.checks.core import expect, expect_close, expect_shape, visible
from micourse.checks.core import as_float as _float, no_grad as _no_grad

N = 8  # length of R in the checks' BOS + R + R


# --------------------------------------------------------------------------------------------- helpers
@functools.cache
def _model(folded: bool = False):
    from micourse.models import load_model

    model = load_model("attn_only_2l", verbose=False)
    if folded:
        model.enable_compatibility_mode()
    return model


def _rep_tokens(n_batch: int = 3, n: int = N, seed: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(1, 1024, (n_batch, n), generator=gen)
    return torch.cat([torch.zeros(n_batch, 1, dtype=torch.long), r, r], dim=1)


@functools.cache
def _run(folded: bool = False):
    tokens = _rep_tokens()
    with torch.no_grad():
        logits, cache = _model(folded).run_with_cache(tokens)
    return tokens, logits, cache


def _tensor(x, what: str) -> torch.Tensor:
    expect(isinstance(x, torch.Tensor), f"{what} should return a torch.Tensor; got {type(x).__name__}")
    return x.detach()


def _one_hot_pattern(n_batch: int, n_heads: int, pos: int, key_of) -> torch.Tensor:
    """A causal pattern [batch, heads, pos, pos] putting all of query q's attention on key_of(q) (BOS if None)."""
    pattern = torch.zeros(n_batch, n_heads, pos, pos)
    for q in range(pos):
        k = key_of(q)
        pattern[:, :, q, k if k is not None and 0 <= k <= q else 0] = 1.0
    return pattern


def _uniform_pattern(n_batch: int, n_heads: int, pos: int) -> torch.Tensor:
    mask = torch.tril(torch.ones(pos, pos))
    return (mask / mask.sum(-1, keepdim=True)).expand(n_batch, n_heads, pos, pos).clone()


def _definition(pattern: torch.Tensor, pairs) -> torch.Tensor:
    """Mean over the batch and the listed (query, key) pairs of pattern[b, h, q, k], per head."""
    return torch.stack([pattern[:, :, q, k] for q, k in pairs], dim=-1).mean(dim=(0, -1))


def _prev_pairs(pos):
    return [(q, q - 1) for q in range(1, pos)]


def _ind_pairs(n):
    return [(q, q - n + 1) for q in range(n + 1, 2 * n + 1)]


# ------------------------------------------------------------------------------------------- Part 1
@visible("generate_repeated_tokens")
def _generate_repeated_tokens(fn):
    for d_vocab, bos in [(50, 0), (50, 49), (7, 3)]:
        tokens = _tensor(fn(4, 30, d_vocab, bos, 1), "generate_repeated_tokens")
        expect_shape(tokens, (4, 61), f"generate_repeated_tokens(4, 30, {d_vocab}, {bos})")
        expect(tokens.dtype == torch.long, f"tokens should be integers (torch.long), got {tokens.dtype}")
        expect(bool((tokens[:, 0] == bos).all()), "every row should start with the BOS token")
        expect(bool((tokens[:, 1:31] == tokens[:, 31:]).all()), "the second half of each row should repeat the first")
        expect(not bool((tokens[:, 1:] == bos).any()), f"BOS (id {bos}) must not appear after position 0")
        expect(bool(((tokens >= 0) & (tokens < d_vocab)).all()), f"ids must lie in 0 .. {d_vocab - 1}")
    expect(not torch.equal(tokens[0], tokens[1]), "each row should be drawn on its own (rows 0 and 1 are equal)")
    big = fn(20, 100, 7, 3, 0)
    expect(set(big[:, 1:].unique().tolist()) == {0, 1, 2, 4, 5, 6}, "with d_vocab 7 and BOS 3, every other id should occur")
    expect(torch.equal(fn(2, 10, 50, 0, 7), fn(2, 10, 50, 0, 7)), "the same seed should give the same tokens")
    expect(not torch.equal(fn(2, 10, 50, 0, 7), fn(2, 10, 50, 0, 8)), "different seeds should give different tokens")


@visible("loss_on_each_copy")
def _loss_on_each_copy(fn):
    n = 3
    loss = torch.tensor([[10.0, 1.0, 2.0, 20.0, 3.0, 4.0], [10.0, 5.0, 6.0, 20.0, 7.0, 8.0]])  # [batch 2, 2n]
    got = _tensor(fn(loss, n), "loss_on_each_copy")
    expect_close(got, torch.tensor([3.5, 5.5]), "loss_on_each_copy on a hand-made example (R[0] of each copy left out)")
    tokens, _, _ = _run()
    with torch.no_grad():
        per_token = _model()(tokens, return_type="loss", loss_per_token=True)
    got = _tensor(fn(per_token, N), "loss_on_each_copy")
    expect_shape(got, (2,), "loss_on_each_copy on the shipped model")
    expect(got[1] < got[0], "on the shipped model the second copy's loss should be below the first's")


@visible("in_context_learning_score")
def _in_context_learning_score(fn):
    loss = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [7.0, 6.0, 5.0, 2.0, 0.0]])
    expect_close(torch.tensor(_float(fn(loss, (0, 2), (3, 5)), "in_context_learning_score")), torch.tensor(-4.25),
                 "in_context_learning_score(loss, early=(0, 2), late=(3, 5)): mean loss over indices 3, 4 minus the "
                 "mean over indices 0, 1 (a band (a, b) is a slice: b is left out)")
    expect_close(torch.tensor(_float(fn(loss, (1, 2), (2, 3)), "in_context_learning_score")), torch.tensor(-1.0),
                 "in_context_learning_score(loss, early=(1, 2), late=(2, 3)): one-index bands")
    rising = torch.linspace(1.0, 3.0, 20).expand(3, 20)
    expect(_float(fn(rising, (0, 5), (15, 20)), "in_context_learning_score") > 0,
           "a loss that rises along the context should give a positive score (late minus early)")


# ------------------------------------------------------------------------------------------- Part 2
@visible("previous_token_score")
@_no_grad
def _previous_token_score(fn):
    pos = 9
    expect_close(_tensor(fn(_one_hot_pattern(2, 3, pos, lambda q: q - 1)), "previous_token_score"), torch.ones(3),
                 "previous_token_score of a pattern that always attends one step back")
    expect_close(fn(_one_hot_pattern(2, 3, pos, lambda q: q)), torch.zeros(3),
                 "previous_token_score of a pattern that always attends to the current token")
    uniform = torch.tensor([1 / (q + 1) for q in range(1, pos)]).mean()
    expect_close(fn(_uniform_pattern(2, 3, pos)), uniform.expand(3), "previous_token_score of uniform causal attention")
    _, _, cache = _run()
    pattern = cache["pattern", 0]
    expect_close(fn(pattern), _definition(pattern, _prev_pairs(pattern.shape[-1])),
                 "previous_token_score of the shipped model's layer 0", atol=1e-5)


@visible("current_token_score")
@_no_grad
def _current_token_score(fn):
    pos = 9
    expect_close(_tensor(fn(_one_hot_pattern(2, 3, pos, lambda q: q)), "current_token_score"), torch.ones(3),
                 "current_token_score of a pattern that always attends to the current token")
    expect_close(fn(_one_hot_pattern(2, 3, pos, lambda q: 0)), torch.zeros(3),
                 "current_token_score of a pattern that always attends to BOS (query 0 is left out)")
    uniform = torch.tensor([1 / (q + 1) for q in range(1, pos)]).mean()
    expect_close(fn(_uniform_pattern(2, 3, pos)), uniform.expand(3), "current_token_score of uniform causal attention")


@visible("first_token_score")
@_no_grad
def _first_token_score(fn):
    pos = 9
    expect_close(_tensor(fn(_one_hot_pattern(2, 3, pos, lambda q: 0)), "first_token_score"), torch.ones(3),
                 "first_token_score of a pattern that always attends to BOS")
    expect_close(fn(_one_hot_pattern(2, 3, pos, lambda q: q)), torch.zeros(3),
                 "first_token_score of a pattern that attends to the current token (query 0 is left out)")
    uniform = torch.tensor([1 / (q + 1) for q in range(1, pos)]).mean()
    expect_close(fn(_uniform_pattern(2, 3, pos)), uniform.expand(3), "first_token_score of uniform causal attention")


@visible("induction_score")
@_no_grad
def _induction_score(fn):
    n = 6
    pos = 2 * n + 1
    exact = _one_hot_pattern(2, 3, pos, lambda q: q - n + 1 if q > n else 0)
    expect_close(_tensor(fn(exact, n), "induction_score"), torch.ones(3), "induction_score of an exact induction pattern")
    duplicate = _one_hot_pattern(2, 3, pos, lambda q: q - n if q > n else 0)
    expect_close(fn(duplicate, n), torch.zeros(3),
                 "induction_score of a head attending to the token's own earlier copy (offset -n): should be 0")
    current_then_exact = _one_hot_pattern(2, 3, pos, lambda q: q - n + 1 if q > n else q)
    expect_close(fn(current_then_exact, n), torch.ones(3),
                 "induction_score should average over the second copy's queries n+1 .. 2n only")
    _, _, cache = _run()
    pattern = cache["pattern", 1]
    expect_close(fn(pattern, N), _definition(pattern, _ind_pairs(N)), "induction_score of the shipped model's layer 1",
                 atol=1e-5)


@visible("head_score_table")
@_no_grad
def _head_score_table(fn):
    tokens, _, cache = _run()
    table = _tensor(fn(_model(), tokens), "head_score_table")
    expect_shape(table, (4, 2, 4), "head_score_table on the shipped model ([4 kinds, n_layers, n_heads])")
    pos = tokens.shape[1]
    for layer in range(2):
        pattern = cache["pattern", layer]
        want = torch.stack([_definition(pattern, _prev_pairs(pos)), _definition(pattern, [(q, q) for q in range(1, pos)]),
                            _definition(pattern, [(q, 0) for q in range(1, pos)]), _definition(pattern, _ind_pairs(N))])
        expect_close(table[:, layer], want, f"head_score_table[:, {layer}] (previous, current, first, induction)", atol=1e-5)


@visible("label_heads")
def _label_heads(fn):
    table = torch.zeros(4, 2, 3)
    table[0, 0, 0] = 0.9                          # L0H0: previous-token
    table[0, 1, 1], table[3, 1, 1] = 0.5, 0.7     # L1H1: both, induction higher
    table[2, 0, 2] = 0.3                          # L0H2: first-token, below threshold
    table[1, 1, 2] = 0.4                          # L1H2: current-token, exactly at threshold
    labels = fn(table, 0.4)
    want = [["previous-token", "none", "none"], ["none", "induction", "current-token"]]
    expect(isinstance(labels, list) and len(labels) == 2 and all(isinstance(r, list) and len(r) == 3 for r in labels),
           f"label_heads should return a list of n_layers lists of n_heads strings; got {labels!r}")
    expect(labels == want, f"label_heads on a hand-made table: got {labels}, expected {want}")
    expect(fn(table, 0.95) == [["none"] * 3, ["none"] * 3], "with threshold 0.95 no head should get a label")


# ------------------------------------------------------------------------------------------- Part 3
@visible("induction_scores_with_hooks")
@_no_grad
def _induction_scores_with_hooks(fn):
    tokens, _, cache = _run()
    got = _tensor(fn(_model(), tokens), "induction_scores_with_hooks")
    want = torch.stack([_definition(cache["pattern", layer], _ind_pairs(N)) for layer in range(2)])
    expect_close(got, want, "induction_scores_with_hooks on the shipped model (vs the cached patterns)", atol=1e-5)


@visible("zero_ablate_head_z")
@_no_grad
def _zero_ablate_head_z(fn):
    z = torch.randn(2, 5, 4, 3)
    before = z.clone()
    out = _tensor(fn(z, 2), "zero_ablate_head_z")
    expect_shape(out, (2, 5, 4, 3), "zero_ablate_head_z(z, 2)")
    expect(bool((out[:, :, 2] == 0).all()), "head 2 should be 0 at every position of every sequence")
    keep = [0, 1, 3]
    expect_close(out[:, :, keep], z[:, :, keep], "the other heads should be unchanged")
    expect(torch.equal(z, before), "don't change z in place: return a new tensor")


@visible("mean_ablate_head_z")
@_no_grad
def _mean_ablate_head_z(fn):
    z = torch.randn(3, 5, 4, 2)
    z_mean = torch.randn(8, 5, 4, 2).mean(0)  # the mean of another (reference) batch, as the argument says
    before = z.clone()
    out = _tensor(fn(z, 1, z_mean), "mean_ablate_head_z")
    expect_shape(out, (3, 5, 4, 2), "mean_ablate_head_z(z, 1, z_mean)")
    expect_close(out[:, :, 1], z_mean[None, :, 1].expand(3, 5, 2),
                 "head 1 should be z_mean[:, 1] (the mean you are given, not z's own) in every sequence")
    keep = [0, 2, 3]
    expect_close(out[:, :, keep], z[:, :, keep], "the other heads should be unchanged")
    expect(torch.equal(z, before), "don't change z in place: return a new tensor")


@visible("ablated_copy_losses")
@_no_grad
def _ablated_copy_losses(fn):
    model = _model()
    tokens, _, cache = _run()
    single = tokens[:1]
    clean = model(single, return_type="loss", loss_per_token=True)[0]
    clean_copies = torch.stack([clean[1:N].mean(), clean[N + 1:].mean()])
    got = _tensor(fn(model, single, 1, 2, "mean"), "ablated_copy_losses")
    expect_shape(got, (2,), "ablated_copy_losses")
    expect_close(got, clean_copies, "mean-ablating with the mean of a batch of one sequence should change nothing",
                 atol=1e-4)
    prev_head = int(_definition(cache["pattern", 0], _prev_pairs(tokens.shape[1])).argmax())
    zeroed = fn(model, tokens, 0, prev_head, "zero")
    clean_all = model(tokens, return_type="loss", loss_per_token=True)
    expect(zeroed[1] > clean_all[:, N + 1:].mean() + 1.0,
           f"zero-ablating the previous-token head L0H{prev_head} should raise the second-copy loss by over a nat")
    ind_head = int(_definition(cache["pattern", 1], _ind_pairs(N)).argmax())
    other = next(h for h in range(4) if h not in (prev_head, ind_head))
    expect(fn(model, tokens, 1, ind_head, "zero")[1] > clean_all[:, N + 1:].mean() + 0.5,
           f"zero-ablating the induction head L1H{ind_head} (layer 1) should raise the second-copy loss")
    expect(abs(fn(model, tokens, 1, other, "zero")[1] - fn(model, tokens, 0, other, "zero")[1]) > 1e-6,
           f"ablating L1H{other} and L0H{other} should not give the same losses: hook the given layer's hook_z")


@visible("head_logit_attribution")
@_no_grad
def _head_logit_attribution(fn):
    model = _model(folded=True)
    tokens, _, cache = _run(folded=True)
    z = torch.stack([cache["z", layer] for layer in range(2)])
    got = _tensor(fn(z, model.W_O, model.W_U, cache["ln_final.hook_scale"], tokens, N), "head_logit_attribution")
    expect_shape(got, (2, 4), "head_logit_attribution ([n_layers, n_heads])")
    results = cache.stack_head_results(apply_ln=True)  # [layer * head, batch, pos, d_model], TransformerLens's own
    on_correct = torch.einsum("cbpd,dbp->cbp", results[:, :, :-1], model.W_U[:, tokens[:, 1:]])
    expect_close(got.flatten(), on_correct[:, :, N + 1:].mean(dim=(1, 2)),
                 "head_logit_attribution vs TransformerLens's stack_head_results(apply_ln=True)", atol=1e-3)


# ------------------------------------------------------------------------------------------- Part 4
@visible("diagonal_argmax_fraction")
def _diagonal_argmax_fraction(fn):
    # No ties at any row's maximum here (the exercise leaves ties unspecified; float weights don't have them).
    expect_close(torch.tensor(_float(fn(torch.eye(5)), "diagonal_argmax_fraction")), torch.tensor(1.0),
                 "diagonal_argmax_fraction of the identity")
    M = torch.tensor([[2.0, 0.0, 0.0], [3.0, 1.0, 0.0], [2.5, 0.0, 0.5]])  # every row peaks at column 0
    expect_close(torch.tensor(_float(fn(M), "diagonal_argmax_fraction")), torch.tensor(1 / 3),
                 "diagonal_argmax_fraction of a hand-made matrix whose rows all peak in column 0 (argmax of each row, "
                 "over the columns: only row 0 wins)")


@visible("ov_copy_fractions")
@_no_grad
def _ov_copy_fractions(fn):
    # Hand-made heads with full-rank OV (d_head = d), and no ties at any row's maximum.
    d = 6
    W_E, W_U = torch.eye(d), torch.eye(d)
    shift = torch.zeros(d, d)
    for i in range(d):
        shift[i, (i + 1) % d] = 0.5  # every source token also raises the next token a little
    copy_half = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])) + shift  # rows 0-2 peak on themselves
    W_V = torch.eye(d).expand(1, 2, d, d).clone()                                # [1 layer, 2 heads, d, d_head = d]
    W_O = torch.stack([copy_half, shift - torch.eye(d)])[None]                   # head 1 writes minus each token
    got = _tensor(fn(W_E, W_V, W_O, W_U), "ov_copy_fractions")
    expect_shape(got, (1, 2), "ov_copy_fractions on a 1-layer, 2-head example")
    expect(abs(got[0, 0].item() - 0.5) < 1e-6,
           f"a head copying the first 3 of 6 tokens (the others raise the next token) should score 0.5; got {got[0, 0].item():.3f}")
    expect(got[0, 1].item() < 1e-6, f"a head writing minus each token should score 0; got {got[0, 1].item():.3f}")
    model = _model(folded=True)
    got = _tensor(fn(model.W_E, model.W_V, model.W_O, model.W_U), "ov_copy_fractions")
    expect_shape(got, (2, 4), "ov_copy_fractions on the shipped model")
    for layer, head in [(0, 0), (1, 2)]:
        full = model.W_E @ model.OV[layer, head].AB @ model.W_U  # TransformerLens's OV circuit W_V W_O
        want = (full.argmax(-1) == torch.arange(full.shape[0])).float().mean()
        expect_close(got[layer, head], want, f"ov_copy_fractions[{layer}, {head}] vs TransformerLens's model.OV", atol=1e-6)


@visible("positional_patterns")
@_no_grad
def _positional_patterns(fn):
    gen = torch.Generator().manual_seed(0)
    W_pos, W_Q, W_K = torch.randn(10, 8, generator=gen), torch.randn(3, 8, 4, generator=gen), torch.randn(3, 8, 4, generator=gen)
    b_Q, b_K = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    out = _tensor(fn(W_pos, W_Q, b_Q, W_K, b_K), "positional_patterns")
    expect_shape(out, (3, 10, 10), "positional_patterns ([n_heads, n_pos, n_pos])")
    expect(bool((out.triu(1) == 0).all()), "nothing may lie above the diagonal (keys after the query are masked)")
    expect_close(out.sum(-1), torch.ones(3, 10), "every row should sum to 1 (softmax over keys)")
    expect_close(fn(3.0 * W_pos + 2.0, W_Q, b_Q, W_K, b_K), out,
                 "scaling W_pos, or adding a constant to it, should change nothing (the rows are normalised)", atol=1e-4)
    # one head, d_model 2, d_head 4: normalised rows are +-(1, -1); W_Q = W_K put x[0] in all 4 query/key
    # dimensions, so q . k = 4 x0 x0' and the scaled score is 4 x0 x0' / sqrt(4)
    W_pos2 = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    W = torch.zeros(1, 2, 4)
    W[0, 0] = 1.0
    pattern = fn(W_pos2, W, torch.zeros(1, 4), W, torch.zeros(1, 4))
    x0 = 1 / (1 + 1e-5) ** 0.5
    s = 4 * torch.tensor([x0 * -x0, x0 * x0]) / 4 ** 0.5  # query 1 (x0 = -1) with keys 0 (+1) and 1 (-1)
    expect_close(pattern[0, 1], s.softmax(-1), "a hand-worked 2-position example with d_head 4 (mind the normalisation "
                 "and the 1 / sqrt(d_head) scale)", atol=1e-4)


@visible("k_composition_circuit")
@_no_grad
def _k_composition_circuit(fn):
    gen = torch.Generator().manual_seed(1)
    W_E, W_V0, W_O0 = torch.randn(7, 5, generator=gen), torch.randn(5, 2, generator=gen), torch.randn(2, 5, generator=gen)
    W_Q1, W_K1 = torch.randn(5, 2, generator=gen), torch.randn(5, 2, generator=gen)
    out = fn(W_E, W_V0, W_O0, W_Q1, W_K1)
    expect(hasattr(out, "A") and hasattr(out, "B"), f"k_composition_circuit should return a FactoredMatrix; got {type(out).__name__}")
    dense = out.A @ out.B
    expect_shape(dense, (7, 7), "k_composition_circuit(...).AB ([d_vocab query token, d_vocab previous token])")
    a = 3  # query token
    b = 5  # the token before the key, moved there by the previous-token head
    score = (W_E[a] @ W_Q1) @ (W_E[b] @ W_V0 @ W_O0 @ W_K1)
    expect_close(dense[a, b], score, "entry [A, B]: query token A's query against key W_E[B] W_V0 W_O0 W_K1", atol=1e-4)


@visible("pairwise_composition_scores")
@_no_grad
def _pairwise_composition_scores(fn):
    eye = torch.eye(4)[None]
    expect_close(_tensor(fn(eye, eye), "pairwise_composition_scores"), torch.tensor([[0.5]]),
                 "two 4x4 identity matrices: 1 / sqrt(4)")
    A = torch.zeros(2, 3, 3)
    A[0, 0, 0], A[1, 1, 1] = 2.0, 1.0
    B = torch.zeros(3, 3, 3)
    B[0, 0, 2], B[1, 1, 0], B[2, 0, 0] = 1.0, 5.0, 1.0
    expect_close(fn(A, B), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
                 "hand-made rank-1 matrices (writer i, reader j): 1 where W_A[i]'s output is what W_B[j] reads")
    model = _model(folded=True)
    got = _tensor(fn(model.W_V[0] @ model.W_O[0], model.W_K[1] @ model.W_Q[1].transpose(-1, -2)), "pairwise_composition_scores")
    want = model.all_composition_scores("K")[0, :, 1, :]
    expect_close(got, want, "K-composition on the shipped model vs TransformerLens's all_composition_scores('K')", atol=1e-4)


@visible("random_composition_scores")
@_no_grad
def _random_composition_scores(fn):
    torch.manual_seed(0)
    a = _tensor(fn(64, 16, 500), "random_composition_scores")
    expect_shape(a, (500,), "random_composition_scores(64, 16, 500)")
    b = fn(64, 16, 500)
    expect(abs(a.mean() - b.mean()) < 0.01, f"two calls should agree on the mean to 0.01 ({a.mean():.3f} vs {b.mean():.3f})")
    expect(not torch.equal(a, b), "two calls should draw fresh random matrices")
    expect(bool(((a > 0) & (a < 1)).all()), "composition scores lie strictly between 0 and 1")
    expect(a.mean() < 0.5, f"mean {a.mean():.3f}: random Gaussian matrices should mostly not line up (use torch.randn)")
    expect(a.unique().numel() > 450, "each of the n_samples scores should come from its own random pair")
    # Hand-worked: with d_head 1, W_A = u1 v1 and W_B = u2 v2 (u column, v row), and the score is |cos| of the angle
    # between v1 and u2, two independent Gaussian directions. In 3 dimensions |cos| is uniform on [0, 1]: mean 1/2.
    c = _tensor(fn(3, 1, 4000), "random_composition_scores")
    expect(abs(c.mean() - 0.5) < 0.03, f"random_composition_scores(3, 1, 4000) has mean {c.mean():.3f}; for rank-1 "
                                       f"Gaussian factors in 3 dimensions the mean |cos| is 1/2")


@visible("induction_scores_after_ablation")
@_no_grad
def _induction_scores_after_ablation(fn):
    tokens, _, cache = _run()
    clean = torch.stack([_definition(cache["pattern", layer], _ind_pairs(N)) for layer in range(2)])
    got = _tensor(fn(_model(), tokens, 1, 2), "induction_scores_after_ablation")
    expect_shape(got, (2, 4), "induction_scores_after_ablation ([n_layers, n_heads])")
    expect_close(got, clean, "ablating a head of the last layer cannot change any attention pattern", atol=1e-5)
    prev_head = int(_definition(cache["pattern", 0], _prev_pairs(tokens.shape[1])).argmax())
    after = fn(_model(), tokens, 0, prev_head)
    expect(after[1].max() < clean[1].max() - 0.3,
           f"ablating the previous-token head L0H{prev_head} should lower the layer-1 induction scores")


# ------------------------------------------------------------------------------------------- Part 5
@visible("make_induction_batch")
def _make_induction_batch(fn):
    d_vocab, seq_len, lo, hi = 12, 40, 3, 7
    chain = torch.zeros(d_vocab, d_vocab)
    for t in range(d_vocab):
        chain[t, t % (d_vocab - 1) + 1] = 1.0  # deterministic text: 0 -> 1 -> 2 ... -> 11 -> 1
    out = fn(16, seq_len, chain, lo, hi, 3)
    expect(isinstance(out, tuple) and len(out) == 2, "make_induction_batch should return a tuple (tokens, is_repeat)")
    tokens, is_repeat = _tensor(out[0], "tokens"), _tensor(out[1], "is_repeat")
    expect_shape(tokens, (16, seq_len), "tokens")
    expect_shape(is_repeat, (16, seq_len), "is_repeat")
    expect(tokens.dtype == torch.long and is_repeat.dtype == torch.bool, "tokens should be long, is_repeat bool")
    expect(bool((tokens[:, 0] == 0).all()) and not bool((tokens[:, 1:] == 0).any()), "BOS (0) first, and only first")
    lengths, starts, on_chain = set(), set(), 0
    for b in range(16):
        first = int(is_repeat[b].float().argmax())
        expect(bool(is_repeat[b, first:].all()) and not bool(is_repeat[b, :first].any()),
               f"row {b}: is_repeat should be False, then True to the end")
        found = [L for L in range(lo, hi + 1) if first - 1 - L >= 1
                 and torch.equal(tokens[b, first - 1:], tokens[b, first - 1 - L:seq_len - L])]
        expect(bool(found), f"row {b}: is_repeat first becomes True at position {first}, but the tokens from position "
                            f"{first - 1} on do not repeat those L positions earlier for any span length L in {lo} .. {hi} "
                            f"(is_repeat should start at s + L + 1, one after the first token of the second copy; "
                            f"is it one position off?)")
        L = found[0]
        s = first - 1 - L
        lengths.add(L)
        starts.add(s)
        text = tokens[b, :s]
        expect(bool((text[1:] == text[:-1] % (d_vocab - 1) + 1).all()), f"row {b}: before the span, follow the bigram chain")
        span = tokens[b, s:s + L]
        on_chain += bool((span[1:] == span[:-1] % (d_vocab - 1) + 1).all())
    expect(len(lengths) >= 3 and len(starts) >= 4, f"lengths {sorted(lengths)} and starts {sorted(starts)} should vary")
    expect(on_chain <= 2, f"{on_chain} of 16 spans follow the bigram chain: span tokens should be uniformly random "
                          f"(over 1 .. d_vocab - 1), not text")
    again = fn(16, seq_len, chain, lo, hi, 3)
    expect(torch.equal(again[0], tokens), "the same seed should give the same batch")
    # Over many rows every allowed length occurs, and some span starts as late as two full copies allow.
    many_tokens, many_repeat = fn(400, seq_len, chain, lo, hi, 4)
    spans = []
    for b in range(400):
        first = int(many_repeat[b].float().argmax())
        L = next((L for L in range(lo, hi + 1) if first - 1 - L >= 1
                  and torch.equal(many_tokens[b, first - 1:], many_tokens[b, first - 1 - L:seq_len - L])), None)
        expect(L is not None, f"row {b} of a batch of 400: the span should repeat with a period in {lo} .. {hi}")
        spans.append((first - 1 - L, L))
    expect({L for _, L in spans} == set(range(lo, hi + 1)), f"in 400 rows every length {lo} .. {hi} should occur")
    expect(any(s == seq_len - 2 * L for s, L in spans),
           "in 400 rows some span should start at seq_len - 2 L, the last start where two full copies fit")


@visible("training_probe")
@_no_grad
def _training_probe(fn):
    tokens, logits, cache = _run()
    got = fn(_model(), tokens)
    keys = {"prev_token", "induction", "first_copy_loss", "second_copy_loss"}
    expect(isinstance(got, dict) and set(got) == keys, f"training_probe should return a dict with keys {sorted(keys)}; got {got!r}")
    loss = _model()(tokens, return_type="loss", loss_per_token=True)
    want = {"prev_token": _definition(cache["pattern", 0], _prev_pairs(tokens.shape[1])).max(),
            "induction": _definition(cache["pattern", 1], _ind_pairs(N)).max(),
            "first_copy_loss": loss[:, 1:N].mean(), "second_copy_loss": loss[:, N + 1:].mean()}
    for key, value in want.items():
        expect_close(torch.tensor(_float(got[key], f"training_probe(...)[{key!r}]")), value,
                     f"training_probe(...)[{key!r}] on the shipped model", atol=1e-4)


@visible("phase_change_step")
def _phase_change_step(fn):
    steps, scores = [0, 25, 50, 75, 100], [0.01, 0.02, 0.3, 0.45, 0.7]
    expect(fn(steps, scores, 0.4) == 75, f"first step with score >= 0.4 is 75; got {fn(steps, scores, 0.4)!r}")
    expect(fn(steps, scores, 0.3) == 50, "a score equal to the threshold counts")
    expect(fn(steps, scores, 0.9) == -1, "no score reaches 0.9: expected -1")
