"""Hidden checks of chapter 4: each compares the learner's function with the reference on fresh inputs, on the
shipped grokking run (final model, checkpoints, logged metrics), and checks a behaviour (orthonormality,
projections, invariances, edge cases)."""

import math

import torch

from tests.ch04_grokking.conftest import EARLY
from tests.harness import as_number, assert_close, exercise, tensor_of

MEASURES = ("train_loss", "test_loss", "test_acc", "restricted_loss", "excluded_loss", "sum_sq_weights")
HISTORY = ("train_loss", "test_loss", "train_acc", "test_acc")


# --------------------------------------------------------------------------------------------- helpers
_tensor, _num = tensor_of, as_number
_close = assert_close


def _ints(x, what):
    assert isinstance(x, (list, tuple)), f"{what} should return a list of ints; got {type(x).__name__}"
    return [int(v) for v in x]


def _orthonormal(n, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.T.contiguous()


def _projector(directions):
    d = _tensor(directions, "sum_frequency_directions").double()
    return d.T @ d


def _mean_free_directions(n_inputs, n_dirs, seed):
    """n_dirs orthonormal rows over n_inputs, orthogonal to the constant vector (like cos/sin of a frequency)."""
    gen = torch.Generator().manual_seed(seed)
    cols = torch.cat([torch.ones(n_inputs, 1, dtype=torch.float64),
                      torch.randn(n_inputs, n_dirs, generator=gen, dtype=torch.float64)], 1)
    q, _ = torch.linalg.qr(cols)
    return q[:, 1:].T.contiguous()


def _random_states(p, seeds):
    from micourse.grokking import FastModAddModel

    return [FastModAddModel(p, seed=s).state_dict_for_bridge() for s in seeds]


# ------------------------------------------------------------------------------------------- Part 1
@exercise("modular_addition_data")
def test_dataset_matches_reference_for_several_p(impl, ref):
    for p in (2, 5, 13):
        tokens, labels = impl.modular_addition_data(p)
        want_tokens, want_labels = ref.modular_addition_data(p)
        assert torch.equal(_tensor(tokens, "modular_addition_data (tokens)"), want_tokens), \
            f"tokens for p = {p} differ: row i should be [i // p, i % p, p]"
        assert torch.equal(_tensor(labels, "modular_addition_data (labels)"), want_labels), \
            f"labels for p = {p} differ: they should be (a + b) % p"


@exercise("modular_addition_data")
def test_dataset_for_p113_lists_every_pair_once_with_equals_last(impl):
    tokens, labels = impl.modular_addition_data(113)
    tokens, labels = _tensor(tokens, "tokens"), _tensor(labels, "labels")
    assert tokens.shape == (113 * 113, 3), f"tokens for p = 113 should be [12769, 3]; got {tuple(tokens.shape)}"
    assert (tokens[:, 2] == 113).all(), "the last token of every input should be '=' (token p = 113)"
    assert len({tuple(r) for r in tokens[:, :2].tolist()}) == 113 * 113, "every pair (a, b) should appear exactly once"
    i = torch.tensor([0, 114, 5000, 12768])
    assert tokens[i, 0].tolist() == (i // 113).tolist() and tokens[i, 1].tolist() == (i % 113).tolist(), \
        "row i should hold a = i // p and b = i % p"


@exercise("modular_addition_data")
def test_dataset_labels_are_integer_sums_mod_p(impl):
    tokens, labels = impl.modular_addition_data(17)
    tokens, labels = _tensor(tokens, "tokens"), _tensor(labels, "labels")
    assert not labels.is_floating_point() and not tokens.is_floating_point(), "tokens and labels should be integer tensors"
    assert labels.shape == (17 * 17,), f"labels should be [p * p]; got {tuple(labels.shape)}"
    assert torch.equal(labels, (tokens[:, 0] + tokens[:, 1]) % 17), "labels should be (a + b) % p for each row"
    assert int(labels.max()) == 16, "labels range over 0 .. p-1"


@exercise("split_indices")
def test_split_matches_reference_for_several_settings(impl, ref):
    for p, frac, seed in ((7, 0.5, 0), (11, 0.55, 3), (31, 0.3, 1)):
        train, test = impl.split_indices(p, frac, seed)
        want_train, want_test = ref.split_indices(p, frac, seed)
        assert torch.equal(_tensor(train, "train indices"), want_train), \
            f"training indices for p = {p}, frac_train = {frac}, seed = {seed} differ from the expected seeded permutation"
        assert torch.equal(_tensor(test, "test indices"), want_test), \
            f"test indices for p = {p}, frac_train = {frac}, seed = {seed} differ"


@exercise("split_indices")
def test_split_is_the_shipped_runs_split(impl, run_metrics):
    from scripts.grokking_training import train_test_split  # what made the shipped run

    config = run_metrics["config"]
    train, test = impl.split_indices(config["p"], config["frac_train"], config["split_seed"])
    want_train, want_test = train_test_split(config["p"], config["frac_train"], config["split_seed"])
    assert torch.equal(_tensor(train, "train indices"), want_train) and torch.equal(_tensor(test, "test indices"), want_test), \
        "the split for the shipped run's settings (p = 113, 30 %, seed 0) differs from the one it was trained on"


@exercise("split_indices")
def test_split_is_a_partition_with_rounded_down_size(impl):
    for p, frac in ((11, 0.55), (113, 0.3), (9, 0.99)):
        train, test = impl.split_indices(p, frac, 5)
        train, test = _tensor(train, "train indices"), _tensor(test, "test indices")
        n_train = int(frac * p * p)
        assert len(train) == n_train, f"p = {p}, frac_train = {frac}: {n_train} training examples (int rounds down); got {len(train)}"
        assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(p * p)), \
            "training and test indices together should cover every index exactly once"
    a, _ = impl.split_indices(13, 0.3, 7)
    b, _ = impl.split_indices(13, 0.3, 7)
    assert torch.equal(_tensor(a, "train"), _tensor(b, "train")), "the same seed must give the same split every time"


@exercise("cross_entropy_float64")
def test_cross_entropy_matches_reference_on_random_logits(impl, ref, seed):
    for dtype in (torch.float32, torch.float64):
        logits = (torch.randn(20, 11) * 5).to(dtype)
        labels = torch.randint(0, 11, (20,))
        got = impl.cross_entropy_float64(logits, labels)
        _close(got, ref.cross_entropy_float64(logits, labels), f"cross-entropy of random {dtype} logits", atol=1e-10, rtol=1e-8)


@exercise("cross_entropy_float64")
def test_cross_entropy_keeps_tiny_losses_of_confident_logits(impl, ref):
    logits = torch.zeros(3, 113)
    logits[torch.arange(3), torch.tensor([5, 50, 100])] = torch.tensor([25.0, 30.0, 34.0])
    labels = torch.tensor([5, 50, 100])
    got = _num(impl.cross_entropy_float64(logits, labels), "cross_entropy_float64")
    want = float(ref.cross_entropy_float64(logits, labels))
    assert got > 0, "the loss of confident right answers is tiny but not 0: compute the softmax in float64"
    assert abs(got - want) < 1e-2 * want, f"loss of confident logits: expected {want:.4g}, got {got:.4g}"
    out = impl.cross_entropy_float64(logits, labels)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.dim() == 0, \
        "cross_entropy_float64 should return a 0-dimensional float64 tensor"


@exercise("cross_entropy_float64")
def test_cross_entropy_gradient_matches_reference(impl, ref, seed):
    base = torch.randn(6, 9)
    labels = torch.randint(0, 9, (6,))
    grads = []
    for fn in (impl.cross_entropy_float64, ref.cross_entropy_float64):
        logits = base.clone().requires_grad_()
        fn(logits, labels).backward()
        assert logits.grad is not None, "gradients should flow back to the logits"
        grads.append(logits.grad)
    _close(grads[0], grads[1], "gradient of the loss with respect to the logits (is it a mean over the batch?)", atol=1e-7)


@exercise("train_model")
def test_training_history_matches_reference(impl, ref):
    kwargs = dict(lr=1e-2, weight_decay=1.0, seed=1, log_every=5)
    got, want = impl.train_model(7, 0.5, 25, **kwargs), ref.train_model(7, 0.5, 25, **kwargs)
    assert isinstance(got, dict), f"train_model should return a dict; got {type(got).__name__}"
    assert list(got.get("epoch", [])) == want["epoch"], f"logged epochs should be {want['epoch']}; got {got.get('epoch')}"
    for key in HISTORY:
        assert key in got, f"the history has no {key!r}"
        _close(torch.tensor(got[key], dtype=torch.float64), torch.tensor(want[key], dtype=torch.float64),
               f"{key} over 25 epochs on p = 7 (check the warm-up, the betas, and that each row is logged before the "
               f"epoch's update)", atol=1e-6, rtol=1e-4)


@exercise("train_model")
def test_training_returns_the_final_weights(impl, ref):
    got, want = impl.train_model(5, 0.6, 15, lr=3e-3, seed=2, log_every=4), ref.train_model(5, 0.6, 15, lr=3e-3, seed=2, log_every=4)
    assert "state_dict" in got, "the result should include the final 'state_dict'"
    assert list(got["epoch"]) == [0, 4, 8, 12, 15], f"15 epochs logged every 4 should log [0, 4, 8, 12, 15]; got {got['epoch']}"
    for name in ("W_E", "W_in", "W_U"):
        assert name in got["state_dict"], f"the state dict should be the FastModAddModel's (no {name!r})"
        _close(got["state_dict"][name], want["state_dict"][name], f"final {name} after 15 epochs", atol=1e-5, rtol=1e-3)


@exercise("train_model")
def test_training_stops_once_test_accuracy_is_reached(impl, ref):
    got = impl.train_model(5, 0.6, 30, lr=1e-2, seed=0, log_every=5, stop_at_test_acc=0.0)
    assert list(got["epoch"]) == [0], f"stop_at_test_acc=0.0 should stop right after logging epoch 0; got epochs {got['epoch']}"
    want = ref.train_model(11, 0.8, 200, lr=1e-2, seed=1, log_every=10, stop_at_test_acc=0.8)
    got = impl.train_model(11, 0.8, 200, lr=1e-2, seed=1, log_every=10, stop_at_test_acc=0.8)
    assert 0 < want["epoch"][-1] < 200, "(the reference run should stop in the middle of training)"
    assert list(got["epoch"]) == want["epoch"], \
        f"with stop_at_test_acc=0.8, training should stop right after logging the first test accuracy >= 0.8 (epoch " \
        f"{want['epoch'][-1]}); got epochs {got['epoch']}"


# ------------------------------------------------------------------------------------------- Part 2
@exercise("fourier_basis")
def test_fourier_basis_matches_reference(impl, ref):
    for p in (3, 7, 113):
        _close(impl.fourier_basis(p), ref.fourier_basis(p), f"fourier_basis({p})", atol=1e-5)


@exercise("fourier_basis")
def test_fourier_basis_is_orthonormal_float32(impl):
    for p in (5, 59):
        basis = _tensor(impl.fourier_basis(p), "fourier_basis")
        assert basis.dtype == torch.float32, f"fourier_basis should be float32; got {basis.dtype}"
        _close(basis.double() @ basis.double().T, torch.eye(p), f"basis @ basis.T for p = {p}", atol=1e-5)


@exercise("fourier_basis")
def test_fourier_basis_rows_are_const_then_cos_sin_pairs(impl):
    p = 11
    basis = _tensor(impl.fourier_basis(p), "fourier_basis").double()
    x = torch.arange(p, dtype=torch.float64)
    assert torch.allclose(basis[0], torch.full((p,), p ** -0.5, dtype=torch.float64), atol=1e-6), "row 0 should be the constant 1/sqrt(p)"
    for k in (1, 4):
        for row, f in ((2 * k - 1, torch.cos), (2 * k, torch.sin)):
            v = f(2 * math.pi * k * x / p)
            assert torch.allclose(basis[row], v / v.norm(), atol=1e-6), f"row {row} should be {f.__name__}(2 pi {k} x / p), normalised"


@exercise("embedding_in_fourier_basis")
def test_fourier_embedding_matches_reference_on_random_weights(impl, ref, seed):
    basis = _orthonormal(9, 1).float()
    W_E = torch.randn(10, 6)
    _close(impl.embedding_in_fourier_basis(W_E, basis), ref.embedding_in_fourier_basis(W_E, basis),
           "embedding in a basis of 9 vectors, random W_E [10, 6]", atol=1e-5)


@exercise("embedding_in_fourier_basis")
def test_fourier_embedding_of_shipped_model(impl, final_model, real):
    _close(impl.embedding_in_fourier_basis(final_model.W_E.detach(), real["basis"]), real["fourier_embedding"],
           "the shipped model's embedding in the Fourier basis", atol=1e-4)


@exercise("embedding_in_fourier_basis")
def test_fourier_embedding_ignores_equals_row(impl, seed):
    basis = _orthonormal(7, 2).float()
    W_E = torch.randn(8, 4)
    other = W_E.clone()
    other[7] = 100.0
    a = _tensor(impl.embedding_in_fourier_basis(W_E, basis), "embedding_in_fourier_basis")
    b = _tensor(impl.embedding_in_fourier_basis(other, basis), "embedding_in_fourier_basis")
    assert a.shape == (7, 4), f"result should be [p, d_model] = (7, 4); got {tuple(a.shape)}"
    assert torch.allclose(a, b), "the '=' token's row (the last row of W_E) must not affect the result"


@exercise("frequency_shares")
def test_frequency_shares_match_reference_on_random_input(impl, ref, seed):
    for p in (9, 31):
        x = torch.randn(p, 5) * torch.rand(p, 1) * 3
        _close(impl.frequency_shares(x), ref.frequency_shares(x), f"frequency shares of a random [{p}, 5] input", atol=1e-6)


@exercise("frequency_shares")
def test_frequency_shares_of_shipped_embedding(impl, real):
    _close(impl.frequency_shares(real["fourier_embedding"]), real["shares"], "frequency shares of the shipped embedding",
           atol=1e-5)


@exercise("frequency_shares")
def test_frequency_shares_count_constant_only_in_total(impl, seed):
    x = torch.randn(7, 3)
    shares = _tensor(impl.frequency_shares(x), "frequency_shares").double()
    sq = x.double().pow(2).sum(-1)
    assert shares.shape == (3,), f"(p - 1) / 2 = 3 shares for p = 7; got shape {tuple(shares.shape)}"
    assert abs(float(shares.sum()) - float(1 - sq[0] / sq.sum())) < 1e-5, \
        "the shares should sum to 1 minus the constant row's share (the constant counts in the total only)"
    scaled = _tensor(impl.frequency_shares(3 * x), "frequency_shares").double()
    assert torch.allclose(scaled, shares, atol=1e-6), "shares should not change when the embedding is scaled"


@exercise("key_frequencies")
def test_key_frequencies_match_reference_on_random_shares(impl, ref, seed):
    for threshold in (0.01, 0.05, 0.2):
        shares = torch.rand(56) ** 4
        shares = shares / shares.sum()
        got = _ints(impl.key_frequencies(shares, threshold), "key_frequencies")
        assert got == ref.key_frequencies(shares, threshold), \
            f"key frequencies with threshold {threshold} differ (1-based frequencies, increasing order)"


@exercise("key_frequencies")
def test_key_frequencies_of_shipped_model(impl, ref, real):
    got = _ints(impl.key_frequencies(real["shares"], ref.KEY_FREQ_THRESHOLD), "key_frequencies")
    assert got == real["key_freqs"], f"key frequencies of the shipped embedding should be {real['key_freqs']}; got {got}"


@exercise("key_frequencies")
def test_key_frequencies_are_one_based_increasing_and_inclusive(impl):
    shares = torch.tensor([0.0, 0.3, 0.0, 0.5, 0.25])
    got = _ints(impl.key_frequencies(shares, 0.25), "key_frequencies")
    assert got == [2, 4, 5], f"shares {shares.tolist()} with threshold 0.25 give [2, 4, 5] (1-based, increasing, >=); got {got}"
    assert _ints(impl.key_frequencies(shares, 0.9), "key_frequencies") == [], "no key frequency: an empty list"


@exercise("mlp_activations")
def test_mlp_activations_match_reference_on_shipped_model(impl, ref, final_model, real):
    idx = torch.randperm(113 * 113, generator=torch.Generator().manual_seed(3))[:64]
    tokens = real["tokens"][idx]
    _close(impl.mlp_activations(final_model, tokens), real["acts"].reshape(113 * 113, -1)[idx],
           "MLP activations at '=' of the shipped model on 64 pairs", atol=1e-4)


@exercise("mlp_activations")
def test_mlp_activations_match_reference_on_early_checkpoint(impl, ref, early_model, real):
    tokens = real["tokens"][torch.arange(0, 113 * 113, 401)]
    with torch.no_grad():
        want = ref.mlp_activations(early_model, tokens)
    _close(impl.mlp_activations(early_model, tokens), want, f"MLP activations of the epoch-{EARLY} checkpoint", atol=1e-4)


@exercise("mlp_activations")
def test_mlp_activations_are_post_relu_at_last_position(impl, final_model):
    p = 113
    tokens = torch.tensor([[1, 2, p], [2, 1, p], [60, 70, p]])
    got = _tensor(impl.mlp_activations(final_model, tokens), "mlp_activations")
    assert got.shape == (3, 512), f"mlp_activations should be [batch, d_mlp] = (3, 512); got {tuple(got.shape)}"
    assert (got >= 0).all(), "post-ReLU activations are never negative (use hook_post, not hook_pre)"
    with torch.no_grad():
        _, cache = final_model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    _close(got, cache["blocks.0.mlp.hook_post"][:, 2], "activations at the '=' position (position 2)", atol=1e-4)


@exercise("fourier_transform_2d")
def test_fourier_transform_matches_reference_on_random_grids(impl, ref, seed):
    basis = _orthonormal(9, 3).float()
    for shape in ((9, 9), (9, 9, 4), (9, 9, 2, 3)):
        grid = torch.randn(shape)
        _close(impl.fourier_transform_2d(grid, basis), ref.fourier_transform_2d(grid, basis),
               f"2D transform of a random grid of shape {shape}", atol=1e-5)


@exercise("fourier_transform_2d")
def test_fourier_transform_of_shipped_neurons(impl, real):
    neurons = torch.tensor([0, 7, 100, 511])
    _close(impl.fourier_transform_2d(real["acts"][:, :, neurons], real["basis"]), real["fourier_acts"][:, :, neurons],
           "2D Fourier transform of 4 of the shipped model's neurons", atol=1e-3, rtol=1e-4)


@exercise("fourier_transform_2d")
def test_fourier_transform_is_inverted_by_transposed_basis(impl, seed):
    basis = _orthonormal(7, 4).float()
    grid = torch.randn(7, 7)
    out = _tensor(impl.fourier_transform_2d(grid, basis), "fourier_transform_2d")
    _close(basis.T @ out @ basis, grid, "basis.T @ transform @ basis (should give back the grid)", atol=1e-5)
    single = _tensor(impl.fourier_transform_2d(torch.outer(basis[1], basis[5]), basis), "fourier_transform_2d")
    want = torch.zeros(7, 7)
    want[1, 5] = 1.0
    _close(single, want, "transform of basis[1](a) * basis[5](b) (row index: a's basis vector)", atol=1e-5)


@exercise("neuron_frequency_fractions")
def test_neuron_fractions_match_reference_on_random_coefficients(impl, ref, seed):
    for p in (7, 13):
        acts = torch.randn(p, p, 6) * torch.rand(p, 1, 1)
        _close(impl.neuron_frequency_fractions(acts), ref.neuron_frequency_fractions(acts),
               f"fractions of random 2D coefficients, p = {p}", atol=1e-6)


@exercise("neuron_frequency_fractions")
def test_neuron_fractions_of_shipped_neurons(impl, real):
    neurons = torch.arange(0, 512, 16)
    _close(impl.neuron_frequency_fractions(real["fourier_acts"][:, :, neurons]), real["fractions"][neurons],
           "fractions of 32 of the shipped model's neurons", atol=1e-4)


@exercise("neuron_frequency_fractions")
def test_neuron_fractions_ignore_mean_and_scale(impl, seed):
    acts = torch.randn(9, 9, 3)
    base = _tensor(impl.neuron_frequency_fractions(acts), "neuron_frequency_fractions").double()
    assert base.shape == (3, 4), f"[n_neurons, (p - 1) / 2] = (3, 4) for p = 9; got {tuple(base.shape)}"
    shifted = acts.clone()
    shifted[0, 0] += 50.0
    _close(impl.neuron_frequency_fractions(shifted), base, "fractions after changing the (const, const) coefficient "
           "(the mean must not count)", atol=1e-6)
    _close(impl.neuron_frequency_fractions(4 * acts), base, "fractions of a scaled neuron", atol=1e-6)
    assert (base >= -1e-9).all() and (base.sum(-1) <= 1 + 1e-6).all(), "fractions lie in [0, 1] and sum to at most 1"


@exercise("cluster_neurons")
def test_clusters_match_reference_on_random_fractions(impl, ref, seed):
    fractions = torch.rand(50, 8) ** 3
    fractions = fractions / fractions.sum(-1, keepdim=True)
    for threshold in (0.3, 0.6):
        got = _tensor(impl.cluster_neurons(fractions, threshold), "cluster_neurons")
        assert torch.equal(got.long(), ref.cluster_neurons(fractions, threshold)), \
            f"clusters with threshold {threshold} differ (best frequency counting from 1, or 0 below the threshold)"


@exercise("cluster_neurons")
def test_clusters_of_shipped_neurons(impl, ref, real):
    got = _tensor(impl.cluster_neurons(real["fractions"], ref.NEURON_THRESHOLD), "cluster_neurons")
    assert torch.equal(got.long(), real["clusters"]), "clusters of the shipped model's neurons differ"


@exercise("cluster_neurons")
def test_clusters_follow_the_threshold(impl):
    fractions = torch.tensor([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]])
    got = _tensor(impl.cluster_neurons(fractions, 0.0), "cluster_neurons")
    assert not got.is_floating_point(), "cluster_neurons should return an integer tensor"
    assert got.tolist() == [2, 1, 1], f"threshold 0: every neuron gets its best frequency [2, 1, 1]; got {got.tolist()}"
    assert _tensor(impl.cluster_neurons(fractions, 0.95), "cluster_neurons").tolist() == [0, 0, 0], \
        "no fraction reaches 0.95: every neuron is unclustered (0)"
    assert _tensor(impl.cluster_neurons(fractions, 0.7), "cluster_neurons").tolist() == [2, 1, 0], \
        "a fraction equal to the threshold counts (>=)"


@exercise("trig_logit_directions")
def test_trig_directions_match_reference(impl, ref):
    _close(impl.trig_logit_directions(7, [1, 2, 3]), ref.trig_logit_directions(7, [1, 2, 3]), "trig_logit_directions(7, [1, 2, 3])",
           atol=1e-5)
    _close(impl.trig_logit_directions(13, [5]), ref.trig_logit_directions(13, [5]), "trig_logit_directions(13, [5])", atol=1e-5)


@exercise("trig_logit_directions")
def test_trig_directions_for_shipped_key_frequencies(impl, ref, real):
    freqs = real["key_freqs"][:2]
    _close(impl.trig_logit_directions(113, freqs), ref.trig_logit_directions(113, freqs),
           f"trig_logit_directions(113, {freqs})", atol=1e-4)


@exercise("trig_logit_directions")
def test_trig_directions_peak_at_the_right_answer(impl):
    p = 11
    d = _tensor(impl.trig_logit_directions(p, [3]), "trig_logit_directions")
    assert d.shape == (1, p, p, p), f"shape should be [1, p, p, p]; got {tuple(d.shape)}"
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    assert torch.allclose(d[0, a, b, (a + b) % p], torch.ones(p, p), atol=1e-5), "the direction is 1 at c = (a + b) mod p"
    assert (d[0].argmax(-1) == (a + b) % p).all(), "for each (a, b) the direction is largest at c = (a + b) mod p"


@exercise("fit_logits")
def test_fit_matches_reference_on_random_logits(impl, ref, seed):
    directions = ref.trig_logit_directions(7, [1, 3])
    logits = torch.randn(7, 7, 7) + 3 * directions[0]
    coef, explained = impl.fit_logits(logits, directions)
    want_coef, want_explained = ref.fit_logits(logits, directions)
    _close(torch.as_tensor(coef).flatten(), want_coef, "coefficients of a noisy logit table", atol=1e-6)
    assert abs(_num(explained, "explained fraction") - want_explained) < 1e-6, \
        f"explained fraction: expected {want_explained:.6f}, got {_num(explained, 'explained'):.6f}"


@exercise("fit_logits")
def test_fit_of_shipped_logits(impl, ref, real):
    p = real["p"]
    directions = ref.trig_logit_directions(p, real["key_freqs"])
    logits = real["logits"].reshape(p, p, p)
    coef, explained = impl.fit_logits(logits, directions)
    want_coef, want_explained = ref.fit_logits(logits, directions)
    _close(torch.as_tensor(coef).flatten(), want_coef, "coefficients of the shipped model's logits", atol=1e-3, rtol=1e-4)
    assert abs(_num(explained, "explained fraction") - want_explained) < 1e-4, \
        f"explained fraction of the shipped model's logits: expected {want_explained:.4f}, got {_num(explained, 'explained'):.4f}"


@exercise("fit_logits")
def test_fit_ignores_per_input_constants(impl, ref, seed):
    directions = ref.trig_logit_directions(5, [1, 2])
    logits = torch.randn(5, 5, 5)
    coef, explained = impl.fit_logits(logits, directions)
    coef2, explained2 = impl.fit_logits(logits + 10 * torch.randn(5, 5, 1), directions)
    _close(torch.as_tensor(coef2).flatten(), torch.as_tensor(coef).flatten(),
           "coefficients after adding a constant per (a, b) (centre the logits over c)", atol=1e-6)
    assert abs(_num(explained2, "explained") - _num(explained, "explained")) < 1e-6, \
        "the explained fraction must not change when a constant is added to each (a, b)'s logits"
    exact = 1.5 * directions[0] - 0.5 * directions[1]
    _, full = impl.fit_logits(exact, directions)
    assert abs(_num(full, "explained") - 1) < 1e-6, "an exact combination of the directions is fully explained (1)"


@exercise("sum_frequency_directions")
def test_sum_directions_span_matches_reference(impl, ref):
    for p, freqs in ((11, [2, 5]), (13, [1, 2, 6])):
        got = impl.sum_frequency_directions(p, freqs)
        _close(_projector(got), _projector(ref.sum_frequency_directions(p, freqs)),
               f"the span of sum_frequency_directions({p}, {freqs}) (projection onto it)", atol=1e-8)


@exercise("sum_frequency_directions")
def test_sum_directions_for_shipped_key_frequencies(impl, ref, real):
    got = _tensor(impl.sum_frequency_directions(real["p"], real["key_freqs"]), "sum_frequency_directions").double()
    want = real["directions"]
    assert got.shape == want.shape, f"shape should be [2 * n_freqs, p * p] = {tuple(want.shape)}; got {tuple(got.shape)}"
    overlap = got @ want.T  # orthonormal rows spanning the same space: an orthogonal matrix
    _close(overlap @ overlap.T, torch.eye(len(want)), "directions for the shipped key frequencies (same span, orthonormal)",
           atol=1e-6)


@exercise("sum_frequency_directions")
def test_sum_directions_are_orthonormal_float64_functions_of_a_plus_b(impl):
    p = 7
    d = _tensor(impl.sum_frequency_directions(p, [1, 3]), "sum_frequency_directions")
    assert d.dtype == torch.float64, f"directions should be float64; got {d.dtype}"
    assert d.shape == (4, p * p), f"shape should be [4, 49]; got {tuple(d.shape)}"
    _close(d @ d.T, torch.eye(4), "directions @ directions.T", atol=1e-8)
    s = torch.arange(p).repeat_interleave(p) + torch.arange(p).repeat(p)
    for value in range(p):
        cols = d[:, s % p == value]
        assert torch.allclose(cols, cols[:, :1].expand_as(cols), atol=1e-8), \
            "each direction should depend only on (a + b) mod p, with pair i = a * p + b"
    v = torch.cos(2 * math.pi * s.double() / p)
    assert torch.allclose(d[0], v / v.norm(), atol=1e-8), "row 0 should be cos(w_1 (a + b)), normalised"


@exercise("restricted_logits")
def test_restricted_logits_match_reference_on_random_input(impl, ref, seed):
    directions = _mean_free_directions(30, 4, 1)
    logits = torch.randn(30, 6)
    _close(impl.restricted_logits(logits, directions), ref.restricted_logits(logits, directions),
           "restricted logits of random logits [30, 6] with 4 directions", atol=1e-8)


@exercise("restricted_logits")
def test_restricted_logits_of_shipped_model(impl, ref, real):
    got = impl.restricted_logits(real["logits"], real["directions"])
    _close(got, ref.restricted_logits(real["logits"], real["directions"]), "restricted logits of the shipped model",
           atol=1e-6, rtol=1e-6)


@exercise("restricted_logits")
def test_restricted_logits_are_a_float64_projection_plus_mean(impl, seed):
    directions = _mean_free_directions(20, 3, 2)
    logits = torch.randn(20, 5)
    once = _tensor(impl.restricted_logits(logits, directions), "restricted_logits")
    assert once.dtype == torch.float64, f"restricted logits should be float64; got {once.dtype}"
    _close(impl.restricted_logits(once, directions), once, "restricting twice (should change nothing)", atol=1e-10)
    _close(once.mean(0), logits.double().mean(0), "the mean over inputs (kept by restricting)", atol=1e-10)
    rest = once - once.mean(0, keepdim=True)
    _close(directions.T @ (directions @ rest), rest, "restricted logits minus their mean lie in the directions' span", atol=1e-10)


@exercise("excluded_logits")
def test_excluded_logits_match_reference_on_random_input(impl, ref, seed):
    directions = _mean_free_directions(30, 4, 3)
    logits = torch.randn(30, 6)
    _close(impl.excluded_logits(logits, directions), ref.excluded_logits(logits, directions),
           "excluded logits of random logits [30, 6] with 4 directions", atol=1e-8)


@exercise("excluded_logits")
def test_excluded_logits_of_shipped_model(impl, ref, real):
    idx = real["train_idx"]
    got = _tensor(impl.excluded_logits(real["logits"], real["directions"]), "excluded_logits")[idx]
    _close(got, ref.excluded_logits(real["logits"], real["directions"])[idx],
           "excluded logits of the shipped model (training pairs)", atol=1e-6, rtol=1e-6)


@exercise("excluded_logits")
def test_excluded_and_restricted_add_up_to_logits_plus_mean(impl, ref, seed):
    directions = _mean_free_directions(24, 2, 4)
    logits = torch.randn(24, 4, dtype=torch.float64)
    excluded = _tensor(impl.excluded_logits(logits, directions), "excluded_logits")
    assert excluded.dtype == torch.float64, f"excluded logits should be float64; got {excluded.dtype}"
    _close(excluded + ref.restricted_logits(logits, directions), logits + logits.mean(0, keepdim=True),
           "excluded + restricted logits (should be the logits plus their mean over inputs)", atol=1e-10)
    _close(directions @ excluded, torch.zeros(2, 4), "excluded logits have no component along the directions", atol=1e-10)


@exercise("sum_squared_weights")
def test_sum_squared_weights_matches_reference_on_random_dicts(impl, ref, seed):
    state = {"a": torch.randn(5, 4), "b": torch.randn(3), "c": torch.randn(2, 2, 2, dtype=torch.float64)}
    got = _num(impl.sum_squared_weights(state), "sum_squared_weights")
    want = ref.sum_squared_weights(state)
    assert abs(got - want) < 1e-6 * max(1.0, want), f"sum of squares of a random state dict: expected {want:.9g}, got {got:.9g}"


@exercise("sum_squared_weights")
def test_sum_squared_weights_of_shipped_checkpoints(impl, ref, checkpoints):
    for epoch in (0, 7000):
        got = _num(impl.sum_squared_weights(checkpoints[epoch]), "sum_squared_weights")
        want = ref.sum_squared_weights(checkpoints[epoch])
        assert abs(got - want) < 1e-6 * want, f"sum of squared weights at epoch {epoch}: expected {want:.6g}, got {got:.6g}"


@exercise("sum_squared_weights")
def test_sum_squared_weights_skips_integers_and_avoids_float16_overflow(impl):
    state = {"w": torch.tensor([300.0, 400.0], dtype=torch.float16), "steps": torch.tensor([1000])}
    got = _num(impl.sum_squared_weights(state), "sum_squared_weights")
    assert math.isfinite(got), "squares of float16 weights overflow in float16 (300² > 65504): square them in float64"
    assert abs(got - 250000.0) < 1e-6, f"{{w: [300, 400] (float16), steps: [1000] (int)}} gives 250000; got {got}"
    assert isinstance(impl.sum_squared_weights({"w": torch.ones(2)}), float), "return a Python float"


@exercise("progress_measures")
def test_progress_measures_match_reference_on_random_small_models(impl, ref):
    states = _random_states(13, (0, 1, 2))
    got = impl.progress_measures(states, 13, 0.4, 3, [1, 4])
    want = ref.progress_measures(states, 13, 0.4, 3, [1, 4])
    assert isinstance(got, dict), f"progress_measures should return a dict; got {type(got).__name__}"
    for key in MEASURES:
        assert key in got, f"the result has no {key!r}"
        _close(torch.tensor(got[key], dtype=torch.float64), torch.tensor(want[key], dtype=torch.float64),
               f"{key} of 3 random p = 13 models (restricted loss on all pairs, excluded loss on training pairs)",
               atol=1e-6, rtol=1e-5)


@exercise("progress_measures")
def test_progress_measures_of_shipped_checkpoints(impl, ref, checkpoints, real, all_measures):
    epochs, measures = all_measures
    picked = [EARLY, 7000]
    config = real["config"]
    got = impl.progress_measures([checkpoints[e] for e in picked], real["p"], config["frac_train"], config["split_seed"],
                                 real["key_freqs"])
    for key in MEASURES:
        want = torch.tensor([measures[key][epochs.index(e)] for e in picked], dtype=torch.float64)
        _close(torch.tensor(got[key], dtype=torch.float64), want, f"{key} at the shipped checkpoints {picked}",
               atol=1e-7, rtol=2e-3)


@exercise("progress_measures")
def test_progress_measures_keep_checkpoint_order(impl, ref):
    states = _random_states(11, (3, 4))
    forward = impl.progress_measures(states, 11, 0.5, 0, [2])
    backward = impl.progress_measures(states[::-1], 11, 0.5, 0, [2])
    for key in MEASURES:
        assert len(forward[key]) == 2, f"{key}: one value per state dict"
        _close(torch.tensor(backward[key], dtype=torch.float64), torch.tensor(forward[key][::-1], dtype=torch.float64),
               f"{key} for the same states in reverse order", atol=1e-9)
    assert all(isinstance(v, float) for v in forward["train_loss"]), "measures should be Python floats"


@exercise("phase_boundaries")
def test_phase_boundaries_match_reference_on_made_up_curves(impl, ref, seed):
    for trial in range(5):
        n = 30
        epochs = sorted(torch.randperm(1000)[:n].tolist())
        bump = torch.exp(-((torch.arange(n) - 8.0 - trial) ** 2) / 10)
        test_loss = (0.3 + 8 * bump + 0.1 * torch.rand(n)).tolist()
        test_loss = [t if i < 18 + trial else t * 0.01 for i, t in enumerate(test_loss)]
        ssw = (100 * torch.exp(-torch.arange(n) / (5.0 + trial)) + 10 + torch.rand(n)).tolist()
        got = impl.phase_boundaries(epochs, test_loss, ssw, 7, 0.1)
        want = ref.phase_boundaries(epochs, test_loss, ssw, 7, 0.1)
        assert tuple(int(x) for x in got) == tuple(want), f"boundaries of made-up curves: expected {want}, got {tuple(got)}"


@exercise("phase_boundaries")
def test_phase_boundaries_of_shipped_training_log(impl, ref, run_metrics):
    log = run_metrics["log"]
    args = ([r["epoch"] for r in log], [r["test_loss"] for r in log], [r["sum_sq_weights"] for r in log], run_metrics["config"]["p"])
    got, want = impl.phase_boundaries(*args), ref.phase_boundaries(*args)
    assert tuple(int(x) for x in got) == tuple(want), f"boundaries from the shipped run's training log: expected {want}, got {tuple(got)}"


@exercise("phase_boundaries")
def test_phase_boundaries_handle_early_dips_and_missing_crossings(impl):
    epochs = [0, 10, 20, 30, 40, 50]
    got = impl.phase_boundaries(epochs, [0.5, 3.0, 9.0, 4.0, 1.0, 0.2], [5.0, 9.0, 8.0, 6.0, 5.5, 5.0], 5, 0.05)
    assert tuple(int(x) for x in got) == (20, 40, 50), \
        f"test loss peaks at 20, is below ln 5 after the peak first at 40 (the dip at epoch 0, before the peak, does not " \
        f"count), weights within 5 % of the final from epoch 50: expected (20, 40, 50), got {tuple(got)}"
    got = impl.phase_boundaries(epochs, [1.0, 3.0, 9.0, 8.0, 7.0, 6.0], [5.0, 9.0, 8.0, 6.0, 5.5, 5.0], 5, 0.05)
    assert tuple(int(x) for x in got) == (20, 50, 50), \
        f"when the test loss never falls below ln p after its peak, use the last epoch: expected (20, 50, 50), got {tuple(got)}"
    got = impl.phase_boundaries(epochs, [1.0, 3.0, 9.0, 1.0, 1.0, 1.0], [5.0, 20.0, 8.0, 6.0, 5.2, 5.0], 5, 0.05)
    assert tuple(int(x) for x in got) == (20, 30, 40), \
        f"clean-up ends at the first epoch from the end of circuit formation on with weights within 5 % of the final: " \
        f"expected (20, 30, 40), got {tuple(got)}"
