"""Hidden checks of chapter 5 (superposition). Each exercise: reference comparison on fresh random inputs,
a check on the chapter's own trained models, and behaviour (shapes, invariances, hand-worked cases)."""

import math

import torch

from tests.harness import changed_in_place, exercise


def _polygon(k: int, radius: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    angles = offset + 2 * math.pi * torch.arange(k) / k
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)])


def _close(a, b, atol=1e-5, rtol=1e-4) -> bool:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol)


def _shape_msg(name, got, want) -> str:
    return f"{name} returned shape {tuple(torch.as_tensor(got).shape)}; expected {tuple(want)}"


def _signed(x: torch.Tensor) -> torch.Tensor:
    return x * (2 * torch.randint(0, 2, x.shape) - 1)


# ---------------------------------------------------------------------------------------------- generate_batch

@exercise("generate_batch")
def test_generate_batch_fraction_nonzero_matches_each_probability(impl, seed):
    p = torch.tensor([[0.9, 0.5, 0.1, 0.02], [0.3, 0.3, 0.7, 1.0]])
    x = impl.generate_batch(20_000, p)
    assert x.shape == (20_000, 2, 4), _shape_msg("generate_batch(20000, p of shape [2, 4])", x, (20_000, 2, 4))
    frac = (x != 0).float().mean(0)
    assert torch.allclose(frac, p, atol=0.015), (
        f"fraction of nonzero entries per (instance, feature) is {frac.tolist()}; expected the feature probabilities "
        f"{p.tolist()} (an entry is nonzero with probability p, zero with probability 1 - p)")


@exercise("generate_batch")
def test_generate_batch_present_values_are_uniform_on_unit_interval(impl, seed):
    x = impl.generate_batch(20_000, torch.full((1, 3), 0.5))
    values = x[x != 0]
    assert float(values.min()) >= 0 and float(values.max()) <= 1, "present features must lie in [0, 1]"
    quartiles = torch.quantile(values[:10_000], torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(quartiles, torch.tensor([0.25, 0.5, 0.75]), atol=0.03), (
        f"present values should be uniform on [0, 1] (quartiles 0.25, 0.5, 0.75); got {quartiles.tolist()}")


@exercise("generate_batch")
def test_generate_batch_features_are_independent(impl, seed):
    x = impl.generate_batch(20_000, torch.full((1, 2), 0.5))
    both = float(((x[:, 0, 0] != 0) & (x[:, 0, 1] != 0)).float().mean())
    assert abs(both - 0.25) < 0.02, (
        f"with probability 0.5 each, two features should both be present in ~25% of samples; got {both:.3f} "
        "(draw presence independently for every feature)")
    same = float((x[:, 0, 0] == x[:, 0, 1])[x[:, 0, 0] != 0].float().mean())
    assert same < 0.01, "two present features of one sample should have independent values"


@exercise("generate_batch")
def test_generate_batch_extreme_probabilities(impl, seed):
    x = impl.generate_batch(500, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert bool((x[:, 0, 0] != 0).all()) and bool((x[:, 1, 1] != 0).all()), "probability 1 must give no zeros"
    assert bool((x[:, 0, 1] == 0).all()) and bool((x[:, 1, 0] == 0).all()), "probability 0 must give only zeros"


# ------------------------------------------------------------------------------------------------- toy_forward

@exercise("toy_forward")
def test_toy_forward_matches_reference_on_random_inputs(impl, ref, seed):
    W, b, x = torch.randn(3, 2, 5), torch.randn(3, 5), torch.rand(7, 3, 5)
    got, want = impl.toy_forward(W, b, x), ref.toy_forward(W, b, x)
    assert got.shape == want.shape, _shape_msg("toy_forward", got, want.shape)
    assert _close(got, want), "toy_forward differs from ReLU(Wᵀ W x + b_final) on random W, b_final, x"


@exercise("toy_forward")
def test_toy_forward_on_the_chapters_trained_model(impl, ref, toy_run, seed):
    W, b = toy_run
    x = torch.rand(64, W.shape[0], W.shape[2]) * (torch.rand(64, W.shape[0], W.shape[2]) < 0.3)
    assert _close(impl.toy_forward(W, b, x), ref.toy_forward(W, b, x)), (
        "toy_forward differs from the reference on the chapter's trained 5-feature model")


@exercise("toy_forward")
def test_toy_forward_keeps_instances_separate(impl, seed):
    W, b, x = torch.randn(3, 2, 4), torch.randn(3, 4), torch.rand(5, 3, 4)
    out = impl.toy_forward(W, b, x)
    W2, b2 = W.clone(), b.clone()
    W2[1] += 1.0
    b2[1] -= 1.0
    out2 = impl.toy_forward(W2, b2, x)
    assert torch.allclose(out[:, [0, 2]], out2[:, [0, 2]]), (
        "changing instance 1's W and b_final changed the output of other instances: each instance must use only its own parameters")


@exercise("toy_forward")
def test_toy_forward_applies_relu_after_the_bias(impl, seed):
    W = torch.zeros(1, 2, 3)
    b = torch.tensor([[-1.0, 0.5, 0.0]])
    out = impl.toy_forward(W, b, torch.rand(4, 1, 3))
    assert torch.allclose(out, torch.tensor([0.0, 0.5, 0.0]).expand(4, 1, 3)), (
        "with W = 0 the output should be ReLU(b_final) = (0, 0.5, 0): add the bias, then apply the ReLU")
    W = torch.tensor([[[1.0, -1.0]]])
    out = impl.toy_forward(W, torch.zeros(1, 2), torch.tensor([[[1.0, 0.0]]]))
    assert torch.allclose(out, torch.tensor([[[1.0, 0.0]]])), (
        "an antipodal pair with only feature 0 present should output (1, 0): the ReLU removes the negative readout")


# ------------------------------------------------------------------------------------ importance_weighted_loss

@exercise("importance_weighted_loss")
def test_importance_weighted_loss_matches_reference_on_random_inputs(impl, ref, seed):
    out, x, imp = torch.rand(9, 4, 6), torch.rand(9, 4, 6), torch.rand(4, 6)
    got, want = impl.importance_weighted_loss(out, x, imp), ref.importance_weighted_loss(out, x, imp)
    assert torch.as_tensor(got).shape == (4,), _shape_msg("importance_weighted_loss", got, (4,))
    assert _close(got, want), "loss differs from mean over the batch of sum_i I_i (x_i - x'_i)^2 on random inputs"


@exercise("importance_weighted_loss")
def test_importance_weighted_loss_on_the_chapters_trained_model(impl, ref, toy_run, solutions, seed):
    W, b = toy_run
    importance = (0.9 ** torch.arange(W.shape[2]))[None, :].expand(W.shape[0], W.shape[2])
    x = solutions.generate_batch(1000, torch.full((W.shape[0], W.shape[2]), 0.1))
    out = ref.toy_forward(W, b, x)
    assert _close(impl.importance_weighted_loss(out, x, importance), ref.importance_weighted_loss(out, x, importance)), (
        "loss differs from the reference on the chapter's trained model")


@exercise("importance_weighted_loss")
def test_importance_weighted_loss_is_linear_in_importance_and_per_instance(impl, seed):
    out, x = torch.rand(5, 2, 3), torch.rand(5, 2, 3)
    imp = torch.rand(2, 3)
    base = impl.importance_weighted_loss(out, x, imp)
    assert _close(impl.importance_weighted_loss(out, x, 3 * imp), 3 * base), "tripling every importance should triple the loss"
    assert _close(impl.importance_weighted_loss(out, x, torch.zeros(2, 3)), torch.zeros(2)), "zero importance gives zero loss"
    x2 = x.clone()
    x2[:, 1] += 1
    assert _close(impl.importance_weighted_loss(out, x2, imp)[0], base[0]), "instance 0's loss must not depend on instance 1"


@exercise("importance_weighted_loss")
def test_importance_weighted_loss_sums_features_and_averages_batch(impl, seed):
    out = torch.zeros(4, 1, 3)
    x = torch.tensor([2.0, 0.0, 0.0, 0.0])[:, None, None].expand(4, 1, 3)
    got = impl.importance_weighted_loss(out, x, torch.tensor([[1.0, 0.5, 0.25]]))
    assert _close(got, torch.tensor([1.75])), (
        f"one of 4 samples has squared error 4 on each of 3 features with importances (1, 0.5, 0.25): the loss "
        f"is (4 + 2 + 1) / 4 = 1.75; got {torch.as_tensor(got).tolist()}")


# -------------------------------------------------------------------------------------------- train_toy_model

def _eval_loss(solutions, W, b, importance, probability, n=20_000):
    torch.manual_seed(123)
    x = solutions.generate_batch(n, probability)
    return solutions.importance_weighted_loss(solutions.toy_forward(W, b, x), x, importance)


@exercise("train_toy_model")
def test_train_toy_model_dense_keeps_two_orthogonal_and_sparse_keeps_five(impl, seed):
    importance = torch.stack([0.7 ** torch.arange(5), 0.9 ** torch.arange(5)])  # one importance per instance
    probability = torch.tensor([1.0, 0.05])[:, None].expand(2, 5)
    W, b = impl.train_toy_model(importance, probability, 2, steps=1000, batch_size=512, lr=1e-2, seed=0)
    assert W.shape == (2, 2, 5) and b.shape == (2, 5), (
        f"expected W (inst, d_hidden, feats) = (2, 2, 5) and b_final (2, 5); got {tuple(W.shape)}, {tuple(b.shape)}")
    norms = W.norm(dim=1)
    assert (norms[0] > 0.5).sum() == 2, (
        f"5 dense features in 2 dimensions: the trained model should keep exactly 2 features; norms {norms[0].tolist()}")
    kept = W[0][:, norms[0] > 0.5]
    cos = float(kept[:, 0] @ kept[:, 1] / kept.norm(dim=0).prod())
    assert abs(cos) < 0.2, f"the 2 dense features kept should be orthogonal; cosine {cos:.2f}"
    assert (norms[1] > 0.5).sum() == 5, (
        f"with feature probability 0.05 the trained model should represent all 5 features; norms {norms[1].tolist()}")


@exercise("train_toy_model")
def test_train_toy_model_reaches_the_reference_loss(impl, ref_dense_model, solutions, seed):
    importance = torch.tensor([[1.0, 0.8, 0.5], [1.0, 1.0, 0.0]])
    probability = torch.ones(2, 3)
    W, b = impl.train_toy_model(importance, probability, 2, steps=800, batch_size=256, lr=1e-2, seed=1)
    W_ref, b_ref = ref_dense_model
    got = _eval_loss(solutions, W, b, importance, probability)
    want = _eval_loss(solutions, W_ref, b_ref, importance, probability)
    assert bool((got <= want * 1.1 + 2e-3).all()), (
        f"after 800 steps on dense features the trained loss per instance is {got.tolist()}; the reference reaches "
        f"{want.tolist()}. Check the loss (summed over instances), zero_grad before backward, and the data")


@exercise("train_toy_model")
def test_train_toy_model_is_seeded_and_detached(impl, seed):
    importance, probability = torch.ones(2, 4), torch.full((2, 4), 0.5)
    W1, b1 = impl.train_toy_model(importance, probability, 3, steps=20, batch_size=64, lr=1e-2, seed=3)
    W2, b2 = impl.train_toy_model(importance, probability, 3, steps=20, batch_size=64, lr=1e-2, seed=3)
    assert W1.shape == (2, 3, 4) and b1.shape == (2, 4), "W should be (inst, d_hidden, feats), b_final (inst, feats)"
    assert torch.equal(W1, W2) and torch.equal(b1, b2), "the same seed must give the same model (call torch.manual_seed(seed) first)"
    assert not W1.requires_grad and not b1.requires_grad, "return detached tensors"
    W3, _ = impl.train_toy_model(importance, probability, 3, steps=20, batch_size=64, lr=1e-2, seed=4)
    assert not torch.equal(W1, W3), "different seeds should give different models"


def _changed_fraction(after, before) -> float:
    return float(((torch.as_tensor(after) - torch.as_tensor(before)).abs() > 1e-7).float().mean())


def _init_std_message(name, got, want, shape) -> str:
    return (f"with lr = 0 training changes nothing, so {name} is the initialisation: its entries have standard "
            f"deviation {got:.4f} for {shape}; the spec's randn * sqrt(2 / (d_hidden + feats)) gives {want:.4f}")


@exercise("train_toy_model")
def test_train_toy_model_initialisation_scale_and_every_parameter_trained(impl, seed):
    # lr = 0: Adam's step is lr * (...) = 0, so what comes back is the initialisation
    for n_inst, d_hidden, n_feats in ((64, 8, 24), (64, 2, 40)):
        importance, probability = torch.ones(n_inst, n_feats), torch.full((n_inst, n_feats), 0.5)
        W0, b0 = impl.train_toy_model(importance, probability, d_hidden, steps=1, batch_size=16, lr=0.0, seed=seed)
        want = (2 / (d_hidden + n_feats)) ** 0.5
        got = float(W0.std())
        assert abs(got / want - 1) < 0.05, _init_std_message("W", got, want, f"d_hidden = {d_hidden}, feats = {n_feats}")
        assert abs(float(W0.mean())) < 0.05 * want, "the initial W should have mean 0 (torch.randn)"
        assert bool((b0 == 0).all()), "b_final should start at zeros"
    importance, probability = torch.ones(4, 6), torch.full((4, 6), 0.5)
    W0, b0 = impl.train_toy_model(importance, probability, 2, steps=30, batch_size=64, lr=0.0, seed=seed)
    W1, b1 = impl.train_toy_model(importance, probability, 2, steps=30, batch_size=64, lr=1e-2, seed=seed)
    for name, after, before in (("W", W1, W0), ("b_final", b1, b0)):
        frac = _changed_fraction(after, before)
        assert frac > 0.9, (
            f"after 30 steps only {frac:.0%} of the entries of {name} moved from their initial values: every parameter "
            f"must be trained (requires_grad on both W and b_final, and both passed to Adam)")


@exercise("train_toy_model")
def test_train_toy_model_samples_the_requested_correlation(impl, ref_independent_pairs_model, solutions, seed):
    # a model trained on correlated (anticorrelated) pairs must beat one trained on independent features on that data
    importance, probability = torch.ones(8, 4), torch.full((8, 4), 0.3)
    settings = dict(steps=300, batch_size=256, lr=1e-2, seed=0)
    W_none, b_none = ref_independent_pairs_model
    for correlation in ("correlated", "anticorrelated"):
        W, b = impl.train_toy_model(importance, probability, 2, correlation=correlation, **settings)
        torch.manual_seed(99)
        x = solutions.sample_features(20_000, probability, correlation)
        own = float(solutions.importance_weighted_loss(solutions.toy_forward(W, b, x), x, importance).sum())
        other = float(solutions.importance_weighted_loss(solutions.toy_forward(W_none, b_none, x), x, importance).sum())
        assert own < 0.9 * other, (
            f"trained with correlation={correlation!r}, the model's loss on {correlation} data is {own:.3f}, no better "
            f"than a model trained on independent features ({other:.3f}): draw each batch with "
            f"sample_features(batch_size, feature_probability, correlation)")


# -------------------------------------------------------------------------------- superposition_per_feature

@exercise("superposition_per_feature")
def test_superposition_per_feature_matches_reference_on_random_W(impl, ref, seed):
    W = torch.randn(4, 3, 7)
    got, want = impl.superposition_per_feature(W), ref.superposition_per_feature(W)
    assert got.shape == (4, 7), _shape_msg("superposition_per_feature", got, (4, 7))
    assert _close(got, want), "superposition differs from sum_{j != i} (W_hat_i . W_j)^2 on random W"


@exercise("superposition_per_feature")
def test_superposition_per_feature_on_the_chapters_trained_model(impl, ref, toy_run, seed):
    W = toy_run[0]
    assert _close(impl.superposition_per_feature(W), ref.superposition_per_feature(W), atol=1e-4), (
        "superposition differs from the reference on the chapter's trained 5-feature model")


@exercise("superposition_per_feature")
def test_superposition_per_feature_hand_cases(impl, seed):
    W = torch.tensor([[[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]])
    got = impl.superposition_per_feature(W)
    assert not torch.isnan(got).any(), "a zero column (feature 3) must give 0, not NaN"
    assert _close(got, torch.tensor([[4.0, 1.0, 0.0, 0.0]])), (
        f"for W_0 = (1, 0), W_1 = (2, 0), W_2 = (0, 3), W_3 = 0 expected (4, 1, 0, 0) (normalise W_i, not W_j; "
        f"exclude j = i); got {got.tolist()}")


@exercise("superposition_per_feature")
def test_superposition_per_feature_is_zero_for_orthogonal_features(impl, seed):
    Q, _ = torch.linalg.qr(torch.randn(6, 6))
    W = (Q[:, :4] * torch.tensor([0.5, 1.0, 2.0, 3.0]))[None]
    assert _close(impl.superposition_per_feature(W), torch.zeros(1, 4), atol=1e-5), (
        "orthogonal features of any length have no superposition")


# ------------------------------------------------------------------------------------------ consecutive_angles

@exercise("consecutive_angles")
def test_consecutive_angles_of_rotated_shuffled_polygons(impl, seed):
    for k in (2, 3, 5, 7):
        W = _polygon(k, radius=1.2, offset=float(torch.rand(()) * 6.28))[:, torch.randperm(k)]
        got = impl.consecutive_angles(W)
        assert _close(got, torch.full((k,), 360.0 / k), atol=1e-3), (
            f"a regular {k}-gon should give {k} gaps of {360 / k:.1f} degrees; got {torch.as_tensor(got).tolist()}")


@exercise("consecutive_angles")
def test_consecutive_angles_matches_reference_on_random_W(impl, ref, seed):
    for _ in range(5):
        W = torch.randn(2, 6)
        got, want = impl.consecutive_angles(W, 0.7), ref.consecutive_angles(W, 0.7)
        assert _close(got, want, atol=1e-3), (
            f"gaps differ from the reference on random W with threshold 0.7: got {torch.as_tensor(got).tolist()}, "
            f"expected {want.tolist()} (degrees, sorted by angle, starting after the smallest angle, wrapping round)")


@exercise("consecutive_angles")
def test_consecutive_angles_on_the_chapters_trained_model(impl, ref, toy_run, seed):
    for Wk in toy_run[0]:
        got, want = impl.consecutive_angles(Wk), ref.consecutive_angles(Wk)
        assert _close(got, want, atol=1e-3), f"gaps differ from the reference on the trained model: {got} vs {want}"
        assert abs(float(got.sum()) - 360) < 1e-3, "the gaps must sum to 360 degrees"


@exercise("consecutive_angles")
def test_consecutive_angles_respects_threshold(impl, seed):
    W = torch.tensor([[1.0, 0.0, -0.3, 0.0], [0.0, 2.0, 0.0, -0.3]])
    assert _close(impl.consecutive_angles(W), torch.tensor([90.0, 270.0]), atol=1e-3), (
        "only features with norm above the threshold count: features at 0 and 90 degrees give gaps (90, 270)")
    assert _close(impl.consecutive_angles(W, threshold=0.2), torch.full((4,), 90.0), atol=1e-3), (
        "with threshold 0.2 all four features count, 90 degrees apart")


# --------------------------------------------------------------------------------------- count_antipodal_pairs

@exercise("count_antipodal_pairs")
def test_count_antipodal_pairs_hand_cases(impl, seed):
    square = torch.cat([_polygon(4, 1.1, 0.4), torch.zeros(2, 1)], 1)
    pentagon = _polygon(5, 1.1, 0.2)
    angled = torch.tensor([[1.2, 1.2 * math.cos(2.4), 0.0, 0.0, 0.0], [0.0, 1.2 * math.sin(2.4), 0.0, 0.0, 0.0]])
    tiny = torch.tensor([[1.0, -0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    got = impl.count_antipodal_pairs(torch.stack([square, pentagon, angled, tiny]))
    assert [int(v) for v in got] == [2, 0, 0, 0], (
        f"expected [2, 0, 0, 0] for a square, a pentagon, two long features at 137 degrees (cosine -0.74, not antipodal "
        f"even though their dot product is below -0.9), and a pair with one feature below the norm threshold; got {got.tolist()}")


@exercise("count_antipodal_pairs")
def test_count_antipodal_pairs_matches_reference_on_random_W(impl, ref, seed):
    base = torch.randn(6, 3, 4)
    W = torch.cat([base, -base * (0.5 + torch.rand(6, 1, 4)) + 0.05 * torch.randn(6, 3, 4)], dim=2)
    got, want = impl.count_antipodal_pairs(W), ref.count_antipodal_pairs(W)
    assert [int(v) for v in got] == want.tolist(), f"counts differ from the reference on random W: {got.tolist()} vs {want.tolist()}"
    got = impl.count_antipodal_pairs(W, threshold=1.0, cos_threshold=-0.99)
    want = ref.count_antipodal_pairs(W, threshold=1.0, cos_threshold=-0.99)
    assert [int(v) for v in got] == want.tolist(), "counts differ from the reference with threshold 1.0 and cos_threshold -0.99"


@exercise("count_antipodal_pairs")
def test_count_antipodal_pairs_on_the_chapters_trained_model(impl, ref, toy_run, seed):
    W = toy_run[0]
    got, want = impl.count_antipodal_pairs(W), ref.count_antipodal_pairs(W)
    assert [int(v) for v in got] == want.tolist(), f"counts on the trained model: {got.tolist()}; expected {want.tolist()}"


# -------------------------------------------------------------------------------------- dimensions_per_feature

@exercise("dimensions_per_feature")
def test_dimensions_per_feature_matches_reference_on_random_W(impl, ref, seed):
    W = torch.randn(5, 3, 8)
    got = impl.dimensions_per_feature(W)
    assert got.shape == (5,), _shape_msg("dimensions_per_feature", got, (5,))
    assert _close(got, ref.dimensions_per_feature(W)), "dimensions per feature differs from m / ||W||_F^2 on random W"


@exercise("dimensions_per_feature")
def test_dimensions_per_feature_on_the_chapters_trained_model(impl, ref, toy_run, sweep_W, seed):
    for W in (toy_run[0], sweep_W):
        assert _close(impl.dimensions_per_feature(W), ref.dimensions_per_feature(W)), (
            "dimensions per feature differs from the reference on the chapter's trained models")


@exercise("dimensions_per_feature")
def test_dimensions_per_feature_hand_cases(impl, seed):
    W = torch.zeros(2, 4, 6)
    W[0, :, :4] = torch.eye(4)
    W[1, :2, :5] = _polygon(5)
    assert _close(impl.dimensions_per_feature(W), torch.tensor([1.0, 0.8])), (
        "an identity (4 features in 4 dims) gives 1; a unit pentagon in 2 of 4 dims gives 4 / 5 = 0.8 (m is d_hidden)")
    assert _close(impl.dimensions_per_feature(2 * W), torch.tensor([0.25, 0.2])), "doubling W divides the result by 4"


# -------------------------------------------------------------------------------------- feature_dimensionality

@exercise("feature_dimensionality")
def test_feature_dimensionality_matches_reference_on_random_W(impl, ref, seed):
    W = torch.randn(4, 3, 9)
    got = impl.feature_dimensionality(W)
    assert got.shape == (4, 9), _shape_msg("feature_dimensionality", got, (4, 9))
    assert _close(got, ref.feature_dimensionality(W)), "D_i differs from ||W_i||^2 / sum_j (W_hat_i . W_j)^2 on random W"


@exercise("feature_dimensionality")
def test_feature_dimensionality_of_polytopes(impl, seed):
    W = torch.zeros(3, 3, 5)
    W[0, :2] = _polygon(5, 0.8)
    W[1, :2, :3] = _polygon(3, 1.3)
    W[2, 0, 0], W[2, 0, 1], W[2, 1, 2], W[2, 2, 3] = 1.0, -1.0, 0.7, 2.0
    want = torch.tensor([[0.4] * 5, [2 / 3] * 3 + [0, 0], [0.5, 0.5, 1.0, 1.0, 0.0]])
    got = impl.feature_dimensionality(W)
    assert not torch.isnan(got).any(), "a zero column must give D_i = 0, not NaN"
    assert _close(got, want, atol=1e-5), (
        f"expected D = 2/5 on a pentagon, 2/3 on a triangle, 1/2 for an antipodal pair, 1 for a lone feature, 0 for "
        f"a zero feature; got {got.tolist()}")


@exercise("feature_dimensionality")
def test_feature_dimensionality_bounds_on_trained_models(impl, ref, toy_run, sweep_W, seed):
    for W in (toy_run[0], sweep_W):
        D = impl.feature_dimensionality(W)
        assert _close(D, ref.feature_dimensionality(W), atol=1e-4), "D_i differs from the reference on a trained model"
        assert float(D.max()) <= 1 + 1e-5, "D_i can never exceed 1 (the denominator includes j = i)"
        assert bool((D.sum(-1) <= W.shape[1] + 1e-4).all()), "sum_i D_i can never exceed m = d_hidden"


# ------------------------------------------------------------------------------------- phase_diagram_instances

@exercise("phase_diagram_instances")
def test_phase_diagram_instances_matches_reference(impl, ref, seed):
    rel, dens = torch.rand(4) * 5, torch.rand(3)
    got, want = impl.phase_diagram_instances(rel, dens), ref.phase_diagram_instances(rel, dens)
    for g, w, what in zip(got, want, ("importance", "feature_probability")):
        assert g.shape == (12, 2), _shape_msg(f"phase_diagram_instances' {what}", g, (12, 2))
        assert _close(g, w), f"{what} differs from the reference for 4 relative importances and 3 densities"


@exercise("phase_diagram_instances")
def test_phase_diagram_instances_order_is_importance_major(impl, seed):
    rel, dens = torch.tensor([0.1, 1.0, 10.0]), torch.tensor([1.0, 0.01])
    importance, probability = impl.phase_diagram_instances(rel, dens)
    assert _close(importance.reshape(3, 2, 2)[:, :, 1], rel[:, None].expand(3, 2)), (
        "instance r * D + d must have relative importance relative_importances[r] (importance is the outer loop)")
    assert _close(probability.reshape(3, 2, 2)[:, :, 0], dens[None].expand(3, 2)), (
        "instance r * D + d must have density densities[d] (density is the inner loop)")


@exercise("phase_diagram_instances")
def test_phase_diagram_instances_first_feature_and_shared_density(impl, seed):
    importance, probability = impl.phase_diagram_instances(torch.tensor([0.5, 2.0]), torch.tensor([0.3, 0.2, 0.1]))
    assert bool((importance[:, 0] == 1).all()), "feature 0 always has importance 1; the extra feature is column 1"
    assert torch.equal(probability[:, 0], probability[:, 1]), "both features of an instance have the same density"


# ----------------------------------------------------------------------------------------------- classify_phase

@exercise("classify_phase")
def test_classify_phase_hand_cases(impl, seed):
    W = torch.tensor([[[1.0, 0.0]], [[0.0, -1.3]], [[0.9, -1.1]], [[0.2, 0.3]], [[-1.0, 0.49]], [[0.49, 0.51]]])
    got = impl.classify_phase(W)
    assert [int(v) for v in got] == [0, 1, 2, 0, 0, 1], (
        f"expected [0, 1, 2, 0, 0, 1]; got {got.tolist()} (use norms: a negative weight still represents its feature)")


@exercise("classify_phase")
def test_classify_phase_matches_reference_on_random_W(impl, ref, seed):
    W = torch.randn(50, 1, 2)
    assert impl.classify_phase(W).tolist() == ref.classify_phase(W).tolist(), "phases differ from the reference on random W"
    assert impl.classify_phase(W, 1.0).tolist() == ref.classify_phase(W, 1.0).tolist(), (
        "phases differ from the reference with threshold 1.0")


@exercise("classify_phase")
def test_classify_phase_on_trained_two_feature_models(impl, ref, solutions, seed):
    importance, probability = solutions.phase_diagram_instances(torch.tensor([0.2, 1.0, 5.0]), torch.tensor([1.0, 0.05]))
    W, _ = solutions.train_toy_model(importance, probability, 1, steps=300, batch_size=256, lr=1e-2, seed=0)
    assert impl.classify_phase(W).tolist() == ref.classify_phase(W).tolist(), (
        "phases differ from the reference on trained 2-feature models")
    W = torch.randn(20, 2, 2) * 0.6
    assert impl.classify_phase(W).tolist() == ref.classify_phase(W).tolist(), (
        "phases differ from the reference on models with a 2-dimensional hidden layer (use the norm of each column)")


# ----------------------------------------------------------------------------------- generate_correlated_batch

@exercise("generate_correlated_batch")
def test_generate_correlated_batch_pairs_share_presence(impl, seed):
    x = impl.generate_correlated_batch(5000, torch.tensor([[0.4, 0.2, 0.9], [0.1, 0.6, 0.3]]))
    assert x.shape == (5000, 2, 6), _shape_msg("generate_correlated_batch(5000, [2, 3])", x, (5000, 2, 6))
    present = x != 0
    assert torch.equal(present[..., 0::2], present[..., 1::2]), (
        "features 2k and 2k+1 (adjacent) must be zero in exactly the same samples")


@exercise("generate_correlated_batch")
def test_generate_correlated_batch_pair_probability(impl, seed):
    p = torch.tensor([[0.4, 0.2, 0.9], [0.1, 0.6, 0.3]])
    x = impl.generate_correlated_batch(20_000, p)
    frac = (x != 0).float().mean(0)
    assert torch.allclose(frac, p.repeat_interleave(2, -1), atol=0.015), (
        f"each feature of pair k should be present with probability pair_probability[k]; got {frac.tolist()}")


@exercise("generate_correlated_batch")
def test_generate_correlated_batch_values_independent_and_uniform(impl, seed):
    x = impl.generate_correlated_batch(20_000, torch.tensor([[0.5]]))
    a, b = x[:, 0, 0], x[:, 0, 1]
    mask = a != 0
    corr = float(torch.corrcoef(torch.stack([a[mask], b[mask]]))[0, 1])
    assert abs(corr) < 0.05, f"present values of the two features should be independent; correlation {corr:.2f}"
    assert abs(float(a[mask].mean()) - 0.5) < 0.02 and float(x.max()) <= 1 and float(x.min()) >= 0, (
        "present values should be uniform on [0, 1]")


# ------------------------------------------------------------------------------- generate_anticorrelated_batch

@exercise("generate_anticorrelated_batch")
def test_generate_anticorrelated_batch_pairs_never_both_present(impl, seed):
    x = impl.generate_anticorrelated_batch(5000, torch.tensor([[0.4, 0.2, 0.5], [0.1, 0.3, 0.05]]))
    assert x.shape == (5000, 2, 6), _shape_msg("generate_anticorrelated_batch(5000, [2, 3])", x, (5000, 2, 6))
    present = x != 0
    assert not bool((present[..., 0::2] & present[..., 1::2]).any()), (
        "features 2k and 2k+1 (adjacent) must never both be present")


@exercise("generate_anticorrelated_batch")
def test_generate_anticorrelated_batch_each_feature_probability(impl, seed):
    p = torch.tensor([[0.4, 0.2, 0.5], [0.1, 0.3, 0.05]])
    x = impl.generate_anticorrelated_batch(20_000, p)
    frac = (x != 0).float().mean(0)
    assert torch.allclose(frac, p.repeat_interleave(2, -1), atol=0.015), (
        f"each feature of pair k should be present with probability pair_probability[k] (the pair is active with "
        f"probability 2p); got {frac.tolist()}")


@exercise("generate_anticorrelated_batch")
def test_generate_anticorrelated_batch_values_uniform_and_pairs_independent(impl, seed):
    x = impl.generate_anticorrelated_batch(20_000, torch.tensor([[0.4, 0.4]]))
    values = x[x != 0]
    assert abs(float(values.mean()) - 0.5) < 0.02 and float(values.max()) <= 1, "present values should be uniform on [0, 1]"
    pair0, pair1 = (x[:, 0, 0:2] != 0).any(-1), (x[:, 0, 2:4] != 0).any(-1)
    both = float((pair0 & pair1).float().mean())
    assert abs(both - 0.64) < 0.02, (f"with pair_probability 0.4 each pair is active with probability 0.8, so two independent "
                                    f"pairs are both active in 0.64 of samples; got {both:.3f} (check the pair's rate 2p "
                                    f"and that pairs are drawn independently)")


# ------------------------------------------------------------------------------------------------ pair_cosines

@exercise("pair_cosines")
def test_pair_cosines_matches_reference_on_random_W(impl, ref, seed):
    W = torch.randn(3, 4, 8)
    got = impl.pair_cosines(W)
    assert got.shape == (3, 4), _shape_msg("pair_cosines", got, (3, 4))
    assert _close(got, ref.pair_cosines(W)), "pair cosines differ from the reference on random W (pairs are columns 2k, 2k+1)"


@exercise("pair_cosines")
def test_pair_cosines_on_the_chapters_trained_models(impl, ref, corr_runs, seed):
    for W in corr_runs:
        assert _close(impl.pair_cosines(W), ref.pair_cosines(W), atol=1e-4), (
            "pair cosines differ from the reference on the chapter's correlated/anticorrelated models")


@exercise("pair_cosines")
def test_pair_cosines_scale_invariant_and_zero_safe(impl, seed):
    W = torch.tensor([[[3.0, -0.5, 1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 2.0, 0.0, 0.0]]])
    got = impl.pair_cosines(W)
    assert not torch.isnan(got).any(), "a zero column must give cosine 0, not NaN"
    assert _close(got, torch.tensor([[-1.0, 1 / math.sqrt(2), 0.0]])), (
        f"expected (-1, 0.707, 0) for an antipodal pair of different lengths, a pair at 45 degrees and a pair with "
        f"a zero column; got {got.tolist()}")


# ------------------------------------------------------------------------------------------- abs_model_forward

@exercise("abs_model_forward")
def test_abs_model_forward_matches_reference_on_random_inputs(impl, ref, seed):
    W1, W2, b = torch.randn(3, 4, 6), torch.randn(3, 6, 4), torch.randn(3, 6)
    x = torch.rand(5, 3, 6) * 2 - 1
    got, want = impl.abs_model_forward(W1, W2, b, x), ref.abs_model_forward(W1, W2, b, x)
    assert got.shape == want.shape, _shape_msg("abs_model_forward", got, want.shape)
    assert _close(got, want), "output differs from ReLU(W2 ReLU(W1 x) + b_final) on random inputs"


@exercise("abs_model_forward")
def test_abs_model_forward_on_the_chapters_trained_model(impl, ref, abs_run, seed):
    W1, W2, b, _ = abs_run
    x = _signed(torch.rand(64, W1.shape[0], W1.shape[2]) * (torch.rand(64, W1.shape[0], W1.shape[2]) < 0.2))
    assert _close(impl.abs_model_forward(W1, W2, b, x), ref.abs_model_forward(W1, W2, b, x), atol=1e-4), (
        "output differs from the reference on the chapter's trained |x| models")


@exercise("abs_model_forward")
def test_abs_model_forward_relus_and_instances(impl, seed):
    W1, W2 = torch.tensor([[[1.0], [-1.0]]]), torch.tensor([[[1.0, -1.0]]])
    x = torch.tensor([-0.5, 0.5])[:, None, None]
    # ReLU(x) - ReLU(-x) = x, then the final ReLU: (0, 0.5)
    assert _close(impl.abs_model_forward(W1, W2, torch.zeros(1, 1), x), torch.tensor([0.0, 0.5])[:, None, None]), (
        "with W1 = [[1], [-1]] and W2 = [[1, -1]] the output should be ReLU(ReLU(x) - ReLU(-x)) = ReLU(x)")
    W1, W2, b = torch.randn(2, 3, 4), torch.randn(2, 4, 3), torch.randn(2, 4)
    x = torch.rand(6, 2, 4) - 0.5
    out = impl.abs_model_forward(W1, W2, b, x)
    W1b = W1.clone()
    W1b[1] = 0
    assert torch.allclose(impl.abs_model_forward(W1b, W2, b, x)[:, 0], out[:, 0]), "instances must stay independent"


# ---------------------------------------------------------------------------------------- abs_solution_weights

@exercise("abs_solution_weights")
def test_abs_solution_weights_compute_abs_exactly(impl, ref, seed):
    for n in (1, 3, 6):
        W1, W2 = impl.abs_solution_weights(n)
        assert W1.shape == (2 * n, n) and W2.shape == (n, 2 * n), (
            f"for {n} features W1 should be (2n, n) = {(2 * n, n)} and W2 (n, 2n); got {tuple(W1.shape)}, {tuple(W2.shape)}")
        x = torch.rand(50, 1, n) * 2 - 1
        out = ref.abs_model_forward(W1[None], W2[None], torch.zeros(1, n), x)
        assert torch.allclose(out, x.abs(), atol=1e-6), f"ReLU(W2 ReLU(W1 x)) should be exactly |x| for {n} dense features"


@exercise("abs_solution_weights")
def test_abs_solution_weights_on_sparse_signed_inputs(impl, ref, seed):
    W1, W2 = impl.abs_solution_weights(5)
    x = _signed(ref.generate_batch(200, torch.full((1, 5), 0.3)))
    out = ref.abs_model_forward(W1[None], W2[None], torch.zeros(1, 5), x)
    assert torch.allclose(out, x.abs(), atol=1e-6), "the hand-built model should compute |x| on sparse signed inputs too"


@exercise("abs_solution_weights")
def test_abs_solution_weights_negative_inputs_and_one_feature_per_output(impl, ref, seed):
    W1, W2 = impl.abs_solution_weights(4)
    x = -torch.eye(4)[:, None, :] * 0.7
    out = ref.abs_model_forward(W1[None], W2[None], torch.zeros(1, 4), x)
    assert torch.allclose(out, 0.7 * torch.eye(4)[:, None, :], atol=1e-6), (
        "a single negative feature x_i = -0.7 should give output 0.7 on feature i and 0 elsewhere")


# --------------------------------------------------------------------------------------------- train_abs_model

@exercise("train_abs_model")
def test_train_abs_model_computes_abs_of_the_most_important_feature(impl, ref, seed):
    W1, W2, b = impl.train_abs_model(torch.tensor([[1.0, 0.3]]), torch.ones(1, 2), 4, steps=400, batch_size=256,
                                     lr=1e-2, seed=0)
    assert W1.shape == (1, 4, 2) and W2.shape == (1, 2, 4) and b.shape == (1, 2), (
        "expected W1 (inst, d_mlp, feats), W2 (inst, feats, d_mlp), b_final (inst, feats)")
    x = torch.tensor([-0.9, -0.5, -0.2, 0.3, 0.8])[:, None, None] * torch.tensor([1.0, 0.0])
    y = ref.abs_model_forward(W1, W2, b, x)[:, 0, 0]
    assert torch.allclose(y, x[:, 0, 0].abs(), atol=0.15), (
        f"a dense model with 4 neurons should compute |x_0| for negative and positive x_0 = (-0.9, -0.5, -0.2, 0.3, 0.8); "
        f"it gives {[round(v, 2) for v in y.tolist()]} (train on signed inputs, with target |x|)")


@exercise("train_abs_model")
def test_train_abs_model_sparse_model_computes_more_than_half_its_neurons(impl, ref, solutions, seed):
    importance = (0.8 ** torch.arange(8))[None, :].expand(2, 8)
    probability = torch.tensor([1.0, 0.03])[:, None].expand(2, 8)
    W1, W2, b = impl.train_abs_model(importance, probability, 4, steps=1500, batch_size=256, lr=1e-2, seed=0)
    torch.manual_seed(5)
    x = _signed(solutions.generate_batch(20_000, probability))
    computed = solutions.explained_variance(x.abs(), solutions.abs_model_forward(W1, W2, b, x)).clamp(min=0).sum(-1)
    assert float(computed[0]) > 1.0, (
        f"the dense model with 4 neurons should compute up to 2 features' worth of |x|; it computes {float(computed[0]):.2f}")
    assert float(computed[1]) > 2.5, (
        f"the sparse model with 4 neurons should compute more than 2 features' worth; it computes {float(computed[1]):.2f}")


@exercise("train_abs_model")
def test_train_abs_model_is_seeded_and_detached(impl, seed):
    args = (torch.ones(2, 3), torch.full((2, 3), 0.5), 2)
    first = impl.train_abs_model(*args, steps=20, batch_size=64, lr=1e-2, seed=2)
    second = impl.train_abs_model(*args, steps=20, batch_size=64, lr=1e-2, seed=2)
    assert len(first) == 3, "return (W1, W2, b_final)"
    assert all(torch.equal(a, b) for a, b in zip(first, second)), "the same seed must give the same model"
    assert not any(t.requires_grad for t in first), "return detached tensors"


@exercise("train_abs_model")
def test_train_abs_model_initialisation_and_every_parameter_trained(impl, seed):
    # lr = 0: Adam's step is lr * (...) = 0, so what comes back is the initialisation
    n_inst, d_mlp, n_feats = 64, 10, 22
    args = (torch.ones(n_inst, n_feats), torch.full((n_inst, n_feats), 0.5), d_mlp)
    W1, W2, b = impl.train_abs_model(*args, steps=1, batch_size=16, lr=0.0, seed=seed)
    scale = (2 / (d_mlp + n_feats)) ** 0.5
    got = float(W1.std())
    assert abs(got / scale - 1) < 0.05, _init_std_message("W1", got, scale, f"d_mlp = {d_mlp}, feats = {n_feats}")
    assert abs(float(W1.mean())) < 0.05 * scale, "the initial W1 should have mean 0 (torch.randn times the scale)"
    assert bool((W2 >= 0).all()), "the initial W2 is the absolute value of randn * scale: no negative entries"
    mean_abs = scale * (2 / math.pi) ** 0.5  # E|N(0, s^2)| = s sqrt(2 / pi)
    assert abs(float(W2.mean()) / mean_abs - 1) < 0.05, (
        f"the initial W2 (|randn| * sqrt(2 / (d_mlp + feats))) should have mean {mean_abs:.4f}; got {float(W2.mean()):.4f}")
    assert bool((b == 0).all()), "b_final should start at zeros"
    args = (torch.ones(3, 5), torch.full((3, 5), 0.5), 4)
    before = impl.train_abs_model(*args, steps=30, batch_size=64, lr=0.0, seed=seed)
    after = impl.train_abs_model(*args, steps=30, batch_size=64, lr=1e-2, seed=seed)
    for name, a, b0 in zip(("W1", "W2", "b_final"), after, before):
        frac = _changed_fraction(a, b0)
        assert frac > 0.75, (
            f"after 30 steps only {frac:.0%} of the entries of {name} moved from their initial values: every parameter "
            f"must be trained (requires_grad on W1, W2 and b_final, and all three passed to Adam)")


# ------------------------------------------------------------------------------------------ explained_variance

@exercise("explained_variance")
def test_explained_variance_matches_reference_on_random_inputs(impl, ref, seed):
    target, prediction = torch.randn(4000, 3, 4), torch.randn(4000, 3, 4)
    got = impl.explained_variance(target, prediction)
    assert got.shape == (3, 4), _shape_msg("explained_variance", got, (3, 4))
    assert _close(got, ref.explained_variance(target, prediction), atol=2e-3), (
        "explained variance differs from 1 - mean((target - prediction)^2) / var(target) (population variance over the batch)")


@exercise("explained_variance")
def test_explained_variance_on_the_chapters_trained_model(impl, ref, abs_run, solutions, seed):
    W1, W2, b, _ = abs_run
    probability = torch.full((W1.shape[0], W1.shape[2]), 0.5)
    x = _signed(solutions.generate_batch(2000, probability))
    out = solutions.abs_model_forward(W1, W2, b, x)
    assert _close(impl.explained_variance(x.abs(), out), ref.explained_variance(x.abs(), out), atol=2e-3), (
        "explained variance differs from the reference on the chapter's trained |x| models")


@exercise("explained_variance")
def test_explained_variance_hand_cases_and_invariances(impl, seed):
    target = torch.randn(4000, 2, 3) * torch.tensor([1.0, 5.0, 0.1]) + 2.0
    assert _close(impl.explained_variance(target, target), torch.ones(2, 3)), "a perfect prediction scores 1"
    mean = target.mean(0, keepdim=True).expand_as(target)
    assert _close(impl.explained_variance(target, mean), torch.zeros(2, 3), atol=1e-3), (
        "predicting each feature's mean scores 0 (divide by the variance, not the mean square)")
    noisy = target + torch.randn_like(target)
    assert _close(impl.explained_variance(3 * target, 3 * noisy), impl.explained_variance(target, noisy)), (
        "explained variance should not change when target and prediction are scaled together")


# ------------------------------------------------------------------------------------------------- sae_forward

def _random_sae(d_in=3, d_sae=6):
    return torch.randn(d_sae, d_in), torch.randn(d_sae) * 0.5, torch.randn(d_in, d_sae), torch.randn(d_in)


@exercise("sae_forward")
def test_sae_forward_matches_reference_on_random_inputs(impl, ref, seed):
    params, h = _random_sae(), torch.randn(10, 3)
    (lat, rec), (lat_ref, rec_ref) = impl.sae_forward(h, *params), ref.sae_forward(h, *params)
    assert lat.shape == (10, 6) and rec.shape == (10, 3), "expected latents (batch, d_sae) and h_hat (batch, d_in)"
    assert _close(lat, lat_ref), "latents differ from ReLU(W_enc (h - b_dec) + b_enc) on random inputs"
    assert _close(rec, rec_ref), "reconstruction differs from W_dec latents + b_dec on random inputs"


@exercise("sae_forward")
def test_sae_forward_on_the_chapters_trained_sae(impl, ref, sae_run, sae_h, seed):
    params, h = sae_run[:4], sae_h[:500]
    for g, w, what in zip(impl.sae_forward(h, *params), ref.sae_forward(h, *params), ("latents", "reconstruction")):
        assert _close(g, w, atol=1e-4), f"{what} differ from the reference on the chapter's trained SAE"


@exercise("sae_forward")
def test_sae_forward_subtracts_decoder_bias_first(impl, seed):
    W_enc, b_enc, W_dec, b_dec = _random_sae()
    lat, rec = impl.sae_forward(b_dec[None].clone(), W_enc, b_enc, W_dec, b_dec)
    assert _close(lat, torch.relu(b_enc)[None]), "an input equal to b_dec should give latents ReLU(b_enc)"
    assert _close(rec, (W_dec @ torch.relu(b_enc) + b_dec)[None]), "reconstruction should be W_dec latents + b_dec"
    assert float(impl.sae_forward(torch.randn(20, 3), W_enc, b_enc, W_dec, b_dec)[0].min()) >= 0, "latents are nonnegative"


# ---------------------------------------------------------------------------------------------------- sae_loss

@exercise("sae_loss")
def test_sae_loss_matches_reference_on_random_inputs(impl, ref, seed):
    h, h_hat, lat = torch.randn(8, 3), torch.randn(8, 3), torch.rand(8, 5)
    got = impl.sae_loss(h, h_hat, lat, 0.2)
    assert torch.as_tensor(got).numel() == 1, "sae_loss should return a scalar"
    assert _close(torch.as_tensor(got).reshape(()), ref.sae_loss(h, h_hat, lat, 0.2)), "loss differs from the reference"


@exercise("sae_loss")
def test_sae_loss_on_the_chapters_trained_sae(impl, ref, sae_run, sae_h, solutions, seed):
    lat, rec = solutions.sae_forward(sae_h[:1000], *sae_run[:4])
    got = impl.sae_loss(sae_h[:1000], rec, lat, 0.3)
    assert _close(torch.as_tensor(got).reshape(()), ref.sae_loss(sae_h[:1000], rec, lat, 0.3)), (
        "loss differs from the reference on the chapter's trained SAE")


@exercise("sae_loss")
def test_sae_loss_terms(impl, seed):
    h, h_hat = torch.tensor([[1.0, 1.0, 1.0]]), torch.zeros(1, 3)
    lat = torch.tensor([[0.0, 2.0]])
    assert _close(torch.as_tensor(impl.sae_loss(h, h_hat, lat, 0.0)).reshape(()), torch.tensor(3.0)), (
        "with l1_coeff 0 the loss is the squared error summed over d_in (3 here), averaged over the batch")
    assert _close(torch.as_tensor(impl.sae_loss(h, h, lat, 0.5)).reshape(()), torch.tensor(1.0)), (
        "with a perfect reconstruction the loss is l1_coeff times the L1 norm of the latents (0.5 x 2)")
    assert _close(torch.as_tensor(impl.sae_loss(h, h, torch.zeros(1, 2), 0.5)).reshape(()), torch.tensor(0.0)), (
        "a perfect reconstruction with no active latents has loss 0")


# ------------------------------------------------------------------------------------------------ dead_latents

@exercise("dead_latents")
def test_dead_latents_matches_reference_on_random_latents(impl, ref, seed):
    lat = torch.relu(torch.randn(30, 12) - 1.5)
    lat[:, [2, 5]] = 0
    got = impl.dead_latents(lat)
    assert got.dtype == torch.bool and got.shape == (12,), "dead_latents should return a bool tensor of shape (d_sae,)"
    assert torch.equal(got, ref.dead_latents(lat)), "dead latents differ from the reference on random latents"


@exercise("dead_latents")
def test_dead_latents_fire_once_is_alive(impl, seed):
    lat = torch.zeros(100, 3)
    lat[57, 1] = 0.01
    assert impl.dead_latents(lat).tolist() == [True, False, True], "a latent that fires on one sample of the batch is alive"


@exercise("dead_latents")
def test_dead_latents_on_the_chapters_trained_sae(impl, ref, sae_run, sae_h, solutions, seed):
    lat, _ = solutions.sae_forward(sae_h[:2000], *sae_run[:4])
    assert torch.equal(impl.dead_latents(lat), ref.dead_latents(lat)), "dead latents differ on the chapter's trained SAE"


# --------------------------------------------------------------------------------------- resample_dead_latents

@exercise("resample_dead_latents")
def test_resample_dead_latents_matches_reference_on_random_sae(impl, ref, seed):
    params, h = _random_sae(4, 8), torch.randn(40, 4)
    dead = torch.tensor([False, True, False, True, True, False, False, True])
    got, want = impl.resample_dead_latents(h, *params, dead), ref.resample_dead_latents(h, *params, dead)
    for g, w, what in zip(got, want, ("W_enc", "b_enc", "W_dec", "b_dec")):
        assert _close(g, w, atol=1e-5), f"{what} after resampling differs from the reference on a random SAE"


@exercise("resample_dead_latents")
def test_resample_dead_latents_leaves_alive_latents_and_inputs_alone(impl, seed):
    params, h = _random_sae(3, 5), torch.randn(20, 3)
    before = [p.clone() for p in params]
    dead = torch.tensor([True, False, False, True, False])
    W_enc, b_enc, W_dec, b_dec = impl.resample_dead_latents(h, *params, dead)
    assert not changed_in_place(impl), "do not modify the input tensors (clone them)"
    assert torch.equal(W_enc[~dead], before[0][~dead]) and torch.equal(W_dec[:, ~dead], before[2][:, ~dead]), (
        "alive latents' encoder rows and decoder columns must not change")
    assert torch.equal(b_enc[~dead], before[1][~dead]) and torch.equal(b_dec, before[3]), "alive biases and b_dec must not change"
    assert bool((b_enc[dead] == 0).all()), "resampled latents get b_enc = 0"


@exercise("resample_dead_latents")
def test_resample_dead_latents_points_at_worst_residuals(impl, ref, sae_run, sae_h, seed):
    W_enc, b_enc, W_dec, b_dec, _ = sae_run
    h = sae_h[:3000]
    dead = torch.zeros(W_enc.shape[0], dtype=torch.bool)
    dead[[1, 4]] = True
    new_enc, _, new_dec, _ = impl.resample_dead_latents(h, W_enc, b_enc, W_dec, b_dec, dead)
    _, h_hat = ref.sae_forward(h, W_enc, b_enc, W_dec, b_dec)
    residual = h - h_hat
    worst = residual.pow(2).sum(-1).topk(2).indices
    want = residual[worst] / residual[worst].norm(dim=-1, keepdim=True)
    assert _close(new_dec[:, dead].T, want, atol=1e-5), (
        "resampled decoder columns should be the normalised residuals of the 2 worst-reconstructed samples, the "
        "worst one for the first dead latent")
    alive_norm = W_enc[~dead].norm(dim=-1).mean()
    assert _close(new_enc[dead], 0.2 * alive_norm * want, atol=1e-5), (
        "resampled encoder rows should be 0.2 x the mean alive encoder norm x the new direction")


# --------------------------------------------------------------------------------------------------- train_sae

def _pentagon_h(n=8000, p=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 5, generator=g) < p) * torch.rand(n, 5, generator=g)
    return x @ _polygon(5, 1.1, 0.3).T


@exercise("train_sae")
def test_train_sae_recovers_pentagon_features(impl, seed):
    W_enc, b_enc, W_dec, b_dec, n_resampled = impl.train_sae(_pentagon_h(), 10, l1_coeff=0.3, steps=1000, batch_size=256,
                                                             lr=3e-2, resample_every=100, seed=0)
    assert W_dec.shape == (2, 10) and W_enc.shape == (10, 2), "expected W_dec (d_in, d_sae) and W_enc (d_sae, d_in)"
    best = (_polygon(5, 1.0, 0.3).T @ W_dec).max(dim=1).values
    assert bool((best > 0.9).all()), (
        f"an SAE trained on 5 sparse features in 2D should find every feature direction (cosine > 0.9); best cosines "
        f"{[round(v, 3) for v in best.tolist()]}")


@exercise("train_sae")
def test_train_sae_decoder_unit_norm_seeded_and_detached(impl, seed):
    h = _pentagon_h(2000)
    first = impl.train_sae(h, 6, l1_coeff=0.3, steps=60, batch_size=64, lr=3e-2, resample_every=20, seed=1)
    second = impl.train_sae(h, 6, l1_coeff=0.3, steps=60, batch_size=64, lr=3e-2, resample_every=20, seed=1)
    assert len(first) == 5, "return (W_enc, b_enc, W_dec, b_dec, n_resampled)"
    assert torch.allclose(first[2].norm(dim=0), torch.ones(6), atol=1e-4), "decoder columns must have unit norm"
    assert all(torch.equal(a, b) for a, b in zip(first[:4], second[:4])), "the same seed must give the same SAE"
    assert not any(t.requires_grad for t in first[:4]), "return detached tensors"


@exercise("train_sae")
def test_train_sae_resamples_dead_latents(impl, seed):
    h = torch.rand(2000, 1) * torch.tensor([1.0, 0.0])  # all data on one ray: latents reading it negatively are dead
    *_, n_resampled = impl.train_sae(h, 12, l1_coeff=0.3, steps=10, batch_size=64, lr=3e-2, resample_every=1, seed=0)
    assert isinstance(n_resampled, int) and n_resampled > 0, (
        f"latents that never fire during a window should be resampled; n_resampled = {n_resampled}")
    *_, none = impl.train_sae(h, 12, l1_coeff=0.3, steps=100, batch_size=128, lr=3e-2, resample_every=1000, seed=0)
    assert none == 0, "with resample_every larger than steps, nothing should be resampled"


def _two_rays(n=2000, rare_every=100):
    """Samples along +e1, except every rare_every-th along +e2; lengths in [0.5, 1.5]."""
    t = 0.5 + torch.rand(n, generator=torch.Generator().manual_seed(0))
    rare = torch.arange(n) % rare_every == 0
    return torch.stack([torch.where(rare, 0.0, t), torch.where(rare, t, 0.0)], dim=1)


@exercise("train_sae")
def test_train_sae_resamples_exactly_the_latents_dead_in_the_window(impl, ref, seed):
    # With lr = 0 Adam changes nothing, so the SAE keeps its initialisation except where resampling changes it.
    # At initialisation latent j reads and writes the same unit direction and has no biases, so on these data it
    # fires iff its direction has a positive component along e1 or e2. A window of 100 batches of 16 samples
    # contains the rare +e2 samples with probability 1 - 1e-7, while one batch often does not.
    h, d_sae = _two_rays(), 16
    for s in (0, 1):
        W_enc0, b_enc0, W_dec0, b_dec0, n0 = impl.train_sae(h, d_sae, l1_coeff=0.3, steps=200, batch_size=16, lr=0.0,
                                                             resample_every=1000, seed=s)
        assert n0 == 0, "with resample_every larger than steps, nothing should be resampled"
        assert _close(W_dec0.norm(dim=0), torch.ones(d_sae)) and _close(W_enc0, W_dec0.T), (
            "at initialisation (what lr = 0 returns) W_dec should have unit columns and W_enc = W_dec.T")
        assert bool((b_enc0 == 0).all()) and bool((b_dec0 == 0).all()), "b_enc and b_dec should start at zeros"
        dead = ref.dead_latents(ref.sae_forward(h, W_enc0, b_enc0, W_dec0, b_dec0)[0])
        W_enc, b_enc, W_dec, b_dec, n = impl.train_sae(h, d_sae, l1_coeff=0.3, steps=200, batch_size=16, lr=0.0,
                                                       resample_every=100, seed=s)
        changed = ((W_dec - W_dec0).abs().amax(0) > 1e-5) | ((W_enc - W_enc0).abs().amax(1) > 1e-5)
        assert torch.equal(changed, dead), (
            f"the latents that never fired in the window are {dead.nonzero()[:, 0].tolist()}, but your train_sae "
            f"changed latents {changed.nonzero()[:, 0].tolist()} at its one resampling step (seed {s}, lr = 0): "
            f"a latent is dead when it fired on none of the window's batches; resample exactly those")
        assert isinstance(n, int) and n == int(dead.sum()), (
            f"n_resampled = {n}; {int(dead.sum())} latents were dead in the window and resampled")
        assert _close(W_enc[dead], 0.2 * W_dec[:, dead].T, atol=1e-5) and bool((b_enc[dead] == 0).all()), (
            "resampled latents should follow resample_dead_latents: encoder row 0.2 x the mean alive encoder norm "
            "(1 at initialisation) x the new unit decoder column, and b_enc = 0")
        assert torch.equal(b_dec, b_dec0), "with lr = 0 and resampling, b_dec must stay at its initial value"


def _fvu(solutions, h, params) -> float:
    _, h_hat = solutions.sae_forward(h, *params[:4])
    return float((h - h_hat).pow(2).sum() / (h - h.mean(0)).pow(2).sum())


SHORT_SAE = dict(l1_coeff=0.3, steps=300, batch_size=256, lr=3e-2, resample_every=50, seed=0)


@exercise("train_sae")
def test_train_sae_returned_sae_reconstructs_its_data(impl, ref_short_sae, solutions, seed):
    h = _pentagon_h(4000)
    got, want = _fvu(solutions, h, impl.train_sae(h, 10, **SHORT_SAE)), _fvu(solutions, h, ref_short_sae)
    assert got <= 1.5 * want + 0.03, (
        f"the SAE your train_sae returns leaves {got:.0%} of the variance of its training data unexplained; the "
        f"reference leaves {want:.0%}. Renormalise the decoder columns after every optimizer step (not only at the "
        f"end: in between, the decoder grows while the latents shrink to dodge the L1 penalty)")


@exercise("train_sae")
def test_train_sae_trains_every_parameter(impl, seed):
    h = _pentagon_h(2000)
    args = dict(l1_coeff=0.3, steps=30, batch_size=64, resample_every=1000, seed=seed)
    before = impl.train_sae(h, 6, lr=0.0, **args)
    after = impl.train_sae(h, 6, lr=3e-2, **args)
    for name, a, b0 in zip(("W_enc", "b_enc", "W_dec", "b_dec"), after[:4], before[:4]):
        frac = _changed_fraction(a, b0)
        assert frac > 0.3, (
            f"after 30 steps only {frac:.0%} of the entries of {name} moved from their initial values: every parameter "
            f"must be trained (requires_grad on W_enc, b_enc, W_dec and b_dec, and all four passed to Adam)")


# -------------------------------------------------------------------------------------------- feature_recovery

@exercise("feature_recovery")
def test_feature_recovery_matches_reference_on_random_inputs(impl, ref, seed):
    W_dec, W_feat = torch.randn(4, 9), torch.randn(4, 6)
    got = impl.feature_recovery(W_dec, W_feat)
    assert got.shape == (6,), _shape_msg("feature_recovery", got, (6,))
    assert _close(got, ref.feature_recovery(W_dec, W_feat)), "recovery differs from the reference on random directions"


@exercise("feature_recovery")
def test_feature_recovery_on_the_chapters_trained_sae(impl, ref, sae_run, toy_run, seed):
    W_dec, W_toy = sae_run[2], toy_run[0][-1]
    assert _close(impl.feature_recovery(W_dec, W_toy), ref.feature_recovery(W_dec, W_toy), atol=1e-5), (
        "recovery differs from the reference on the chapter's SAE and toy model")


@exercise("feature_recovery")
def test_feature_recovery_scale_invariant_and_signed(impl, seed):
    W_feat = torch.randn(3, 4)
    W_dec = torch.cat([W_feat[:, torch.randperm(4)] * 5, torch.randn(3, 2)], 1)
    assert _close(impl.feature_recovery(W_dec, W_feat * 0.1), torch.ones(4), atol=1e-5), (
        "a decoder containing every feature direction (any lengths, any order) gives 1 for every feature")
    W_feat = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert _close(impl.feature_recovery(-W_feat, W_feat), torch.zeros(2), atol=1e-6), (
        "decoder columns pointing opposite to the features are not matches (use signed cosines, not absolute values)")
