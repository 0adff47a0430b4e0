"""Visible checks of chapter 5 (superposition): known answers on tiny inputs, invariances, shapes."""

import math

import torch

from micourse.checks.core import expect, expect_close, expect_shape, visible


def _polygon(k: int, radius: float = 1.0, offset: float = 0.3) -> torch.Tensor:
    """[2, k]: k unit vectors (times radius) at equal angles, starting at `offset` radians."""
    angles = offset + 2 * math.pi * torch.arange(k) / k
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)])


@visible("generate_batch")
def _generate_batch(fn):
    torch.manual_seed(0)
    p = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.2, 0.2]])
    x = fn(4000, p)
    expect_shape(x, (4000, 3, 3), "generate_batch(4000, feature_probability of shape [3, 3])")
    expect(bool((x[:, 0] > 0).all()) and bool((x <= 1).all()),
           "with feature probability 1 every entry should be nonzero, with values in [0, 1]")
    expect(bool((x[:, 1] == 0).all()), "with feature probability 0 every entry should be 0")
    frac = float((x[:, 2] != 0).float().mean())
    expect(abs(frac - 0.2) < 0.03, f"with feature probability 0.2, {frac:.3f} of entries are nonzero; expected about 0.2")
    mean = float(x[:, 0].mean())
    expect(abs(mean - 0.5) < 0.03, f"present values should be uniform on [0, 1] (mean 0.5); got mean {mean:.3f}")
    x = fn(4000, torch.full((1, 2), 0.5))[:, 0]
    both = float(((x[:, 0] != 0) & (x[:, 1] != 0)).float().mean())
    expect(abs(both - 0.25) < 0.04,
           f"with probability 0.5 each, two independent features are both present in 0.5 x 0.5 = 25% of samples; got "
           f"{both:.1%} (draw presence separately for every entry, not once per sample)")
    same = float((x[:, 0] == x[:, 1])[x[:, 0] != 0].float().mean())
    expect(same < 0.01, "two present features of one sample should have independent values (draw a value per entry)")


@visible("toy_forward")
def _toy_forward(fn):
    W = torch.stack([torch.eye(3), torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])])
    b = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.0]])
    x = torch.tensor([[[0.3, 0.0, 0.7], [1.0, 0.0, 0.5]]])
    # instance 0: identity; instance 1: W^T W x = [1, 1, 0.5] + b -> [0.5, 1, 0.5]
    expect_close(fn(W, b, x), torch.tensor([[[0.3, 0.0, 0.7], [0.5, 1.0, 0.5]]]),
                 "toy_forward on 2 hand-worked instances (identity W, and W with two features sharing a direction)")
    out = fn(-torch.eye(2)[None], torch.tensor([[-1.0, 0.2]]), torch.tensor([[[0.0, 0.0]]]))
    expect_close(out, torch.tensor([[[0.0, 0.2]]]), "toy_forward with x = 0: the output should be ReLU(b_final)")
    # an antipodal pair in one dimension: h = W x = -0.8 is negative, and W^T h = (0.8, -0.8) before the ReLU
    out = fn(torch.tensor([[[-1.0, 1.0]]]), torch.zeros(1, 2), torch.tensor([[[0.8, 0.0]]]))
    expect_close(out, torch.tensor([[[0.8, 0.0]]]),
                 "toy_forward for the antipodal pair W = [[-1, 1]] with only feature 0 present (x = (0.8, 0)): the "
                 "hidden value h = -0.8 is negative, and only the output gets a ReLU")


@visible("importance_weighted_loss")
def _importance_weighted_loss(fn):
    x = torch.ones(4, 2, 3)
    out = torch.zeros(4, 2, 3)
    imp = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.5, 0.0]])
    expect_close(fn(out, x, imp), torch.tensor([3.0, 1.5]),
                 "loss with out = 0, x = 1: the sum over features of the importances, per instance")
    x = torch.tensor([[[1.0]], [[0.0]]])
    expect_close(fn(torch.zeros(2, 1, 1), x, torch.ones(1, 1)), torch.tensor([0.5]),
                 "loss for a batch of two samples with squared errors 1 and 0 (the mean over the batch)")


@visible("train_toy_model")
def _train_toy_model(fn):
    importance = torch.tensor([[1.0, 1.0, 0.0]])
    W, b = fn(importance, torch.ones(1, 3), d_hidden=2, steps=300, batch_size=128, lr=1e-2, seed=0)
    expect_shape(W, (1, 2, 3), "W returned by train_toy_model (inst, d_hidden, feats)")
    expect_shape(b, (1, 3), "b_final returned by train_toy_model (inst, feats)")
    expect(not W.requires_grad, "return W detached (W.detach())")
    norms = W.norm(dim=1)[0]
    expect(bool((norms[:2] > 0.8).all()) and float(norms[2]) < 0.3,
           f"3 dense features, 2 dimensions, importance (1, 1, 0): the two important features should get "
           f"norm ~1 and the unimportant one ~0; got norms {[round(v, 2) for v in norms.tolist()]}")
    cos = float(W[0, :, 0] @ W[0, :, 1] / (norms[0] * norms[1]))
    expect(abs(cos) < 0.2, f"the two important dense features should be orthogonal; their cosine is {cos:.2f}")
    small = (torch.ones(2, 4), torch.full((2, 4), 0.5), 3)
    first, second = fn(*small, steps=5, batch_size=32, lr=1e-2, seed=3), fn(*small, steps=5, batch_size=32, lr=1e-2, seed=3)
    expect(all(torch.equal(a, b) for a, b in zip(first, second)),
           "two calls with the same seed gave different models: call torch.manual_seed(seed) before anything random")
    # with lr = 0 Adam changes nothing, so the result is the initialisation
    W0, b0 = fn(torch.ones(64, 24), torch.full((64, 24), 0.5), 8, steps=1, batch_size=16, lr=0.0, seed=0)
    want = (2 / (8 + 24)) ** 0.5
    expect(abs(float(W0.std()) / want - 1) < 0.05 and bool((b0 == 0).all()),
           f"with lr = 0 you get the initialisation back: W's entries should have standard deviation sqrt(2 / (d_hidden "
           f"+ feats)) = {want:.3f} for d_hidden = 8, feats = 24 (got {float(W0.std()):.3f}) and b_final should be 0")
    W0, b0 = fn(*small, steps=20, batch_size=64, lr=0.0, seed=1)
    W1, b1 = fn(*small, steps=20, batch_size=64, lr=1e-2, seed=1)
    for name, a, b in (("W", W1, W0), ("b_final", b1, b0)):
        expect(float(((a - b).abs() > 1e-7).float().mean()) > 0.9,
               f"{name} hardly moves in 20 steps of training: every parameter needs requires_grad and must be given to Adam")


@visible("superposition_per_feature")
def _superposition_per_feature(fn):
    W = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    expect_close(fn(W), torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
                 "superposition of [antipodal pair, orthogonal feature, zero feature]")
    W = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    expect_close(fn(W), torch.tensor([[4.0, 1.0]]),
                 "superposition for W_0 = (1, 0), W_1 = (2, 0): (W_hat_0 . W_1)^2 = 4 and (W_hat_1 . W_0)^2 = 1")


@visible("consecutive_angles")
def _consecutive_angles(fn):
    pentagon = _polygon(5, radius=1.1)[:, torch.tensor([3, 0, 4, 1, 2])]
    expect_close(fn(pentagon), torch.full((5,), 72.0), "gaps of a (shuffled) pentagon", atol=1e-3)
    W = torch.tensor([[1.0, 0.0, 0.1], [0.0, 1.0, 0.1]])
    expect_close(fn(W), torch.tensor([90.0, 270.0]),
                 "gaps for features at 0° and 90° plus a tiny feature below the threshold", atol=1e-3)


@visible("count_antipodal_pairs")
def _count_antipodal_pairs(fn):
    square, pentagon = _polygon(4), _polygon(5)
    tiny = torch.tensor([[1.0, -0.2, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    wide = torch.tensor([[1.2, 1.2 * math.cos(2.4), 0.0, 0.0, 0.0], [0.0, 1.2 * math.sin(2.4), 0.0, 0.0, 0.0]])
    W = torch.stack([torch.cat([square, torch.zeros(2, 1)], 1), pentagon, tiny, wide])
    got = fn(W)
    expect_shape(got, (4,), "count_antipodal_pairs for 4 instances")
    expect(got.tolist() == [2, 0, 0, 0], f"a square has 2 antipodal pairs, a pentagon 0, a pair with one tiny feature "
                                         f"(norm 0.2 < threshold) 0, and two long features 137.5° apart 0 (their cosine "
                                         f"is -0.74, although their dot product is -1.06); got {got.tolist()}")


@visible("dimensions_per_feature")
def _dimensions_per_feature(fn):
    W = torch.stack([torch.eye(3), 2 * torch.eye(3)])
    expect_close(fn(W), torch.tensor([1.0, 0.25]), "dimensions per feature for W = I and W = 2I (3 x 3)")
    expect_close(fn(_polygon(5)[None]), torch.tensor([0.4]), "dimensions per feature of a unit pentagon in 2D")


@visible("feature_dimensionality")
def _feature_dimensionality(fn):
    expect_close(fn(_polygon(5, radius=0.7)[None]), torch.full((1, 5), 0.4), "D_i of a pentagon")
    W = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    expect_close(fn(W), torch.tensor([[0.5, 0.5, 1.0, 0.0]]),
                 "D_i of [antipodal pair, orthogonal feature, zero feature] (a zero feature has D_i = 0)")


@visible("phase_diagram_instances")
def _phase_diagram_instances(fn):
    importance, probability = fn(torch.tensor([0.5, 2.0]), torch.tensor([1.0, 0.1, 0.01]))
    expect_close(importance, torch.tensor([[1, 0.5], [1, 0.5], [1, 0.5], [1, 2.0], [1, 2.0], [1, 2.0]]),
                 "importance for relative importances (0.5, 2) and densities (1, 0.1, 0.01)")
    expect_close(probability, torch.tensor([[1, 1], [0.1, 0.1], [0.01, 0.01]]).repeat(2, 1),
                 "feature_probability for relative importances (0.5, 2) and densities (1, 0.1, 0.01)")


@visible("classify_phase")
def _classify_phase(fn):
    W = torch.tensor([[[1.0, 0.0]], [[0.0, 1.2]], [[1.0, -1.0]], [[0.1, 0.2]], [[-0.9, 0.1]]])
    got = fn(W)
    expect(got.tolist() == [0, 1, 2, 0, 0], f"phases of W = [1, 0], [0, 1.2], [1, -1], [0.1, 0.2], [-0.9, 0.1] "
                                            f"should be [0, 1, 2, 0, 0]; got {got.tolist()}")


@visible("generate_correlated_batch")
def _generate_correlated_batch(fn):
    torch.manual_seed(0)
    x = fn(4000, torch.tensor([[0.3, 0.8]]))
    expect_shape(x, (4000, 1, 4), "generate_correlated_batch(4000, pair_probability of shape [1, 2])")
    present = x != 0
    expect(bool((present[..., 0::2] == present[..., 1::2]).all()),
           "features 2k and 2k+1 must be zero in exactly the same samples")
    frac = present[:, 0, 0::2].float().mean(0)
    expect(bool(((frac - torch.tensor([0.3, 0.8])).abs() < 0.03).all()),
           f"pairs should be present with probabilities (0.3, 0.8); got {[round(v, 3) for v in frac.tolist()]}")
    expect(float((x[..., 0] - x[..., 1]).abs().max()) > 0.1, "the two features of a pair need independent values")


@visible("generate_anticorrelated_batch")
def _generate_anticorrelated_batch(fn):
    torch.manual_seed(0)
    x = fn(4000, torch.tensor([[0.3, 0.1]]))
    expect_shape(x, (4000, 1, 4), "generate_anticorrelated_batch(4000, pair_probability of shape [1, 2])")
    present = x != 0
    expect(not bool((present[..., 0::2] & present[..., 1::2]).any()), "the two features of a pair must never both be present")
    frac = present[:, 0].float().mean(0)
    expect(bool(((frac - torch.tensor([0.3, 0.3, 0.1, 0.1])).abs() < 0.03).all()),
           f"each feature of pair k should be present with probability pair_probability[k] = (0.3, 0.1); "
           f"got per feature {[round(v, 3) for v in frac.tolist()]}")


@visible("pair_cosines")
def _pair_cosines(fn):
    W = torch.tensor([[[1.0, -2.0, 1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 3.0, 0.0, 0.0]]])
    expect_close(fn(W), torch.tensor([[-1.0, 0.0, 0.0]]),
                 "pair cosines of [antipodal pair, orthogonal pair, pair with a zero column]")


@visible("abs_model_forward")
def _abs_model_forward(fn):
    W1, W2 = torch.tensor([[[1.0], [-1.0]]]), torch.tensor([[[1.0, 1.0]]])
    x = torch.tensor([-0.7, 0.0, 0.4])[:, None, None]
    expect_close(fn(W1, W2, torch.zeros(1, 1), x), x.abs(), "the 2-neuron |x| model on x = (-0.7, 0, 0.4)")
    expect_close(fn(W1, W2, torch.tensor([[-0.5]]), x), torch.tensor([0.2, 0.0, 0.0])[:, None, None],
                 "the 2-neuron |x| model with b_final = -0.5 (the final ReLU clips at 0)")


@visible("abs_solution_weights")
def _abs_solution_weights(fn):
    W1, W2 = fn(3)
    expect_shape(W1, (6, 3), "W1 for 3 features ([2n, n])")
    expect_shape(W2, (3, 6), "W2 for 3 features ([n, 2n])")
    x = torch.tensor([[-0.9, 0.3, 0.5], [0.2, -0.1, -1.0]])
    out = torch.relu(torch.relu(x @ W1.T) @ W2.T)
    expect_close(out, x.abs(), "ReLU(W2 ReLU(W1 x)) on two dense inputs")


@visible("train_abs_model")
def _train_abs_model(fn):
    W1, W2, b = fn(torch.tensor([[1.0, 0.3]]), torch.ones(1, 2), d_mlp=4, steps=400, batch_size=256, lr=1e-2, seed=0)
    expect_shape(W1, (1, 4, 2), "W1 (inst, d_mlp, feats)")
    expect_shape(W2, (1, 2, 4), "W2 (inst, feats, d_mlp)")
    expect_shape(b, (1, 2), "b_final (inst, feats)")
    x = torch.tensor([-0.8, -0.3, 0.4, 0.9])[:, None, None] * torch.tensor([1.0, 0.0])
    y = torch.relu(torch.einsum("kfn,bkn->bkf", W2, torch.relu(torch.einsum("knf,bkf->bkn", W1, x))) + b)[:, 0, 0]
    expect(bool(((y - x[:, 0, 0].abs()).abs() < 0.15).all()),
           f"a dense model with 4 neurons and 2 features should compute |x_0| for the most important feature; on x_0 = "
           f"(-0.8, -0.3, 0.4, 0.9) it gives {[round(v, 2) for v in y.tolist()]}")
    # with lr = 0 Adam changes nothing, so the result is the initialisation
    W1, W2, b = fn(torch.ones(64, 22), torch.full((64, 22), 0.5), 10, steps=1, batch_size=16, lr=0.0, seed=0)
    scale = (2 / (10 + 22)) ** 0.5
    expect(abs(float(W1.std()) / scale - 1) < 0.05 and bool((b == 0).all()),
           f"with lr = 0 you get the initialisation back: W1's entries should have standard deviation sqrt(2 / (d_mlp + "
           f"feats)) = {scale:.3f} for d_mlp = 10, feats = 22 (got {float(W1.std()):.3f}) and b_final should be 0")
    expect(bool((W2 >= 0).all()), "the initial W2 should be the absolute value of randn * sqrt(2 / (d_mlp + feats))")
    small = (torch.ones(3, 5), torch.full((3, 5), 0.5), 4)
    before = fn(*small, steps=20, batch_size=64, lr=0.0, seed=1)
    after = fn(*small, steps=20, batch_size=64, lr=1e-2, seed=1)
    for name, a, b0 in zip(("W1", "W2", "b_final"), after, before):
        expect(float(((a - b0).abs() > 1e-7).float().mean()) > 0.75,
               f"{name} hardly moves in 20 steps of training: every parameter needs requires_grad and must be given to Adam")


@visible("explained_variance")
def _explained_variance(fn):
    target = torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None, None].expand(4, 1, 2)
    prediction = torch.stack([target[:, 0, 0], torch.full((4,), 1.5)], -1)[:, None]
    expect_close(fn(target, prediction), torch.tensor([[1.0, 0.0]]),
                 "explained variance of a perfect prediction (1) and of predicting the mean (0)")
    prediction = target + torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None, None]
    expect_close(fn(target, prediction), torch.tensor([[0.2, 0.2]]),
                 "explained variance with errors of ±1 on targets (0, 1, 2, 3), variance 1.25")


@visible("sae_forward")
def _sae_forward(fn):
    W_enc = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])  # latent 1 reads twice what it writes
    W_dec = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    b_enc, b_dec = torch.tensor([0.0, -0.5, 0.0]), torch.tensor([0.1, 0.0])
    latents, h_hat = fn(torch.tensor([[1.1, 2.0], [0.1, 0.0]]), W_enc, b_enc, W_dec, b_dec)
    # sample 0: h - b_dec = (1, 2) -> W_enc (1, 2) + b_enc = (1, 3.5, -1) -> ReLU (1, 3.5, 0) -> W_dec f + b_dec = (1.1, 3.5)
    expect_close(latents, torch.tensor([[1.0, 3.5, 0.0], [0.0, 0.0, 0.0]]),
                 "latents on a hand-worked SAE (the encoder is W_enc, not W_dec transposed)")
    expect_close(h_hat, torch.tensor([[1.1, 3.5], [0.1, 0.0]]), "reconstruction on a hand-worked SAE")


@visible("sae_loss")
def _sae_loss(fn):
    h = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    h_hat = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    latents = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    got = fn(h, h_hat, latents, 0.1)
    expect_close(torch.as_tensor(got).reshape(()), torch.tensor(0.5 * (4 + 2) + 0.1 * 0.5 * 3),
                 "SAE loss: mean over the batch of (squared error summed over d_in + l1_coeff * L1 of the latents)")


@visible("dead_latents")
def _dead_latents(fn):
    latents = torch.tensor([[0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.1, 0.0, 0.0]])
    got = fn(latents)
    expect(got.dtype == torch.bool, f"dead_latents should return a bool tensor; got {got.dtype}")
    expect(got.tolist() == [True, False, True, False], f"latents 0 and 2 never fire and are dead; got {got.tolist()}")


@visible("resample_dead_latents")
def _resample_dead_latents(fn):
    W_enc = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    W_dec = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    b_enc, b_dec = torch.tensor([-0.1, -5.0, -0.2]), torch.tensor([0.0, 1.0])
    # no latent fires on these samples, so h_hat = b_dec = (0, 1) and the residuals are h - (0, 1):
    # (0, -1), (-3, -1), (0, -1). Sample 1 is the worst reconstructed; its residual differs from its input (-3, 0).
    h = torch.tensor([[0.0, 0.0], [-3.0, 0.0], [0.0, 0.0]])
    dead = torch.tensor([False, True, False])
    before = [t.clone() for t in (W_enc, b_enc, W_dec, b_dec)]
    new_enc, new_b_enc, new_dec, new_b_dec = fn(h, W_enc, b_enc, W_dec, b_dec, dead)
    expect(all(torch.equal(a, b) for a, b in zip(before, (W_enc, b_enc, W_dec, b_dec))),
           "resample_dead_latents must not modify its inputs (clone them)")
    d = torch.tensor([-3.0, -1.0]) / 10 ** 0.5
    expect_close(new_dec, torch.tensor([[1.0, float(d[0]), 0.0], [0.0, float(d[1]), 1.0]]),
                 "W_dec after resampling latent 1 towards the residual h - h_hat = (-3, -1) of the worst sample, normalised")
    expect_close(new_enc, torch.tensor([[2.0, 0.0], [0.6 * float(d[0]), 0.6 * float(d[1])], [0.0, 4.0]]),
                 "W_enc after resampling (0.2 x the mean alive encoder norm 3 x the new direction)")
    expect_close(new_b_enc, torch.tensor([-0.1, 0.0, -0.2]), "b_enc after resampling (0 for the resampled latent)")
    expect_close(new_b_dec, b_dec, "b_dec must not change")


@visible("train_sae")
def _train_sae(fn):
    torch.manual_seed(0)
    directions = _polygon(3, offset=0.5)  # 3 features in 2 dimensions, at 120 degrees
    x = (torch.rand(3000, 3) < 0.1) * torch.rand(3000, 3)
    h = x @ directions.T
    W_enc, b_enc, W_dec, b_dec, n_resampled = fn(h, 6, l1_coeff=0.3, steps=600, batch_size=128, lr=1e-2,
                                                  resample_every=100, seed=0)
    expect_shape(W_enc, (6, 2), "W_enc (d_sae, d_in)")
    expect_shape(b_enc, (6,), "b_enc (d_sae,)")
    expect_shape(W_dec, (2, 6), "W_dec (d_in, d_sae)")
    expect_shape(b_dec, (2,), "b_dec (d_in,)")
    expect(isinstance(n_resampled, int), f"n_resampled should be an int; got {type(n_resampled).__name__}")
    expect_close(W_dec.norm(dim=0), torch.ones(6), "norms of the decoder columns (renormalise after every step)",
                 atol=1e-4)
    best = (directions.T @ W_dec).max(dim=1).values
    expect(bool((best > 0.9).all()), f"an SAE with 6 latents on 3 sparse features in 2D should find every feature "
                                     f"direction (cosine > 0.9); best cosines {[round(v, 3) for v in best.tolist()]}")
    latents = torch.relu((h - b_dec) @ W_enc.T + b_enc)
    fvu = float((h - latents @ W_dec.T - b_dec).pow(2).sum() / (h - h.mean(0)).pow(2).sum())
    expect(fvu < 0.25, f"the SAE you return leaves {fvu:.0%} of the variance of its training data unexplained: "
                       f"renormalise the decoder columns after every optimizer step, not only at the end")
    _train_sae_resampling(fn)


def _train_sae_resampling(fn):
    """With lr = 0 nothing trains, so only resampling changes the SAE. At initialisation latent j reads and writes
    one unit direction with no biases; on data along +e1 (and, rarely, +e2) it fires iff that direction has a
    positive component along e1 or e2. The rare +e2 samples (1 in 100) appear in a window of 100 batches of 16
    (all but surely) but not in most single batches."""
    t = 0.5 + torch.rand(2000, generator=torch.Generator().manual_seed(0))
    rare = torch.arange(2000) % 100 == 0
    h = torch.stack([torch.where(rare, 0.0, t), torch.where(rare, t, 0.0)], dim=1)
    W_enc0, b_enc0, W_dec0, b_dec0, _ = fn(h, 16, l1_coeff=0.3, steps=200, batch_size=16, lr=0.0,
                                           resample_every=1000, seed=0)
    expect(bool(torch.allclose(W_enc0, W_dec0.T)) and bool((b_enc0 == 0).all()) and bool((b_dec0 == 0).all()),
           "with lr = 0 you get the initialisation back: W_enc should be W_dec.T, and b_enc and b_dec zeros")
    dead = ~((W_dec0 > 0).any(0))
    W_enc, _, W_dec, _, n = fn(h, 16, l1_coeff=0.3, steps=200, batch_size=16, lr=0.0, resample_every=100, seed=0)
    changed = ((W_dec - W_dec0).abs().amax(0) > 1e-5) | ((W_enc - W_enc0).abs().amax(1) > 1e-5)
    expect(torch.equal(changed, dead),
           f"with lr = 0 and one resampling step (after 100 of 200 steps), latents {dead.nonzero()[:, 0].tolist()} never "
           f"fired in the window and should be the ones resampled; yours changed {changed.nonzero()[:, 0].tolist()}. "
           f"A latent is dead when dead_latents is True on every batch of the window; resample only those")
    expect(n == int(dead.sum()), f"n_resampled = {n}, but {int(dead.sum())} latents were dead at the one resampling "
                                 f"step of the first half (after step 100 of 200): count only those (and resample only "
                                 f"in the first half of training)")


@visible("feature_recovery")
def _feature_recovery(fn):
    W_features = torch.tensor([[1.0, 0.0, -0.6], [0.0, 2.0, 0.8]])
    W_dec = torch.cat([W_features[:, [2, 0, 1]] / W_features[:, [2, 0, 1]].norm(dim=0), torch.tensor([[0.6], [-0.8]])], 1)
    expect_close(fn(W_dec, W_features), torch.ones(3), "recovery when the decoder contains every feature direction")
    expect_close(fn(W_dec * torch.tensor([3.0, 0.5, 2.0, 1.0]), W_features), torch.ones(3),
                 "recovery when the decoder columns have lengths 3, 0.5, 2 (cosines do not depend on lengths)")
    # decoder columns opposite to the features: f0 = (1, 0), f1 = (0, 1), f2 = (-0.6, 0.8) against -f0, -f1, -f2
    expect_close(fn(-W_features, W_features), torch.tensor([0.6, 0.0, 0.6]),
                 "recovery when every decoder column points opposite to a feature (cosines are signed, not absolute)")
