"""Hidden checks of chapter 2: each compares the learner's function with the reference on fresh inputs, on the
shipped model, and checks a behaviour (invariances, hand-made answers, shapes)."""

import torch

from tests.ch02_induction.conftest import N_REP
from tests.harness import as_number, assert_close, exercise, tensor_of


# --------------------------------------------------------------------------------------------- helpers
_tensor, _num = tensor_of, as_number
_close = assert_close


def _dense(x, what):
    if isinstance(x, torch.Tensor):
        return x.detach()
    assert hasattr(x, "A") and hasattr(x, "B"), f"{what} should return a FactoredMatrix; got {type(x).__name__}"
    return (x.A @ x.B).detach()


def _random_pattern(n_batch, n_heads, pos, gen=None):
    scores = torch.randn(n_batch, n_heads, pos, pos, generator=gen) * 2
    future = torch.triu(torch.ones(pos, pos, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def _one_hot(n_batch, n_heads, pos, key_of):
    pattern = torch.zeros(n_batch, n_heads, pos, pos)
    for q in range(pos):
        k = key_of(q)
        pattern[:, :, q, k if 0 <= k <= q else 0] = 1.0
    return pattern


# ------------------------------------------------------------------------------------------- Part 1
@exercise("generate_repeated_tokens")
def test_generate_repeated_tokens_has_the_structure(impl):
    for n_batch, n, d_vocab, bos in [(3, 7, 20, 0), (2, 11, 20, 19), (4, 5, 9, 4), (1, 1, 3, 1)]:
        tokens = _tensor(impl.generate_repeated_tokens(n_batch, n, d_vocab, bos, 3), "generate_repeated_tokens")
        assert tokens.shape == (n_batch, 1 + 2 * n), f"shape {tuple(tokens.shape)}; expected (n_batch, 1 + 2n) = {(n_batch, 1 + 2 * n)}"
        assert tokens.dtype == torch.long, f"tokens should be torch.long, got {tokens.dtype}"
        assert (tokens[:, 0] == bos).all(), "every row should start with BOS"
        assert (tokens[:, 1:n + 1] == tokens[:, n + 1:]).all(), "the second copy should equal the first"
        assert not (tokens[:, 1:] == bos).any(), f"BOS (id {bos}) must not appear after position 0 (BOS is not always id 0)"
        assert ((tokens >= 0) & (tokens < d_vocab)).all(), f"ids must lie in 0 .. {d_vocab - 1}"


@exercise("generate_repeated_tokens")
def test_generate_repeated_tokens_is_uniform_over_non_bos_ids(impl):
    tokens = _tensor(impl.generate_repeated_tokens(10, 1000, 5, 2, 0), "generate_repeated_tokens")
    r = tokens[:, 1:1001].flatten()
    counts = torch.bincount(r, minlength=5).float()
    assert counts[2] == 0, "BOS must never be drawn"
    others = counts[[0, 1, 3, 4]] / r.numel()
    assert ((others - 0.25).abs() < 0.03).all(), f"the 4 non-BOS ids should be equally likely; frequencies {others.tolist()}"


@exercise("generate_repeated_tokens")
def test_generate_repeated_tokens_uses_its_seed(impl):
    torch.manual_seed(1)
    a = _tensor(impl.generate_repeated_tokens(3, 20, 100, 0, 5), "generate_repeated_tokens")
    torch.manual_seed(2)
    b = _tensor(impl.generate_repeated_tokens(3, 20, 100, 0, 5), "generate_repeated_tokens")
    assert torch.equal(a, b), "the same seed must give the same tokens, whatever torch's global random state"
    c = _tensor(impl.generate_repeated_tokens(3, 20, 100, 0, 6), "generate_repeated_tokens")
    assert not torch.equal(a, c), "different seeds should give different tokens"
    assert not torch.equal(a[0], a[1]), "rows should be drawn independently"


@exercise("loss_on_each_copy")
def test_loss_on_each_copy_matches_reference_on_random_losses(impl, ref, seed):
    for n in (2, 5, 9):
        loss = torch.rand(3, 2 * n) * 5
        _close(impl.loss_on_each_copy(loss, n), ref.loss_on_each_copy(loss, n), f"loss_on_each_copy with n = {n}")


@exercise("loss_on_each_copy")
def test_loss_on_each_copy_matches_reference_on_shipped_model(impl, ref, shipped_run):
    _close(impl.loss_on_each_copy(shipped_run["loss"], N_REP), ref.loss_on_each_copy(shipped_run["loss"], N_REP),
           "loss_on_each_copy on the shipped model's per-token loss", atol=1e-4)


@exercise("loss_on_each_copy")
def test_loss_on_each_copy_ignores_the_unpredictable_first_token_of_each_copy(impl, seed):
    n = 6
    loss = torch.rand(2, 2 * n)
    base = _tensor(impl.loss_on_each_copy(loss, n), "loss_on_each_copy")
    changed = loss.clone()
    changed[:, 0] += 100.0  # index 0 predicts position 1 = R[0] of the first copy
    changed[:, n] += 100.0  # index n predicts position n + 1 = R[0] of the second copy
    _close(impl.loss_on_each_copy(changed, n), base,
           "the losses predicting R[0] (indices 0 and n) must not count: nothing can predict a copy's first token")
    bumped = loss.clone()
    bumped[:, n - 1] += 10.0  # predicts R[n-1] of the first copy
    got = _tensor(impl.loss_on_each_copy(bumped, n), "loss_on_each_copy")
    assert got[0] > base[0] + 1 and abs(got[1] - base[1]) < 1e-5, "index n - 1 predicts the first copy's last token"


@exercise("in_context_learning_score")
def test_in_context_learning_score_matches_reference_on_random_losses(impl, ref, seed):
    loss = torch.rand(5, 30) * 4
    for early, late in [((0, 3), (20, 30)), ((3, 8), (8, 29)), ((10, 11), (11, 12))]:
        got = _num(impl.in_context_learning_score(loss, early, late), "in_context_learning_score")
        want = ref.in_context_learning_score(loss, early, late)
        assert abs(got - want) < 1e-5, f"in_context_learning_score(early={early}, late={late}) = {got:.4f}, expected {want:.4f}"


@exercise("in_context_learning_score")
def test_in_context_learning_score_matches_reference_on_shipped_text(impl, ref, text_loss):
    for early, late in [((8, 16), (96, 127)), ((1, 4), (64, 127))]:
        got = _num(impl.in_context_learning_score(text_loss, early, late), "in_context_learning_score")
        want = ref.in_context_learning_score(text_loss, early, late)
        assert abs(got - want) < 1e-4, f"on the shipped model's text loss, bands {early}, {late}: {got:.4f}, expected {want:.4f}"


@exercise("in_context_learning_score")
def test_in_context_learning_score_is_late_minus_early_over_slice_bands(impl):
    loss = torch.linspace(5, 1, 20).expand(3, 20)
    got = _num(impl.in_context_learning_score(loss, (2, 4), (16, 18)), "in_context_learning_score")
    assert got < 0, f"a loss that falls along the context must give a negative score (late minus early); got {got:.3f}"
    spike = torch.zeros(2, 12)
    spike[:, 4] = 10.0  # index 4: the stop of the early band and the start of the late band
    got = _num(impl.in_context_learning_score(spike, (0, 4), (4, 8)), "in_context_learning_score")
    assert abs(got - 2.5) < 1e-5, (f"bands are slices: (0, 4) is indices 0..3 and (4, 8) is indices 4..7, so a spike of 10 "
                                   f"at index 4 gives 10 / 4 = 2.5; got {got:.4f}")
    single = torch.arange(12.0).expand(2, 12)
    got = _num(impl.in_context_learning_score(single, (2, 6), (8, 12)), "in_context_learning_score")
    assert abs(got - 6.0) < 1e-5, f"every index of each band counts (mean of 8..11 minus mean of 2..5 = 6); got {got:.4f}"


# ------------------------------------------------------------------------------------------- Part 2
def _check_score_vs_reference(impl, ref, name, patterns):
    for i, pattern in enumerate(patterns):
        _close(getattr(impl, name)(pattern), getattr(ref, name)(pattern), f"{name} on pattern {i} of shape {tuple(pattern.shape)}")


@exercise("previous_token_score")
def test_previous_token_score_matches_reference_on_random_patterns(impl, ref, seed):
    _check_score_vs_reference(impl, ref, "previous_token_score", [_random_pattern(3, 4, 9), _random_pattern(1, 2, 17)])


@exercise("previous_token_score")
def test_previous_token_score_matches_reference_on_shipped_model(impl, ref, shipped_run):
    _check_score_vs_reference(impl, ref, "previous_token_score", shipped_run["patterns"])


@exercise("previous_token_score")
def test_previous_token_score_on_hand_made_patterns(impl):
    _close(impl.previous_token_score(_one_hot(2, 3, 8, lambda q: q - 1)), torch.ones(3), "a pattern attending one step back")
    _close(impl.previous_token_score(_one_hot(2, 3, 8, lambda q: q)), torch.zeros(3),
           "a pattern attending to the current token")
    mixed = _one_hot(1, 2, 6, lambda q: q - 1)
    mixed[0, 1] = _one_hot(1, 1, 6, lambda q: 0)[0, 0]
    _close(impl.previous_token_score(mixed), torch.tensor([1.0, 1 / 5]), "one head back, one head on BOS (query 1's previous IS BOS)")


@exercise("current_token_score")
def test_current_token_score_matches_reference_on_random_patterns(impl, ref, seed):
    _check_score_vs_reference(impl, ref, "current_token_score", [_random_pattern(3, 4, 9), _random_pattern(1, 2, 17)])


@exercise("current_token_score")
def test_current_token_score_matches_reference_on_shipped_model(impl, ref, shipped_run):
    _check_score_vs_reference(impl, ref, "current_token_score", shipped_run["patterns"])


@exercise("current_token_score")
def test_current_token_score_leaves_out_query_zero(impl):
    _close(impl.current_token_score(_one_hot(2, 3, 7, lambda q: 0)), torch.zeros(3),
           "a head attending only to BOS attends to itself only at query 0, which must be left out")
    _close(impl.current_token_score(_one_hot(2, 3, 7, lambda q: q)), torch.ones(3), "a head attending to itself")


@exercise("first_token_score")
def test_first_token_score_matches_reference_on_random_patterns(impl, ref, seed):
    _check_score_vs_reference(impl, ref, "first_token_score", [_random_pattern(3, 4, 9), _random_pattern(1, 2, 17)])


@exercise("first_token_score")
def test_first_token_score_matches_reference_on_shipped_model(impl, ref, shipped_run):
    _check_score_vs_reference(impl, ref, "first_token_score", shipped_run["patterns"])


@exercise("first_token_score")
def test_first_token_score_leaves_out_query_zero(impl):
    _close(impl.first_token_score(_one_hot(2, 3, 7, lambda q: q)), torch.zeros(3),
           "a head attending to itself attends to position 0 only at query 0, which must be left out")
    _close(impl.first_token_score(_one_hot(2, 3, 7, lambda q: 0)), torch.ones(3), "a head attending only to BOS")


@exercise("induction_score")
def test_induction_score_matches_reference_on_random_patterns(impl, ref, seed):
    for n in (2, 4, 7):
        pattern = _random_pattern(3, 4, 2 * n + 1)
        _close(impl.induction_score(pattern, n), ref.induction_score(pattern, n), f"induction_score with n = {n}")


@exercise("induction_score")
def test_induction_score_matches_reference_on_shipped_model(impl, ref, shipped_run):
    for layer, pattern in enumerate(shipped_run["patterns"]):
        _close(impl.induction_score(pattern, N_REP), ref.induction_score(pattern, N_REP),
               f"induction_score of the shipped model's layer {layer}")


@exercise("induction_score")
def test_induction_score_on_hand_made_patterns(impl):
    n = 5
    pos = 2 * n + 1
    _close(impl.induction_score(_one_hot(2, 3, pos, lambda q: q - n + 1 if q > n else q), n), torch.ones(3),
           "attending from q to q - n + 1 in the second copy (and to itself in the first)")
    _close(impl.induction_score(_one_hot(2, 3, pos, lambda q: q - n if q > n else q), n), torch.zeros(3),
           "attending to the token's own earlier copy (q - n) is a duplicate-token head, not induction")
    _close(impl.induction_score(_one_hot(2, 3, pos, lambda q: q - n + 2 if q > n else q), n), torch.zeros(3),
           "attending two tokens after the earlier copy is not induction")


@exercise("head_score_table")
def test_head_score_table_matches_reference_on_shipped_model(impl, ref, shipped, rep):
    _close(impl.head_score_table(shipped, rep), ref.head_score_table(shipped, rep), "head_score_table on BOS + R + R, n = 12")


@exercise("head_score_table")
def test_head_score_table_matches_reference_on_short_sequences(impl, ref, shipped, rep_short):
    _close(impl.head_score_table(shipped, rep_short), ref.head_score_table(shipped, rep_short),
           "head_score_table on BOS + R + R, n = 5 (n comes from the sequence length)")


@exercise("head_score_table")
def test_head_score_table_rows_are_in_head_kinds_order(impl, ref, shipped_run, shipped, rep):
    table = _tensor(impl.head_score_table(shipped, rep), "head_score_table")
    assert table.shape == (4, 2, 4), f"shape {tuple(table.shape)}; expected [4 kinds, n_layers, n_heads] = (4, 2, 4)"
    p1 = shipped_run["patterns"][1]
    _close(table[3, 1], ref.induction_score(p1, N_REP), "row 3 should be the induction scores (HEAD_KINDS order)", atol=1e-4)
    _close(table[2, 1], ref.first_token_score(p1), "row 2 should be the first-token scores", atol=1e-4)
    _close(table[0, 0], ref.previous_token_score(shipped_run["patterns"][0]), "row 0 should be the previous-token scores", atol=1e-4)


@exercise("label_heads")
def test_label_heads_matches_reference_on_random_tables(impl, ref, seed):
    for threshold in (0.3, 0.5, 0.7):
        table = torch.rand(4, 3, 5)
        got, want = impl.label_heads(table, threshold), ref.label_heads(table, threshold)
        assert got == want, f"labels at threshold {threshold}: got {got}, expected {want}"


@exercise("label_heads")
def test_label_heads_matches_reference_on_shipped_model(impl, ref, shipped, rep):
    table = ref.head_score_table(shipped, rep)
    got, want = impl.label_heads(table, 0.4), ref.label_heads(table, 0.4)
    assert got == want, f"labels of the shipped model's heads: got {got}, expected {want}"


@exercise("label_heads")
def test_label_heads_picks_the_highest_score_and_respects_the_threshold(impl):
    table = torch.zeros(4, 1, 4)
    table[:, 0, 0] = torch.tensor([0.45, 0.0, 0.0, 0.8])   # both above: the highest wins
    table[:, 0, 1] = torch.tensor([0.1, 0.39, 0.2, 0.0])   # below
    table[:, 0, 2] = torch.tensor([0.0, 0.0, 0.4, 0.0])    # exactly at the threshold: labelled
    table[:, 0, 3] = torch.tensor([0.6, 0.7, 0.0, 0.0])
    got = impl.label_heads(table, 0.4)
    want = [["induction", "none", "first-token", "current-token"]]
    assert got == want, f"got {got}, expected {want}"


# ------------------------------------------------------------------------------------------- Part 3
@exercise("induction_scores_with_hooks")
def test_induction_scores_with_hooks_matches_reference_on_shipped_model(impl, ref, shipped, rep):
    _close(impl.induction_scores_with_hooks(shipped, rep), ref.induction_scores_with_hooks(shipped, rep),
           "induction_scores_with_hooks on the shipped model, n = 12")


@exercise("induction_scores_with_hooks")
def test_induction_scores_with_hooks_matches_reference_on_short_sequences(impl, ref, shipped, rep_short):
    _close(impl.induction_scores_with_hooks(shipped, rep_short), ref.induction_scores_with_hooks(shipped, rep_short),
           "induction_scores_with_hooks on BOS + R + R with n = 5")


@exercise("induction_scores_with_hooks")
def test_induction_scores_with_hooks_agree_with_cached_patterns(impl, ref, shipped_run, shipped, rep):
    got = _tensor(impl.induction_scores_with_hooks(shipped, rep), "induction_scores_with_hooks")
    assert got.shape == (2, 4), f"shape {tuple(got.shape)}; expected [n_layers, n_heads] = (2, 4)"
    want = torch.stack([ref.induction_score(p, N_REP) for p in shipped_run["patterns"]])
    _close(got, want, "every layer's scores should match the induction score of its cached pattern", atol=1e-5)


@exercise("zero_ablate_head_z")
def test_zero_ablate_head_z_matches_reference_on_random_z(impl, ref, seed):
    z = torch.randn(2, 6, 5, 3)
    for head in range(5):
        _close(impl.zero_ablate_head_z(z.clone(), head), ref.zero_ablate_head_z(z, head), f"zero_ablate_head_z(z, {head})")


@exercise("zero_ablate_head_z")
def test_zero_ablate_head_z_matches_reference_on_shipped_z(impl, ref, shipped_run):
    z = shipped_run["cache"]["z", 0]
    _close(impl.zero_ablate_head_z(z.clone(), 1), ref.zero_ablate_head_z(z, 1), "zero_ablate_head_z on the shipped model's z")


def _call_without_writing_into_z(fn, name, z, *args):
    """Call an ablation on a `z` that requires grad, and fail if the function writes into `z` in place.

    This must catch an in-place write both in-process and in an isolated grading worker, where the function
    gets its own copy of `z` and a change to it never comes back. It does, because a write into `z` shows up
    in the call itself: PyTorch refuses an in-place write into a leaf tensor that requires grad (in the worker,
    too: the arguments arrive there as such leaves), and a write made under `torch.no_grad()` returns `z`
    itself, whose gradient then flows into the ablated head (checked by the caller)."""
    before = z.detach().clone()
    try:
        out = fn(z, *args)
    except Exception as err:
        if "in-place" in str(err) or "inplace" in str(err):
            raise AssertionError(f"{name} writes into z in place (PyTorch refuses that for a tensor that requires grad): "
                                 f"don't change z itself; make a copy (z.clone()) and change the copy") from None
        raise
    assert torch.equal(z.detach(), before), f"{name} changed z itself: return a new tensor and leave z as it was"
    return out


@exercise("zero_ablate_head_z")
def test_zero_ablate_head_z_leaves_the_input_and_other_heads_alone(impl, seed):
    z = torch.randn(3, 4, 4, 2, requires_grad=True)
    out = _call_without_writing_into_z(impl.zero_ablate_head_z, "zero_ablate_head_z", z, 3)
    _close(out[:, :, :3], z.detach()[:, :, :3], "the other heads should be unchanged")
    _close(out[:, :, 3], torch.zeros(3, 4, 2), "head 3 should be 0")
    if isinstance(out, torch.Tensor) and out.requires_grad:  # (a version written under no_grad is fine too)
        out.sum().backward()
        assert z.grad is not None and (z.grad[:, :, :3] == 1).all() and (z.grad[:, :, 3] == 0).all(), \
            "the output must be a new tensor: the other heads pass through, the ablated head does not depend on z"


@exercise("mean_ablate_head_z")
def test_mean_ablate_head_z_matches_reference_on_random_z(impl, ref, seed):
    z = torch.randn(4, 6, 3, 2)
    z_mean = torch.randn(6, 3, 2)  # any [pos, n_heads, d_head] tensor, not only z's own mean
    for head in range(3):
        _close(impl.mean_ablate_head_z(z.clone(), head, z_mean), ref.mean_ablate_head_z(z, head, z_mean),
               f"mean_ablate_head_z(z, {head}, z_mean)")


@exercise("mean_ablate_head_z")
def test_mean_ablate_head_z_matches_reference_on_shipped_z(impl, ref, shipped_run):
    z = shipped_run["cache"]["z", 1]
    _close(impl.mean_ablate_head_z(z.clone(), 2, z.mean(0)), ref.mean_ablate_head_z(z, 2, z.mean(0)),
           "mean_ablate_head_z on the shipped model's z")


@exercise("mean_ablate_head_z")
def test_mean_ablate_head_z_keeps_positions_apart(impl, seed):
    z = torch.randn(2, 5, 3, 4)
    z_mean = torch.arange(5.0)[:, None, None].expand(5, 3, 4).clone()  # a different mean at every position
    out = _tensor(impl.mean_ablate_head_z(z, 0, z_mean), "mean_ablate_head_z")
    _close(out[:, :, 0], z_mean[None, :, 0].expand(2, 5, 4), "head 0 at position p should be z_mean[p, 0] (keep positions apart)")
    _close(out[:, :, 1:], z[:, :, 1:], "the other heads should be unchanged")


@exercise("mean_ablate_head_z")
def test_mean_ablate_head_z_leaves_z_alone(impl, seed):
    z = torch.randn(3, 4, 3, 2, requires_grad=True)
    z_mean = torch.randn(4, 3, 2)
    out = _call_without_writing_into_z(impl.mean_ablate_head_z, "mean_ablate_head_z", z, 1, z_mean)
    _close(out[:, :, 1], z_mean[None, :, 1].expand(3, 4, 2), "head 1 should be z_mean[:, 1] in every sequence")
    _close(out[:, :, [0, 2]], z.detach()[:, :, [0, 2]], "the other heads should be unchanged")
    if isinstance(out, torch.Tensor) and out.requires_grad:  # (a version written under no_grad is fine too)
        weights = torch.randn(3, 4, 3, 2)
        (out * weights).sum().backward()
        assert z.grad is not None and (z.grad[:, :, 1] == 0).all(), \
            "the output must be a new tensor whose ablated head does not depend on z (is it z itself, changed in place?)"
        _close(z.grad[:, :, [0, 2]], weights[:, :, [0, 2]], "the other heads should pass through unchanged")


@exercise("ablated_copy_losses")
def test_ablated_copy_losses_zero_matches_reference_on_shipped_model(impl, ref, shipped, rep, prev_head):
    for layer, head in [(0, prev_head), (1, 2), (1, 3)]:
        _close(impl.ablated_copy_losses(shipped, rep, layer, head, "zero"), ref.ablated_copy_losses(shipped, rep, layer, head, "zero"),
               f"ablated_copy_losses with L{layer}H{head} zero-ablated", atol=1e-3)


@exercise("ablated_copy_losses")
def test_ablated_copy_losses_mean_matches_reference_on_shipped_model(impl, ref, shipped, rep, prev_head):
    for layer, head in [(0, prev_head), (1, 1)]:
        _close(impl.ablated_copy_losses(shipped, rep, layer, head, "mean"), ref.ablated_copy_losses(shipped, rep, layer, head, "mean"),
               f"ablated_copy_losses with L{layer}H{head} mean-ablated (mean over this batch, per position)", atol=1e-3)


@exercise("ablated_copy_losses")
def test_ablated_copy_losses_mean_of_one_sequence_changes_nothing(impl, ref, shipped, rep):
    one = rep[1:2]
    with torch.no_grad():
        clean = ref.loss_on_each_copy(shipped(one, return_type="loss", loss_per_token=True), N_REP)
    _close(impl.ablated_copy_losses(shipped, one, 1, 1, "mean"), clean,
           "mean-ablating with the mean of a single sequence should leave the losses unchanged", atol=1e-3)


@exercise("head_logit_attribution")
def test_head_logit_attribution_matches_reference_on_random_tensors(impl, ref, seed):
    n, n_layers, batch, n_heads, d_head, d_model, d_vocab = 4, 2, 3, 3, 2, 5, 11
    pos = 2 * n + 1
    z = torch.randn(n_layers, batch, pos, n_heads, d_head)
    W_O, W_U = torch.randn(n_layers, n_heads, d_head, d_model), torch.randn(d_model, d_vocab)
    ln_scale = torch.rand(batch, pos, 1) + 0.5
    tokens = torch.randint(0, d_vocab, (batch, pos))
    _close(impl.head_logit_attribution(z, W_O, W_U, ln_scale, tokens, n), ref.head_logit_attribution(z, W_O, W_U, ln_scale, tokens, n),
           "head_logit_attribution on random tensors", atol=1e-4)


@exercise("head_logit_attribution")
def test_head_logit_attribution_matches_reference_on_shipped_model(impl, ref, folded, folded_run):
    args = (folded_run["z"], folded.W_O.detach(), folded.W_U.detach(), folded_run["ln_scale"], folded_run["tokens"], N_REP)
    _close(impl.head_logit_attribution(*args), ref.head_logit_attribution(*args), "head_logit_attribution on the shipped model",
           atol=1e-3)


@exercise("head_logit_attribution")
def test_head_logit_attribution_divides_by_the_scale_and_uses_the_next_token(impl, ref, seed):
    n, pos = 3, 7
    z, W_O, W_U = torch.randn(1, 2, pos, 2, 3), torch.randn(1, 2, 3, 4), torch.randn(4, 6)
    tokens = torch.randint(0, 6, (2, pos))
    scale = torch.rand(2, pos, 1) + 0.5
    base = _tensor(impl.head_logit_attribution(z, W_O, W_U, scale, tokens, n), "head_logit_attribution")
    _close(impl.head_logit_attribution(z, W_O, W_U, 2 * scale, tokens, n), base / 2,
           "doubling the LayerNorm scale should halve every attribution (divide by ln_scale)", atol=1e-5)
    changed = tokens.clone()
    changed[:, n + 1] = (changed[:, n + 1] + 1) % 6  # token at n+1 is R[0] of the second copy: predicted at n, not counted
    _close(impl.head_logit_attribution(z, W_O, W_U, scale, changed, n), base,
           "the token at position n + 1 is predicted from position n, which is not averaged over", atol=1e-5)


# ------------------------------------------------------------------------------------------- Part 4
@exercise("diagonal_argmax_fraction")
def test_diagonal_argmax_fraction_matches_reference_on_random_matrices(impl, ref, seed):
    for n in (3, 10, 50):
        M = torch.randn(n, n) + 1.5 * torch.eye(n)
        got = _num(impl.diagonal_argmax_fraction(M), "diagonal_argmax_fraction")
        assert abs(got - ref.diagonal_argmax_fraction(M)) < 1e-6, f"diagonal_argmax_fraction of a random {n}x{n} matrix"


@exercise("diagonal_argmax_fraction")
def test_diagonal_argmax_fraction_of_permutations(impl, seed):
    perm = torch.tensor([0, 2, 1, 3, 5, 4, 6, 7])  # 4 fixed points of 8
    got = _num(impl.diagonal_argmax_fraction(torch.eye(8)[perm]), "diagonal_argmax_fraction")
    assert abs(got - 0.5) < 1e-6, f"a permutation matrix with 4 fixed points of 8 should give 0.5; got {got}"


@exercise("diagonal_argmax_fraction")
def test_diagonal_argmax_fraction_takes_the_argmax_of_each_row(impl):
    M = torch.tensor([[2.0, 0.0, 0.0], [3.0, 1.0, 0.0], [3.0, 0.0, 0.5]])  # rows peak at 0, 0, 0; columns at 1, 1, 2
    got = _num(impl.diagonal_argmax_fraction(M), "diagonal_argmax_fraction")
    assert abs(got - 1 / 3) < 1e-6, f"only row 0 peaks on the diagonal (argmax over each row, dim=-1): expected 1/3, got {got}"


@exercise("ov_copy_fractions")
def test_ov_copy_fractions_matches_reference_on_random_weights(impl, ref, seed):
    W_E, W_U = torch.randn(40, 8), torch.randn(8, 40)
    W_V, W_O = torch.randn(2, 3, 8, 4), torch.randn(2, 3, 4, 8)
    _close(impl.ov_copy_fractions(W_E, W_V, W_O, W_U), ref.ov_copy_fractions(W_E, W_V, W_O, W_U), "ov_copy_fractions on random weights")


@exercise("ov_copy_fractions")
def test_ov_copy_fractions_matches_reference_on_shipped_model(impl, ref, folded):
    args = [w.detach() for w in (folded.W_E, folded.W_V, folded.W_O, folded.W_U)]
    _close(impl.ov_copy_fractions(*args), ref.ov_copy_fractions(*args), "ov_copy_fractions on the shipped model")


@exercise("ov_copy_fractions")
def test_ov_copy_fractions_reads_rows_as_source_tokens(impl, seed):
    d = 5
    W_E = torch.eye(d)
    W_U = torch.eye(d)
    M = torch.zeros(d, d)
    M[:, 0] = 1.0            # every source raises output 0: only row 0 peaks on the diagonal (rows = source)
    M += 0.1 * torch.eye(d)  # columns: column 0 peaks at row 0 too, others on the diagonal
    W_V, W_O = M[None, None], torch.eye(d)[None, None]
    got = _tensor(impl.ov_copy_fractions(W_E, W_V, W_O, W_U), "ov_copy_fractions")
    assert got.shape == (1, 1), f"shape {tuple(got.shape)}; expected [n_layers, n_heads] = (1, 1)"
    assert abs(got[0, 0].item() - 1 / d) < 1e-6, (f"rows are source tokens, columns output logits: only source 0's row "
                                                  f"peaks on itself, so 1/{d}; got {got[0, 0].item():.3f}")


@exercise("positional_patterns")
def test_positional_patterns_matches_reference_on_random_weights(impl, ref, seed):
    W_pos, W_Q, W_K = torch.randn(12, 8) * 3 + 1, torch.randn(3, 8, 4), torch.randn(3, 8, 4)
    b_Q, b_K = torch.randn(3, 4), torch.randn(3, 4)
    _close(impl.positional_patterns(W_pos, W_Q, b_Q, W_K, b_K), ref.positional_patterns(W_pos, W_Q, b_Q, W_K, b_K),
           "positional_patterns on random weights", atol=1e-5)


@exercise("positional_patterns")
def test_positional_patterns_matches_reference_on_shipped_model(impl, ref, folded):
    args = [w.detach() for w in (folded.W_pos[:40], folded.W_Q[0], folded.b_Q[0], folded.W_K[0], folded.b_K[0])]
    _close(impl.positional_patterns(*args), ref.positional_patterns(*args), "positional_patterns of the shipped model's layer 0",
           atol=1e-5)


@exercise("positional_patterns")
def test_positional_patterns_is_causal_normalised_and_scaled(impl, ref, seed):
    W_pos, W_Q, W_K = torch.randn(9, 6), torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    b_Q, b_K = torch.zeros(2, 3), torch.zeros(2, 3)
    out = _tensor(impl.positional_patterns(W_pos, W_Q, b_Q, W_K, b_K), "positional_patterns")
    assert out.shape == (2, 9, 9), f"shape {tuple(out.shape)}; expected [n_heads, n_pos, n_pos] = (2, 9, 9)"
    assert (out.triu(1).abs() < 1e-7).all(), "keys after the query must get zero attention"
    _close(out.sum(-1), torch.ones(2, 9), "each row should sum to 1")
    _close(impl.positional_patterns(5 * W_pos - 1, W_Q, b_Q, W_K, b_K), out,
           "rows are normalised first: scaling or shifting W_pos must not change the pattern", atol=1e-4)
    _close(out, ref.positional_patterns(W_pos, W_Q, b_Q, W_K, b_K), "scores are divided by sqrt(d_head)", atol=1e-5)


@exercise("k_composition_circuit")
def test_k_composition_circuit_matches_reference_on_random_weights(impl, ref, seed):
    W_E, W_V0, W_O0 = torch.randn(20, 6), torch.randn(6, 3), torch.randn(3, 6)
    W_Q1, W_K1 = torch.randn(6, 3), torch.randn(6, 3)
    got = _dense(impl.k_composition_circuit(W_E, W_V0, W_O0, W_Q1, W_K1), "k_composition_circuit")
    _close(got, ref.k_composition_circuit(W_E, W_V0, W_O0, W_Q1, W_K1).AB, "k_composition_circuit(...).AB on random weights",
           atol=1e-4)


@exercise("k_composition_circuit")
def test_k_composition_circuit_matches_reference_on_shipped_model(impl, ref, folded, prev_head):
    args = [w.detach() for w in (folded.W_E, folded.W_V[0, prev_head], folded.W_O[0, prev_head], folded.W_Q[1, 2], folded.W_K[1, 2])]
    got = _dense(impl.k_composition_circuit(*args), "k_composition_circuit")
    _close(got, ref.k_composition_circuit(*args).AB, "the shipped model's K-composition circuit", atol=1e-3, rtol=1e-3)


@exercise("k_composition_circuit")
def test_k_composition_circuit_puts_the_previous_token_head_on_the_key_side(impl, seed):
    W_E, W_Q1, W_K1 = torch.randn(9, 4), torch.randn(4, 2), torch.randn(4, 2)
    W_V0, W_O0 = torch.randn(4, 2), torch.randn(2, 4)
    got = _dense(impl.k_composition_circuit(W_E, W_V0, W_O0, W_Q1, W_K1), "k_composition_circuit")
    assert got.shape == (9, 9), f"shape {tuple(got.shape)}; expected [d_vocab, d_vocab] = (9, 9)"
    keys = W_E @ W_V0 @ W_O0 @ W_K1  # what the key holds when the previous-token head moved token B there
    _close(got, (W_E @ W_Q1) @ keys.T, "rows: query tokens read by W_Q1; columns: tokens moved by the previous-token head "
                                       "into the key (W_E W_V0 W_O0 W_K1)", atol=1e-4)


@exercise("pairwise_composition_scores")
def test_pairwise_composition_scores_matches_reference_on_random_matrices(impl, ref, seed):
    W_A, W_B = torch.randn(3, 7, 7), torch.randn(4, 7, 7)
    _close(impl.pairwise_composition_scores(W_A, W_B), ref.pairwise_composition_scores(W_A, W_B),
           "pairwise_composition_scores on random matrices")


@exercise("pairwise_composition_scores")
def test_pairwise_composition_scores_matches_reference_on_shipped_model(impl, ref, folded):
    W_A = (folded.W_V[0] @ folded.W_O[0]).detach()
    W_B = (folded.W_K[1] @ folded.W_Q[1].transpose(-1, -2)).detach()
    _close(impl.pairwise_composition_scores(W_A, W_B), ref.pairwise_composition_scores(W_A, W_B),
           "K-composition scores of the shipped model", atol=1e-5)


@exercise("pairwise_composition_scores")
def test_pairwise_composition_scores_order_and_scale(impl, seed):
    W_A, W_B = torch.randn(2, 5, 5), torch.randn(2, 5, 5)
    base = _tensor(impl.pairwise_composition_scores(W_A, W_B), "pairwise_composition_scores")
    assert base.shape == (2, 2), f"shape {tuple(base.shape)}; expected [n_a, n_b] = (2, 2)"
    _close(impl.pairwise_composition_scores(3 * W_A, 0.5 * W_B), base, "the score must not depend on the matrices' scale")
    A = torch.zeros(1, 3, 3)
    A[0, 0, 1] = 1.0  # writes direction 1 when reading direction 0
    B = torch.zeros(1, 3, 3)
    B[0, 1, 2] = 1.0  # reads direction 1
    _close(impl.pairwise_composition_scores(A, B), torch.ones(1, 1), "W_A writes what W_B reads: x W_A W_B (writer first)")
    _close(impl.pairwise_composition_scores(B, A), torch.zeros(1, 1), "swapped, they don't compose")


@exercise("random_composition_scores")
def test_random_composition_scores_match_reference_distribution(impl, ref):
    torch.manual_seed(0)
    got = _tensor(impl.random_composition_scores(64, 16, 1500), "random_composition_scores")
    torch.manual_seed(1)
    want = ref.random_composition_scores(64, 16, 1500)
    assert got.shape == (1500,), f"shape {tuple(got.shape)}; expected [n_samples] = (1500,)"
    assert abs(got.mean() - want.mean()) < 0.01, f"mean {got.mean():.4f}; the random baseline's mean is about {want.mean():.4f}"
    assert abs(got.std() - want.std()) < 0.01, f"spread {got.std():.4f}; expected about {want.std():.4f}"


@exercise("random_composition_scores")
def test_random_composition_scores_depend_on_the_shapes(impl, ref):
    for d_model, d_head in [(16, 4), (32, 32)]:
        torch.manual_seed(2)
        got = _tensor(impl.random_composition_scores(d_model, d_head, 1000), "random_composition_scores")
        torch.manual_seed(3)
        want = ref.random_composition_scores(d_model, d_head, 1000)
        assert abs(got.mean() - want.mean()) < 0.015, (f"d_model {d_model}, d_head {d_head}: mean {got.mean():.3f}, "
                                                       f"expected about {want.mean():.3f}")


@exercise("random_composition_scores")
def test_random_composition_scores_use_rank_d_head_factors(impl, ref):
    """With d_head 1 the score is |cos| of the angle between two independent Gaussian directions: in 3 dimensions
    |cos| is uniform on [0, 1], mean 1/2 (full-rank matrices would give about 0.56)."""
    torch.manual_seed(5)
    got = _tensor(impl.random_composition_scores(3, 1, 4000), "random_composition_scores")
    torch.manual_seed(6)
    want = ref.random_composition_scores(3, 1, 4000)
    assert abs(got.mean() - 0.5) < 0.03 and abs(got.mean() - want.mean()) < 0.03, \
        (f"random_composition_scores(3, 1, 4000) has mean {got.mean():.3f}; with rank-1 factors (d_head = 1) it should be "
         f"about 1/2: each matrix is a [d_model, d_head] times a [d_head, d_model] Gaussian matrix")


@exercise("random_composition_scores")
def test_random_composition_scores_are_fresh_and_in_range(impl):
    torch.manual_seed(4)
    a = _tensor(impl.random_composition_scores(20, 5, 200), "random_composition_scores")
    b = _tensor(impl.random_composition_scores(20, 5, 200), "random_composition_scores")
    assert ((a > 0) & (a < 1)).all(), "composition scores lie strictly between 0 and 1"
    assert not torch.equal(a, b), "each call should draw fresh matrices"
    assert a.unique().numel() > 190, "each sample should be a different random pair"


@exercise("induction_scores_after_ablation")
def test_induction_scores_after_ablation_of_previous_token_head_matches_reference(impl, ref, shipped, rep, prev_head):
    _close(impl.induction_scores_after_ablation(shipped, rep, 0, prev_head), ref.induction_scores_after_ablation(shipped, rep, 0, prev_head),
           f"induction scores with the previous-token head L0H{prev_head} zero-ablated", atol=1e-4)


@exercise("induction_scores_after_ablation")
def test_induction_scores_after_ablation_of_other_heads_matches_reference(impl, ref, shipped, rep_short, prev_head):
    other = (prev_head + 1) % 4
    for layer, head in [(0, other), (1, 1)]:
        _close(impl.induction_scores_after_ablation(shipped, rep_short, layer, head),
               ref.induction_scores_after_ablation(shipped, rep_short, layer, head),
               f"induction scores (n = 5) with L{layer}H{head} zero-ablated", atol=1e-4)


@exercise("induction_scores_after_ablation")
def test_induction_scores_after_ablation_of_last_layer_changes_nothing(impl, ref, shipped, shipped_run, rep):
    clean = torch.stack([ref.induction_score(p, N_REP) for p in shipped_run["patterns"]])
    _close(impl.induction_scores_after_ablation(shipped, rep, 1, 2), clean,
           "ablating a last-layer head's z cannot change any attention pattern", atol=1e-5)


# ------------------------------------------------------------------------------------------- Part 5
def _chain(d_vocab):
    """Deterministic text: 0 -> 1 -> 2 -> ... -> d_vocab - 1 -> 1."""
    chain = torch.zeros(d_vocab, d_vocab)
    for t in range(d_vocab):
        chain[t, t % (d_vocab - 1) + 1] = 1.0
    return chain


def _spans(tokens, is_repeat, lo, hi):
    """(start, length) of each row's span, from is_repeat and the tokens; asserts the structure."""
    found = []
    seq_len = tokens.shape[1]
    for b in range(tokens.shape[0]):
        assert is_repeat[b].any(), f"row {b}: is_repeat is all False; every sequence should hold a repeated span"
        first = int(is_repeat[b].float().argmax())
        assert is_repeat[b, first:].all() and not is_repeat[b, :first].any(), f"row {b}: is_repeat should be False, then True to the end"
        lengths = [L for L in range(lo, hi + 1) if first - 1 - L >= 1
                   and torch.equal(tokens[b, first - 1:], tokens[b, first - 1 - L:seq_len - L])]
        assert lengths, (f"row {b}: is_repeat should start at s + L + 1, where the span of length L in {lo}..{hi} starting at s "
                         f"repeats (tiled) to the end")
        found.append((first - 1 - lengths[0], lengths[0]))
    return found


def _batch(impl, *args):
    out = impl.make_induction_batch(*args)
    assert isinstance(out, (tuple, list)) and len(out) == 2, "make_induction_batch should return (tokens, is_repeat)"
    tokens, is_repeat = _tensor(out[0], "tokens"), _tensor(out[1], "is_repeat")
    assert tokens.dtype == torch.long and is_repeat.dtype == torch.bool, "tokens should be long and is_repeat bool"
    return tokens, is_repeat


@exercise("make_induction_batch")
def test_make_induction_batch_structure(impl):
    d_vocab, seq_len, lo, hi = 15, 48, 4, 9
    tokens, is_repeat = _batch(impl, 24, seq_len, _chain(d_vocab), lo, hi, 11)
    assert tokens.shape == (24, seq_len) and is_repeat.shape == (24, seq_len), "both outputs are [n_batch, seq_len]"
    assert (tokens[:, 0] == 0).all() and not (tokens[:, 1:] == 0).any(), "BOS (0) at position 0 only"
    assert (tokens < d_vocab).all(), "ids must lie below d_vocab"
    for b, (s, L) in enumerate(_spans(tokens, is_repeat, lo, hi)):
        assert s + 2 * L <= seq_len, f"row {b}: the span starts at {s} with length {L}: two full copies must fit"
        text = tokens[b, :s]
        assert (text[1:] == text[:-1] % (d_vocab - 1) + 1).all(), f"row {b}: the text before the span must follow the bigram table"


@exercise("make_induction_batch")
def test_make_induction_batch_varies_length_and_position(impl):
    seq_len, lo, hi = 40, 3, 8
    tokens, is_repeat = _batch(impl, 300, seq_len, _chain(10), lo, hi, 5)
    spans = _spans(tokens, is_repeat, lo, hi)
    lengths = {L for _, L in spans}
    assert lengths == set(range(lo, hi + 1)), f"span lengths should be uniform over {lo}..{hi}; saw {sorted(lengths)}"
    starts = [s for s, _ in spans]
    assert min(starts) == 1, "a span may start right after BOS (position 1)"
    assert max(starts) >= seq_len - 2 * lo - 2, f"starts should range up to seq_len - 2L; the largest seen is {max(starts)}"
    assert any(s == seq_len - 2 * L for s, L in spans), ("a span of length L may start as late as seq_len - 2 L (two full "
                                                         "copies just fit); no row of 300 did")
    assert len(set(starts)) >= 15, "starts should vary widely, or a model could copy by absolute position"
    again, _ = _batch(impl, 300, seq_len, _chain(10), lo, hi, 5)
    other, _ = _batch(impl, 300, seq_len, _chain(10), lo, hi, 6)
    assert torch.equal(again, tokens) and not torch.equal(other, tokens), "the seed should fix the batch, and only the seed"


@exercise("make_induction_batch")
def test_make_induction_batch_samples_text_and_spans_from_the_right_distributions(impl, ref):
    d_vocab, seq_len = 8, 64
    gen = torch.Generator().manual_seed(0)
    table = torch.rand(d_vocab, d_vocab, generator=gen) ** 3
    table[:, 0] = 0
    table /= table.sum(1, keepdim=True)
    tokens, is_repeat = _batch(impl, 400, seq_len, table, 4, 6, 1)
    spans = _spans(tokens, is_repeat, 4, 6)
    counts = torch.zeros(d_vocab, d_vocab)
    span_tokens = []
    for b, (s, L) in enumerate(spans):
        text = tokens[b, :s]
        counts.index_put_((text[:-1], text[1:]), torch.ones(len(text) - 1), accumulate=True)
        span_tokens.append(tokens[b, s:s + L])
    freq = counts / counts.sum(1, keepdim=True).clamp(min=1)
    busy = counts.sum(1) > 300
    assert busy.sum() >= 5, "too little text before the spans to check the bigram statistics"
    assert (freq[busy] - table[busy]).abs().max() < 0.08, "the text before the span should follow `transitions` (row = current token)"
    spans_flat = torch.cat(span_tokens)
    share = torch.bincount(spans_flat, minlength=d_vocab)[1:].float() / spans_flat.numel()
    assert (share - 1 / (d_vocab - 1)).abs().max() < 0.03, "span tokens should be uniform over 1 .. d_vocab - 1, not drawn from the chain"


@exercise("training_probe")
def test_training_probe_matches_reference_on_shipped_model(impl, ref, shipped, rep):
    got, want = impl.training_probe(shipped, rep), ref.training_probe(shipped, rep)
    assert isinstance(got, dict) and set(got) == set(want), f"keys {sorted(got) if isinstance(got, dict) else got}; expected {sorted(want)}"
    for key in want:
        value = _num(got[key], f"training_probe(...)[{key!r}]")
        assert abs(value - want[key]) < 1e-4, f"training_probe(...)[{key!r}] = {value:.4f}, expected {want[key]:.4f}"


@exercise("training_probe")
def test_training_probe_matches_reference_on_short_probe(impl, ref, shipped, rep_short):
    got, want = impl.training_probe(shipped, rep_short), ref.training_probe(shipped, rep_short)
    for key in want:
        value = _num(got[key], f"training_probe(...)[{key!r}]")
        assert abs(value - want[key]) < 1e-4, f"on BOS + R + R with n = 5: [{key!r}] = {value:.4f}, expected {want[key]:.4f}"


@exercise("training_probe")
def test_training_probe_takes_first_and_last_layers_best_heads(impl, ref, shipped, shipped_run, rep):
    got = impl.training_probe(shipped, rep)
    prev = ref.previous_token_score(shipped_run["patterns"][0]).max()
    ind = ref.induction_score(shipped_run["patterns"][1], N_REP).max()
    assert abs(_num(got["prev_token"], "prev_token") - prev) < 1e-4, "prev_token: the best previous-token score of the first layer"
    assert abs(_num(got["induction"], "induction") - ind) < 1e-4, "induction: the best induction score of the last layer"


@exercise("phase_change_step")
def test_phase_change_step_matches_reference_on_random_logs(impl, ref, seed):
    for threshold in (0.2, 0.5, 0.9):
        steps = list(range(0, 500, 25))
        scores = torch.rand(len(steps)).tolist()
        got = impl.phase_change_step(steps, scores, threshold)
        assert got == ref.phase_change_step(steps, scores, threshold), f"threshold {threshold}: got {got}"


@exercise("phase_change_step")
def test_phase_change_step_returns_a_step_not_an_index(impl):
    steps, scores = [0, 10, 20, 40, 80], [0.0, 0.1, 0.5, 0.2, 0.9]
    assert impl.phase_change_step(steps, scores, 0.4) == 20, "the first score >= 0.4 is at step 20 (list index 2)"
    assert impl.phase_change_step(steps, scores, 0.6) == 80, "the first score >= 0.6 is at step 80"


@exercise("phase_change_step")
def test_phase_change_step_threshold_edge_cases(impl):
    steps, scores = [5, 6, 7], [0.1, 0.4, 0.8]
    assert impl.phase_change_step(steps, scores, 0.4) == 6, "a score equal to the threshold counts"
    assert impl.phase_change_step(steps, scores, 0.95) == -1, "no score reaches the threshold: -1"
    assert impl.phase_change_step([], [], 0.4) == -1, "an empty log has no phase change: -1"
