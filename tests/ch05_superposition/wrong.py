"""Known-wrong variants of chapter 5's exercises (mistakes learners really make): each must fail at least one
hidden check. Variants are self-contained: they cannot call the notebook's other functions by name."""

import torch


def _batch(batch_size, p):
    shape = (batch_size, *p.shape)
    return torch.where(torch.rand(shape) < p, torch.rand(shape), 0.0)


def _toy_forward(W, b, x):
    h = torch.einsum("khf,bkf->bkh", W, x)
    return torch.relu(torch.einsum("khf,bkh->bkf", W, h) + b)


def _normalise(W, dim=1):
    return W / W.norm(dim=dim, keepdim=True).clamp_min(1e-8)


# generate_batch
def generate_batch_probability_as_sparsity(batch_size, feature_probability):
    shape = (batch_size, *feature_probability.shape)
    return torch.where(torch.rand(shape) < 1 - feature_probability, torch.rand(shape), 0.0)


def generate_batch_one_mask_per_sample(batch_size, feature_probability):
    n_inst, n_feats = feature_probability.shape
    present = torch.rand(batch_size, n_inst, 1) < feature_probability
    return torch.where(present, torch.rand(batch_size, n_inst, n_feats), 0.0)


def generate_batch_binary_values(batch_size, feature_probability):
    return (torch.rand(batch_size, *feature_probability.shape) < feature_probability).float()


# toy_forward
def toy_forward_no_relu(W, b_final, x):
    h = torch.einsum("khf,bkf->bkh", W, x)
    return torch.einsum("khf,bkh->bkf", W, h) + b_final


def toy_forward_bias_after_relu(W, b_final, x):
    h = torch.einsum("khf,bkf->bkh", W, x)
    return torch.relu(torch.einsum("khf,bkh->bkf", W, h)) + b_final


def toy_forward_relu_on_hidden_too(W, b_final, x):
    h = torch.relu(torch.einsum("khf,bkf->bkh", W, x))
    return torch.relu(torch.einsum("khf,bkh->bkf", W, h) + b_final)


# importance_weighted_loss
def loss_mean_over_features(out, x, importance):
    return (importance * (x - out) ** 2).mean(-1).mean(0)


def loss_importance_squared(out, x, importance):
    return ((importance * (x - out)) ** 2).sum(-1).mean(0)


def loss_sum_over_batch(out, x, importance):
    return (importance * (x - out) ** 2).sum(-1).sum(0)


# train_toy_model
def _sample(batch_size, p, correlation):
    """The notebook's sample_features, self-contained: independent, correlated or anticorrelated pairs."""
    if correlation == "none":
        return _batch(batch_size, p)
    q = p[:, 0::2]
    n_inst, n_pairs = q.shape
    if correlation == "correlated":
        present = (torch.rand(batch_size, n_inst, n_pairs) < q).repeat_interleave(2, dim=-1)
    else:
        active = torch.rand(batch_size, n_inst, n_pairs) < 2 * q
        first = torch.rand(batch_size, n_inst, n_pairs) < 0.5
        present = torch.stack([active & first, active & ~first], dim=-1).flatten(-2)
    return torch.where(present, torch.rand(batch_size, n_inst, 2 * n_pairs), 0.0)


def _train(importance, feature_probability, d_hidden, steps, batch_size, lr, seed, zero_grad=True, sparsity=False,
           correlation="none", init_scale=None, train_bias=True):
    torch.manual_seed(seed)
    n_inst, n_feats = importance.shape
    scale = (2 / (d_hidden + n_feats)) ** 0.5 if init_scale is None else init_scale(d_hidden, n_feats)
    W = (torch.randn(n_inst, d_hidden, n_feats) * scale).requires_grad_()
    b = torch.zeros(n_inst, n_feats, requires_grad=train_bias)
    opt = torch.optim.Adam([W, b], lr=lr)
    for _ in range(steps):
        x = _sample(batch_size, 1 - feature_probability if sparsity else feature_probability, correlation)
        loss = (importance * (x - _toy_forward(W, b, x)) ** 2).sum(-1).mean(0).sum()
        if zero_grad:
            opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach(), b.detach()


def train_toy_model_without_zero_grad(importance, feature_probability, d_hidden, steps=2000, batch_size=512, lr=1e-2,
                                      seed=0, correlation="none"):
    return _train(importance, feature_probability, d_hidden, steps, batch_size, lr, seed, zero_grad=False,
                  correlation=correlation)


def train_toy_model_probability_as_sparsity(importance, feature_probability, d_hidden, steps=2000, batch_size=512,
                                            lr=1e-2, seed=0, correlation="none"):
    return _train(importance, feature_probability, d_hidden, steps, batch_size, lr, seed, sparsity=True,
                  correlation=correlation)


def train_toy_model_unseeded(importance, feature_probability, d_hidden, steps=2000, batch_size=512, lr=1e-2, seed=0,
                             correlation="none"):
    return _train(importance, feature_probability, d_hidden, steps, batch_size, lr, seed=int(torch.randint(0, 10**6, ())),
                  correlation=correlation)


def train_toy_model_init_variance_as_scale(importance, feature_probability, d_hidden, steps=2000, batch_size=512,
                                           lr=1e-2, seed=0, correlation="none"):
    # forgot the square root: multiplies randn by 2 / (d_hidden + feats) instead of its square root
    return _train(importance, feature_probability, d_hidden, steps, batch_size, lr, seed, correlation=correlation,
                  init_scale=lambda d, f: 2 / (d + f))


def train_toy_model_bias_not_trained(importance, feature_probability, d_hidden, steps=2000, batch_size=512, lr=1e-2,
                                     seed=0, correlation="none"):
    # b_final created without requires_grad: Adam silently skips it and it stays 0
    return _train(importance, feature_probability, d_hidden, steps, batch_size, lr, seed, correlation=correlation,
                  train_bias=False)


def train_toy_model_ignores_correlation(importance, feature_probability, d_hidden, steps=2000, batch_size=512,
                                        lr=1e-2, seed=0, correlation="none"):
    # calls generate_batch directly: the correlation argument has no effect
    return _train(importance, feature_probability, d_hidden, steps, batch_size, lr, seed)


# superposition_per_feature
def superposition_including_self(W):
    return (torch.einsum("khi,khj->kij", _normalise(W), W) ** 2).sum(-1)


def superposition_unnormalised(W):
    dots = torch.einsum("khi,khj->kij", W, W) ** 2
    return dots.sum(-1) - dots.diagonal(dim1=1, dim2=2)


def superposition_normalises_the_other_feature(W):
    dots = torch.einsum("khi,khj->kij", W, _normalise(W)) ** 2
    return dots.sum(-1) - dots.diagonal(dim1=1, dim2=2)


# consecutive_angles
def angles_without_wraparound(W, threshold=0.5):
    kept = W[:, W.norm(dim=0) > threshold]
    return torch.diff(torch.rad2deg(torch.atan2(kept[1], kept[0])).sort().values)


def angles_in_radians(W, threshold=0.5):
    kept = W[:, W.norm(dim=0) > threshold]
    angles = torch.atan2(kept[1], kept[0]).sort().values
    return torch.diff(torch.cat([angles, angles[:1] + 2 * torch.pi]))


def angles_in_feature_order(W, threshold=0.5):
    kept = W[:, W.norm(dim=0) > threshold]
    angles = torch.rad2deg(torch.atan2(kept[1], kept[0]))
    return torch.diff(torch.cat([angles, angles[:1] + 360])) % 360


# count_antipodal_pairs
def _cos_and_mask(W, threshold):
    norms = W.norm(dim=1)
    cos = torch.einsum("khi,khj->kij", _normalise(W), _normalise(W))
    rep = norms > threshold
    return cos, rep[:, :, None] & rep[:, None, :]


def antipodal_ordered_pairs(W, threshold=0.5, cos_threshold=-0.9):
    cos, both = _cos_and_mask(W, threshold)
    return (both & (cos < cos_threshold)).sum((1, 2))


def antipodal_dot_product(W, threshold=0.5, cos_threshold=-0.9):
    _, both = _cos_and_mask(W, threshold)
    dots = torch.einsum("khi,khj->kij", W, W)
    return torch.triu(both & (dots < cos_threshold), diagonal=1).sum((1, 2))


def antipodal_ignores_threshold(W, threshold=0.5, cos_threshold=-0.9):
    cos, _ = _cos_and_mask(W, threshold)
    nonzero = W.norm(dim=1) > 0
    both = nonzero[:, :, None] & nonzero[:, None, :]
    return torch.triu(both & (cos < cos_threshold), diagonal=1).sum((1, 2))


# dimensions_per_feature
def dimensions_per_feature_uses_n(W):
    return W.shape[2] / W.pow(2).sum((1, 2))


def dimensions_per_feature_unsquared_norm(W):
    return W.shape[1] / W.pow(2).sum((1, 2)).sqrt()


# feature_dimensionality
def dimensionality_excludes_self(W):
    dots = torch.einsum("khi,khj->kij", _normalise(W), W) ** 2
    return W.pow(2).sum(1) / (dots.sum(-1) - dots.diagonal(dim1=1, dim2=2)).clamp_min(1e-12)


def dimensionality_unnormalised_dot(W):
    dots = torch.einsum("khi,khj->kij", W, W) ** 2
    return W.pow(2).sum(1) / dots.sum(-1).clamp_min(1e-12)


def dimensionality_divides_zero_by_zero(W):
    W_hat = W / W.norm(dim=1, keepdim=True)
    return W.pow(2).sum(1) / (torch.einsum("khi,khj->kij", W_hat, W) ** 2).sum(-1)


# phase_diagram_instances
def phase_instances_density_major(relative_importances, densities):
    dens, rel = torch.meshgrid(densities, relative_importances, indexing="ij")
    rel, dens = rel.flatten(), dens.flatten()
    return torch.stack([torch.ones_like(rel), rel], -1), torch.stack([dens, dens], -1)


def phase_instances_swapped_columns(relative_importances, densities):
    rel, dens = torch.meshgrid(relative_importances, densities, indexing="ij")
    rel, dens = rel.flatten(), dens.flatten()
    return torch.stack([rel, torch.ones_like(rel)], -1), torch.stack([dens, dens], -1)


# classify_phase
def classify_phase_signed_weights(W, threshold=0.5):
    extra, first = W[:, 0, 1] > threshold, W[:, 0, 0] > threshold
    return torch.where(~extra, 0, torch.where(~first, 1, 2))


def classify_phase_features_swapped(W, threshold=0.5):
    norms = W.norm(dim=1)
    extra, first = norms[:, 0] > threshold, norms[:, 1] > threshold
    return torch.where(~extra, 0, torch.where(~first, 1, 2))


# generate_correlated_batch
def correlated_same_values(batch_size, pair_probability):
    n_inst, n_pairs = pair_probability.shape
    present = torch.rand(batch_size, n_inst, n_pairs) < pair_probability
    return torch.where(present, torch.rand(batch_size, n_inst, n_pairs), 0.0).repeat_interleave(2, dim=-1)


def correlated_block_layout(batch_size, pair_probability):
    n_inst, n_pairs = pair_probability.shape
    present = (torch.rand(batch_size, n_inst, n_pairs) < pair_probability).repeat(1, 1, 2)
    return torch.where(present, torch.rand(batch_size, n_inst, 2 * n_pairs), 0.0)


# generate_anticorrelated_batch
def anticorrelated_pair_active_with_p(batch_size, pair_probability):
    n_inst, n_pairs = pair_probability.shape
    active = torch.rand(batch_size, n_inst, n_pairs) < pair_probability
    first = torch.rand(batch_size, n_inst, n_pairs) < 0.5
    present = torch.stack([active & first, active & ~first], -1).flatten(-2)
    return torch.where(present, torch.rand(batch_size, n_inst, 2 * n_pairs), 0.0)


def anticorrelated_block_layout(batch_size, pair_probability):
    n_inst, n_pairs = pair_probability.shape
    active = torch.rand(batch_size, n_inst, n_pairs) < 2 * pair_probability
    first = torch.rand(batch_size, n_inst, n_pairs) < 0.5
    present = torch.cat([active & first, active & ~first], -1)
    return torch.where(present, torch.rand(batch_size, n_inst, 2 * n_pairs), 0.0)


def anticorrelated_drop_second_when_both(batch_size, pair_probability):
    p = pair_probability.repeat_interleave(2, dim=-1)
    present = torch.rand(batch_size, *p.shape) < p
    present[..., 1::2] &= ~present[..., 0::2]
    return torch.where(present, torch.rand(batch_size, *p.shape), 0.0)


# pair_cosines
def pair_cosines_unnormalised(W):
    return (W[:, :, 0::2] * W[:, :, 1::2]).sum(1)


def pair_cosines_block_pairs(W):
    W_hat = _normalise(W)
    half = W.shape[2] // 2
    return (W_hat[:, :, :half] * W_hat[:, :, half:]).sum(1)


# abs_model_forward
def abs_forward_no_hidden_relu(W1, W2, b_final, x):
    h = torch.einsum("knf,bkf->bkn", W1, x)
    return torch.relu(torch.einsum("kfn,bkn->bkf", W2, h) + b_final)


def abs_forward_no_final_relu(W1, W2, b_final, x):
    h = torch.relu(torch.einsum("knf,bkf->bkn", W1, x))
    return torch.einsum("kfn,bkn->bkf", W2, h) + b_final


# abs_solution_weights
def abs_weights_subtract_negative_neuron(n_features):
    signs = torch.tensor([1.0, -1.0]).repeat(n_features)
    W1 = torch.eye(n_features).repeat_interleave(2, dim=0) * signs[:, None]
    return W1, W1.T.clone()


def abs_weights_positive_neurons_only(n_features):
    return torch.eye(n_features).repeat_interleave(2, dim=0), torch.eye(n_features).repeat_interleave(2, dim=1)


# train_abs_model
def _train_abs(importance, feature_probability, d_mlp, steps, batch_size, lr, seed, signed=True, target_abs=True,
               train_W2=True, abs_W2=True):
    torch.manual_seed(seed)
    n_inst, n_feats = importance.shape
    scale = (2 / (d_mlp + n_feats)) ** 0.5
    W1 = (torch.randn(n_inst, d_mlp, n_feats) * scale).requires_grad_()
    W2 = torch.randn(n_inst, n_feats, d_mlp) * scale
    W2 = (W2.abs() if abs_W2 else W2).requires_grad_(train_W2)
    b = torch.zeros(n_inst, n_feats, requires_grad=True)
    opt = torch.optim.Adam([W1, W2, b], lr=lr)
    for _ in range(steps):
        x = _batch(batch_size, feature_probability)
        if signed:
            x = x * (2 * torch.randint(0, 2, x.shape) - 1)
        out = torch.relu(torch.einsum("kfn,bkn->bkf", W2, torch.relu(torch.einsum("knf,bkf->bkn", W1, x))) + b)
        target = x.abs() if target_abs else x
        loss = (importance * (target - out) ** 2).sum(-1).mean(0).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W1.detach(), W2.detach(), b.detach()


def train_abs_model_target_x(importance, feature_probability, d_mlp, steps=3000, batch_size=256, lr=3e-3, seed=0):
    return _train_abs(importance, feature_probability, d_mlp, steps, batch_size, lr, seed, target_abs=False)


def train_abs_model_unsigned_inputs(importance, feature_probability, d_mlp, steps=3000, batch_size=256, lr=3e-3, seed=0):
    return _train_abs(importance, feature_probability, d_mlp, steps, batch_size, lr, seed, signed=False)


def train_abs_model_W2_not_trained(importance, feature_probability, d_mlp, steps=3000, batch_size=256, lr=3e-3, seed=0):
    # W2 created with requires_grad=False: Adam silently skips it and it keeps its initial values
    return _train_abs(importance, feature_probability, d_mlp, steps, batch_size, lr, seed, train_W2=False)


def train_abs_model_signed_W2_init(importance, feature_probability, d_mlp, steps=3000, batch_size=256, lr=3e-3, seed=0):
    # forgot the absolute value of W2's initialisation
    return _train_abs(importance, feature_probability, d_mlp, steps, batch_size, lr, seed, abs_W2=False)


# explained_variance
def explained_variance_over_mean_square(target, prediction):
    return 1 - (target - prediction).pow(2).mean(0) / target.pow(2).mean(0)


def explained_variance_unnormalised(target, prediction):
    return 1 - (target - prediction).pow(2).mean(0)


# sae_forward
def sae_forward_no_centering(h, W_enc, b_enc, W_dec, b_dec):
    latents = torch.relu(h @ W_enc.T + b_enc)
    return latents, latents @ W_dec.T + b_dec


def sae_forward_no_relu(h, W_enc, b_enc, W_dec, b_dec):
    latents = (h - b_dec) @ W_enc.T + b_enc
    return latents, latents @ W_dec.T + b_dec


def sae_forward_tied_encoder(h, W_enc, b_enc, W_dec, b_dec):
    latents = torch.relu((h - b_dec) @ W_dec + b_enc)
    return latents, latents @ W_dec.T + b_dec


# sae_loss
def sae_loss_mean_over_d_in(h, h_hat, latents, l1_coeff):
    return (h_hat - h).pow(2).mean() + l1_coeff * latents.abs().sum(-1).mean()


def sae_loss_l2_penalty(h, h_hat, latents, l1_coeff):
    return (h_hat - h).pow(2).sum(-1).mean() + l1_coeff * latents.pow(2).sum(-1).mean()


# dead_latents
def dead_latents_inverted(latents):
    return (latents > 0).any(0)


def dead_latents_zero_on_any_sample(latents):
    return (latents == 0).any(0)


# resample_dead_latents
def _resample(h, W_enc, b_enc, W_dec, b_dec, dead, use_residual=True, scale=0.2, largest=True, in_place=False):
    if not in_place:
        W_enc, b_enc, W_dec, b_dec = (t.detach().clone() for t in (W_enc, b_enc, W_dec, b_dec))
    with torch.no_grad():
        n_dead = int(dead.sum())
        if n_dead == 0:
            return W_enc, b_enc, W_dec, b_dec
        latents = torch.relu((h - b_dec) @ W_enc.T + b_enc)
        residual = h - (latents @ W_dec.T + b_dec)
        idx = residual.pow(2).sum(-1).topk(n_dead, largest=largest).indices
        source = residual[idx] if use_residual else h[idx]
        d = source / source.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive_norm = W_enc[~dead].norm(dim=-1).mean() if (~dead).any() else torch.tensor(1.0)
        W_dec[:, dead] = d.T
        W_enc[dead] = scale * alive_norm * d
        b_enc[dead] = 0.0
    return W_enc, b_enc, W_dec, b_dec


def resample_towards_inputs_not_residuals(h, W_enc, b_enc, W_dec, b_dec, dead):
    return _resample(h, W_enc, b_enc, W_dec, b_dec, dead, use_residual=False)


def resample_full_encoder_norm(h, W_enc, b_enc, W_dec, b_dec, dead):
    return _resample(h, W_enc, b_enc, W_dec, b_dec, dead, scale=1.0)


def resample_best_reconstructed(h, W_enc, b_enc, W_dec, b_dec, dead):
    return _resample(h, W_enc, b_enc, W_dec, b_dec, dead, largest=False)


def resample_in_place(h, W_enc, b_enc, W_dec, b_dec, dead):
    return _resample(h, W_enc, b_enc, W_dec, b_dec, dead, in_place=True)


def resample_alive_latents(h, W_enc, b_enc, W_dec, b_dec, dead):
    # `~dead` where `dead` was meant: the alive latents are overwritten, the dead ones stay dead
    return _resample(h, W_enc, b_enc, W_dec, b_dec, ~dead)


# train_sae
def _train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed, renormalise="every step",
               resample=True, which="dead", track="window"):
    torch.manual_seed(seed)
    d_in = h_data.shape[1]
    W_dec = torch.randn(d_in, d_sae)
    W_dec = W_dec / W_dec.norm(dim=0, keepdim=True)
    params = [t.clone().requires_grad_() for t in (W_dec.T.clone(), torch.zeros(d_sae), W_dec, torch.zeros(d_in))]
    opt = torch.optim.Adam(params, lr=lr)
    dead = torch.ones(d_sae, dtype=torch.bool)
    n_resampled = 0
    for step in range(steps):
        h = h_data[torch.randint(0, h_data.shape[0], (batch_size,))]
        latents = torch.relu((h - params[3]) @ params[0].T + params[1])
        h_hat = latents @ params[2].T + params[3]
        loss = (h_hat - h).pow(2).sum(-1).mean() + l1_coeff * latents.abs().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if renormalise == "every step":
            with torch.no_grad():
                params[2] /= params[2].norm(dim=0, keepdim=True)
        fired = (latents > 0).any(0)
        if track == "window":
            dead &= ~fired
        elif track == "last batch":
            dead = ~fired
        # track == "never": `dead` stays all True
        if (step + 1) % resample_every == 0:
            if resample and step + 1 <= steps // 2 and dead.any():
                chosen = dead if which == "dead" else ~dead
                params = [t.clone().requires_grad_() for t in _resample(h, *params, chosen)]
                opt = torch.optim.Adam(params, lr=lr)
                n_resampled += int(dead.sum())
            dead = torch.ones(d_sae, dtype=torch.bool)
    if renormalise == "at the end":
        with torch.no_grad():
            params[2] /= params[2].norm(dim=0, keepdim=True)
    return (*(t.detach() for t in params), n_resampled)


def train_sae_without_decoder_renormalisation(h_data, d_sae, l1_coeff=0.3, steps=2000, batch_size=256, lr=3e-2,
                                              resample_every=100, seed=0):
    return _train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed, renormalise="never")


def train_sae_renormalises_only_at_the_end(h_data, d_sae, l1_coeff=0.3, steps=2000, batch_size=256, lr=3e-2,
                                           resample_every=100, seed=0):
    # unit-norm columns when returned, but during training the decoder grows and the latents shrink
    return _train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed, renormalise="at the end")


def train_sae_without_resampling(h_data, d_sae, l1_coeff=0.3, steps=2000, batch_size=256, lr=3e-2, resample_every=100,
                                 seed=0):
    return _train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed, resample=False)


def train_sae_resamples_alive_latents(h_data, d_sae, l1_coeff=0.3, steps=2000, batch_size=256, lr=3e-2,
                                      resample_every=100, seed=0):
    # passes `~dead` to resample_dead_latents (and still counts the dead ones)
    return _train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed, which="alive")


def train_sae_never_tracks_dead_latents(h_data, d_sae, l1_coeff=0.3, steps=2000, batch_size=256, lr=3e-2,
                                        resample_every=100, seed=0):
    # the window's dead mask is never updated, so every latent is "dead" and resampled at each window end
    return _train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed, track="never")


def train_sae_dead_on_last_batch_only(h_data, d_sae, l1_coeff=0.3, steps=2000, batch_size=256, lr=3e-2,
                                      resample_every=100, seed=0):
    # resamples the latents that did not fire on the window's last batch, not on every batch of the window
    return _train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed, track="last batch")


# feature_recovery
def feature_recovery_absolute_cosine(W_dec, W_features):
    return (_normalise(W_features, 0).T @ _normalise(W_dec, 0)).abs().max(dim=1).values


def feature_recovery_per_latent(W_dec, W_features):
    return (_normalise(W_features, 0).T @ _normalise(W_dec, 0)).max(dim=0).values


def feature_recovery_unnormalised_decoder(W_dec, W_features):
    return (_normalise(W_features, 0).T @ W_dec).max(dim=1).values


WRONG = {
    "generate_batch": [generate_batch_probability_as_sparsity, generate_batch_one_mask_per_sample,
                       generate_batch_binary_values],
    "toy_forward": [toy_forward_no_relu, toy_forward_bias_after_relu, toy_forward_relu_on_hidden_too],
    "importance_weighted_loss": [loss_mean_over_features, loss_importance_squared, loss_sum_over_batch],
    "train_toy_model": [train_toy_model_without_zero_grad, train_toy_model_probability_as_sparsity,
                        train_toy_model_unseeded, train_toy_model_init_variance_as_scale,
                        train_toy_model_bias_not_trained, train_toy_model_ignores_correlation],
    "superposition_per_feature": [superposition_including_self, superposition_unnormalised,
                                  superposition_normalises_the_other_feature],
    "consecutive_angles": [angles_without_wraparound, angles_in_radians, angles_in_feature_order],
    "count_antipodal_pairs": [antipodal_ordered_pairs, antipodal_dot_product, antipodal_ignores_threshold],
    "dimensions_per_feature": [dimensions_per_feature_uses_n, dimensions_per_feature_unsquared_norm],
    "feature_dimensionality": [dimensionality_excludes_self, dimensionality_unnormalised_dot,
                               dimensionality_divides_zero_by_zero],
    "phase_diagram_instances": [phase_instances_density_major, phase_instances_swapped_columns],
    "classify_phase": [classify_phase_signed_weights, classify_phase_features_swapped],
    "generate_correlated_batch": [correlated_same_values, correlated_block_layout],
    "generate_anticorrelated_batch": [anticorrelated_pair_active_with_p, anticorrelated_block_layout,
                                      anticorrelated_drop_second_when_both],
    "pair_cosines": [pair_cosines_unnormalised, pair_cosines_block_pairs],
    "abs_model_forward": [abs_forward_no_hidden_relu, abs_forward_no_final_relu],
    "abs_solution_weights": [abs_weights_subtract_negative_neuron, abs_weights_positive_neurons_only],
    "train_abs_model": [train_abs_model_target_x, train_abs_model_unsigned_inputs, train_abs_model_W2_not_trained,
                        train_abs_model_signed_W2_init],
    "explained_variance": [explained_variance_over_mean_square, explained_variance_unnormalised],
    "sae_forward": [sae_forward_no_centering, sae_forward_no_relu, sae_forward_tied_encoder],
    "sae_loss": [sae_loss_mean_over_d_in, sae_loss_l2_penalty],
    "dead_latents": [dead_latents_inverted, dead_latents_zero_on_any_sample],
    "resample_dead_latents": [resample_towards_inputs_not_residuals, resample_full_encoder_norm,
                              resample_best_reconstructed, resample_in_place, resample_alive_latents],
    "train_sae": [train_sae_without_decoder_renormalisation, train_sae_renormalises_only_at_the_end,
                  train_sae_without_resampling, train_sae_resamples_alive_latents, train_sae_never_tracks_dead_latents,
                  train_sae_dead_on_last_batch_only],
    "feature_recovery": [feature_recovery_absolute_cosine, feature_recovery_per_latent,
                         feature_recovery_unnormalised_decoder],
}
