"""Science checks: the reference solutions, trained with the notebook's settings, show what the chapter's "what
you should see" paragraphs say (Elhage et al. 2022; Bricken et al. 2023). Each test names the section whose
claims it backs. Thresholds are the claims with margins that make them true on the reference run, not values
copied from it."""

import torch

from tests.ch05_superposition.conftest import (ABS_DENSITIES, ABS_FEATURES, ABS_NEURONS, CORR_DENSITIES,
                                               TOY_FEATURES, TOY_HIDDEN, sweep_settings, toy_settings, train_phase)


def _represented(W, threshold=0.5):
    return W.norm(dim=0) > threshold


def _normalised(W):
    return W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)


# ---------------------------------------------------------------------------------------------- section 1

def test_generate_batch_demo_fraction_nonzero_tracks_probability(solutions):
    probability = torch.tensor([1.0, 0.3, 0.05])[:, None].expand(3, 5)
    x = solutions.generate_batch(10_000, probability)
    frac = (x != 0).float().mean((0, 2))
    assert torch.allclose(frac, probability[:, 0], atol=0.01), f"fraction nonzero per instance {frac.tolist()}"


def test_dense_instance_represents_exactly_two_orthogonal_features(toy_run):
    W = toy_run[0][0]
    kept = _represented(W)
    assert int(kept.sum()) == 2, f"the dense instance should represent exactly 2 features; norms {W.norm(dim=0).tolist()}"
    assert bool(kept[:2].all()), "the two features the dense instance keeps should be the two most important ones"
    assert float(W.norm(dim=0)[2:].max()) < 0.1, f"the other three are dropped (length ~0); norms {W.norm(dim=0).tolist()}"
    a, b = W[:, kept].T
    cos = float(a @ b / (a.norm() * b.norm()))
    assert abs(cos) < 0.1, f"the dense instance's two features should be orthogonal; cosine {cos:.3f}"


def test_sparsest_instances_represent_all_five_features_on_a_pentagon(solutions, toy_run):
    _, probability = toy_settings()
    for k in torch.nonzero(probability[:, 0] <= 0.11)[:, 0].tolist():
        W = toy_run[0][k]
        assert bool(_represented(W).all()), f"instance {k} should represent all 5 features; norms {W.norm(dim=0).tolist()}"
        gaps = solutions.consecutive_angles(W)
        assert len(gaps) == 5 and bool(((gaps - 72).abs() <= 10).all()), (
            f"consecutive angles of instance {k} should be 72 ± 10 degrees; got {gaps.tolist()}")


def test_antipodal_pairs_appear_between_dense_and_pentagon(solutions, toy_run):
    pairs = solutions.count_antipodal_pairs(toy_run[0])
    represented = (toy_run[0].norm(dim=1) > 0.5).sum(-1)
    assert int(pairs[0]) == 0 and int(pairs[-1]) == 0, f"no antipodal pairs when dense or on the pentagon; got {pairs.tolist()}"
    assert bool(((pairs == 2) & (represented == 4)).any()), (
        f"at intermediate sparsity 4 features should form 2 antipodal pairs; pairs {pairs.tolist()}, represented "
        f"{represented.tolist()}")


# ---------------------------------------------------------------------------------------------- section 2

def test_superposition_bars_dark_when_dense_and_mostly_yellow_when_sparse(solutions, toy_run):
    W = toy_run[0]
    sup, norms = solutions.superposition_per_feature(W), W.norm(dim=1)
    dense = norms[0] > 0.5
    assert bool(((norms[0][dense] - 1).abs() < 0.1).all()) and float(sup[0][dense].max()) < 0.05, (
        f"dense: two bars of length ~1 with no superposition; norms {norms[0].tolist()}, superposition {sup[0].tolist()}")
    for k in range(1, W.shape[0]):
        kept = norms[k] > 0.5
        assert int(kept.sum()) > 2, f"sparser instances represent more than 2 features; instance {k}: {norms[k].tolist()}"
        assert float((sup[k][kept] > 0.5).float().mean()) >= 0.5, (
            f"most represented features of instance {k} should share their direction (superposition > 0.5); "
            f"{sup[k].tolist()}")
    assert bool((sup[-1] > 0.5).all()), f"on the pentagon every feature is in superposition; {sup[-1].tolist()}"


def test_feature_dimensionality_never_exceeds_one_and_sums_to_at_most_m(solutions, toy_run, sweep_run):
    for W in (toy_run[0], sweep_run):
        D = solutions.feature_dimensionality(W)
        assert not torch.isnan(D).any(), "D_i should never be NaN"
        assert float(D.max()) <= 1 + 1e-5, f"D_i never exceeds 1; max {float(D.max())}"
        assert bool((D.sum(-1) <= W.shape[1] + 1e-4).all()), f"sum_i D_i <= m = {W.shape[1]}; got {D.sum(-1).tolist()}"
    D = solutions.feature_dimensionality(toy_run[0][-1:])
    assert bool(((D - 0.4).abs() < 0.05).all()), f"on the pentagon every D_i should be close to 2/5; got {D.tolist()}"
    dense = solutions.dimensions_per_feature(toy_run[0][:1])
    assert abs(float(dense) - 1) < 0.05, f"the dense instance should use about 1 dimension per feature; got {float(dense):.3f}"
    assert float(solutions.dimensions_per_feature(toy_run[0][-1:])) < 0.5, "the pentagon uses less than 1/2 dimension per feature"


def test_sweep_dense_instance_learns_a_smeared_rank_m_projection(sweep_run):
    W = sweep_run[0]
    eig = torch.linalg.eigvalsh(W.T @ W)
    m = W.shape[0]
    assert bool(((eig[-m:] - 1).abs() < 0.05).all()) and float(eig[:-m].abs().max()) < 0.05, (
        f"dense, equal importance: WᵀW should have m = {m} eigenvalues ~1 and the rest ~0 (a rank-m projection); "
        f"got {eig.tolist()}")
    norms = W.norm(dim=0)
    assert float(norms.max()) < 0.85, f"no feature has a whole dimension (every ||W_i|| < 0.85); norms {norms.tolist()}"
    assert int((norms > 0.2).sum()) > W.shape[1] // 2, f"the dimensions are smeared over most features; norms {norms.tolist()}"


def test_sweep_dimensions_per_feature_falls_with_plateaus_at_one_half_and_one_third(solutions, sweep_run):
    _, probability = sweep_settings()
    x = 1 / probability[:, 0]
    dpf = solutions.dimensions_per_feature(sweep_run)
    assert abs(float(dpf[0]) - 1) < 0.05, f"dense: 1 dimension per feature; got {float(dpf[0]):.3f}"
    assert bool((dpf[1:] <= dpf[:-1] + 0.02).all()), f"dimensions per feature should fall as sparsity grows; {dpf.tolist()}"
    half = (x >= 2) & (x <= 3)
    third = (x >= 4.5) & (x <= 6.5)
    assert int(half.sum()) >= 2 and bool(((dpf[half] - 1 / 2).abs() < 0.03).all()), (
        f"at 1/(1-S) between 2 and 3 dimensions per feature should linger near 1/2; {dpf.tolist()}")
    assert int(third.sum()) >= 2 and bool(((dpf[third] - 1 / 3).abs() < 0.03).all()), (
        f"at 1/(1-S) between 5 and 6 dimensions per feature should linger near 1/3; {dpf.tolist()}")
    assert float(dpf[-1]) < 0.2, f"and keep dropping; sparsest {float(dpf[-1]):.3f}"


def test_sweep_feature_dimensionality_plateaus_at_one_half_and_one_third(solutions, sweep_run):
    _, probability = sweep_settings()
    x = 1 / probability[:, 0]
    D = solutions.feature_dimensionality(sweep_run)
    represented = sweep_run.norm(dim=1) > 0.5
    pairs = solutions.count_antipodal_pairs(sweep_run)
    for k in torch.nonzero((x >= 1.6) & (x <= 2.9))[:, 0].tolist():
        d = D[k][represented[k]]
        assert len(d) == 8 and bool(((d - 1 / 2).abs() < 0.05).all()) and int(pairs[k]) == 4, (
            f"1/(1-S) = {float(x[k]):.1f}: 8 features with D_i ~ 1/2 in 4 antipodal pairs; D {d.tolist()}, pairs {int(pairs[k])}")
    for k in torch.nonzero((x >= 4.5) & (x <= 6.5))[:, 0].tolist():
        d, Wk = D[k][represented[k]], sweep_run[k]
        assert len(d) == 12 and bool(((d - 1 / 3).abs() < 0.05).all()), (
            f"1/(1-S) = {float(x[k]):.1f}: 12 features with D_i ~ 1/3; got {d.tolist()}")
        assert int(pairs[k]) == 0, "the 1/3 plateau has no antipodal pairs"
        assert bool(((Wk.norm(dim=0)[represented[k]] - 1).abs() < 0.1).all()), "its 12 features have norms close to 1"
        frame = torch.linalg.eigvalsh(Wk @ Wk.T)
        assert bool(((frame - 3).abs() < 0.3).all()), f"W Wᵀ should be close to 3·I (a tight frame); eigenvalues {frame.tolist()}"
    d = D[-1][represented[-1]]
    assert abs(float(d.median()) - 0.2) < 0.04 and float(d.max()) < 0.25, f"sparsest: D_i about 1/5; got {d.tolist()}"


# ---------------------------------------------------------------------------------------------- section 3

def test_phase_diagram_matches_the_papers_shape(solutions):
    rel, dens, phases = train_phase(solutions)  # phases[r, d]
    dense = phases[:, 0]
    assert not bool((dense == 2).any()), f"no superposition at density 1; phases at density 1: {dense.tolist()}"
    assert bool((dense[rel < 0.99] == 0).all()) and bool((dense[rel > 1.01] == 1).all()), (
        f"density 1: not learned (0) below relative importance 1, dedicated (1) above; got {dense.tolist()}")
    one = int((rel - 1).abs().argmin())
    widths = []
    for d in range(1, len(dens)):
        red = torch.nonzero(phases[:, d] == 2)[:, 0]
        widths.append(len(red))
        if len(red):
            assert int(red.max() - red.min()) + 1 == len(red) and int(red.min()) <= one <= int(red.max()), (
                f"density {float(dens[d]):.2g}: superposition should be one block around relative importance 1; "
                f"phases {phases[:, d].tolist()}")
    assert widths == sorted(widths) and widths[-1] == len(rel), (
        f"the superposition region should widen going sparser until it covers the whole row; widths {widths}")
    assert widths[0] >= 1, "superposition should open at the first density below 1"


# ---------------------------------------------------------------------------------------------- section 4

def test_anticorrelated_pairs_antipodal_only_at_the_highest_density(solutions, corr_models):
    (W_anti, b_anti) = corr_models[1]
    densest = CORR_DENSITIES.index(max(CORR_DENSITIES))
    cos = solutions.pair_cosines(W_anti)
    assert bool((cos[densest] < -0.9).all()), f"anticorrelated pairs at density 0.3 should be antipodal; {cos.tolist()}"
    Wh = _normalised(W_anti[densest])
    across = (Wh[:, :2].T @ Wh[:, 2:]).abs()
    assert float(across.max()) < 0.1, f"at density 0.3 the two pairs take orthogonal lines; cosines across {across.tolist()}"
    probability = torch.tensor(CORR_DENSITIES)[:, None].expand(len(CORR_DENSITIES), 4)
    torch.manual_seed(5)
    x = solutions.sample_features(100_000, probability, "anticorrelated")
    importance = torch.ones(len(CORR_DENSITIES), 4)
    loss = solutions.importance_weighted_loss(solutions.toy_forward(W_anti, b_anti, x), x, importance)
    zero_loss = x.pow(2).sum(-1).mean(0)
    for k in range(len(CORR_DENSITIES)):
        if k == densest:
            continue
        assert bool((cos[k].abs() < 0.1).all()), f"density {CORR_DENSITIES[k]}: pairs orthogonal within; {cos[k].tolist()}"
        assert int(solutions.count_antipodal_pairs(W_anti[k:k + 1])) == 2, "each feature opposite one of the other pair"
        # exchange the partners: feature 0 with its antipode first, then the rest with theirs
        C = _normalised(W_anti[k]).T @ _normalised(W_anti[k])
        a0 = int(C[0].argmin())
        j = [i for i in range(4) if i not in (0, a0)][0]
        perm = torch.tensor([0, a0, j, int(C[j].argmin())])
        Ws, bs = W_anti[k][:, perm][None], b_anti[k][perm][None]
        swapped = solutions.importance_weighted_loss(solutions.toy_forward(Ws, bs, x[:, k:k + 1]), x[:, k:k + 1],
                                                     importance[:1])
        assert float(swapped) < 0.1 * float(loss[k]) and float(swapped) < 0.01 * float(zero_loss[k]), (
            f"density {CORR_DENSITIES[k]}: with partners exchanged the loss should be close to 0 ({float(swapped):.2g} "
            f"vs the run's {float(loss[k]):.2g})")
        assert float(loss[k]) < 0.1 * float(zero_loss[k]), (
            f"density {CORR_DENSITIES[k]}: the run's square should leave only a few percent of the loss of predicting 0; "
            f"{float(loss[k]):.3g} of {float(zero_loss[k]):.3g}")


def test_correlated_pairs_orthogonal_when_sparse_and_merged_when_dense(solutions, corr_runs):
    W_corr = corr_runs[0]
    densest = CORR_DENSITIES.index(max(CORR_DENSITIES))
    cos = solutions.pair_cosines(W_corr)
    for k in range(len(CORR_DENSITIES)):
        if k == densest:
            continue
        assert bool((cos[k].abs() < 0.2).all()), (
            f"correlated pairs at density {CORR_DENSITIES[k]} should be orthogonal within each pair; cosines {cos[k].tolist()}")
        across = int(solutions.count_antipodal_pairs(W_corr[k:k + 1]))
        assert across == 2, f"the two correlated pairs should sit opposite each other (2 antipodal pairs); got {across}"
    assert bool((cos[densest] > 0.9).all()), f"at density 0.3 each pair merges onto one direction; {cos[densest].tolist()}"
    Wh = _normalised(W_corr[densest])
    assert abs(float(Wh[:, 0] @ Wh[:, 2])) < 0.1, "the two merged pairs take orthogonal directions"


# ---------------------------------------------------------------------------------------------- section 5

def test_abs_dense_computes_half_its_neurons_and_sparse_computes_more(abs_run):
    computed = abs_run[3]
    half = ABS_NEURONS / 2
    assert abs(float(computed[0]) - half) < 0.5, f"the dense model should compute d_mlp / 2 = {half} features; got {computed.tolist()}"
    sparse = torch.tensor(ABS_DENSITIES) <= 0.1
    assert bool((computed[sparse] > half + 0.5).all()), (
        f"models with density <= 0.1 should compute more than d_mlp / 2 features' worth; got {computed.tolist()}")


def _single_feature_outputs(solutions, W1, W2, b, k, value=0.8):
    """[feats, 2]: instance k's output i on the inputs +value e_i and -value e_i."""
    n_inst, n_feats = b.shape
    x = torch.zeros(2 * n_feats, n_inst, n_feats)
    x[torch.arange(n_feats), :, torch.arange(n_feats)] = value
    x[n_feats + torch.arange(n_feats), :, torch.arange(n_feats)] = -value
    y = solutions.abs_model_forward(W1, W2, b, x)[:, k]
    return torch.stack([y[torch.arange(n_feats), torch.arange(n_feats)],
                        y[n_feats + torch.arange(n_feats), torch.arange(n_feats)]], dim=1)


def test_abs_dense_model_is_monosemantic_and_sparse_models_polysemantic(solutions, abs_run):
    W1, W2, b, _ = abs_run
    torch.manual_seed(1000)
    probability = torch.tensor(ABS_DENSITIES)[:, None].expand(len(ABS_DENSITIES), ABS_FEATURES)
    x = solutions.generate_batch(50_000, probability)
    x = x * (2 * torch.randint(0, 2, x.shape) - 1)
    ev = solutions.explained_variance(x.abs(), solutions.abs_model_forward(W1, W2, b, x))
    computed = ev[0] > 0.9
    assert int(computed.sum()) == ABS_NEURONS // 2 and bool((ev[0][~computed] < 0.1).all()), (
        f"dense: d_mlp / 2 features computed, every other one dropped; explained variance {ev[0].tolist()}")
    A = W1[0]  # [neurons, feats]
    dominant = A.abs().max(dim=1).values / A.norm(dim=1)
    assert bool((dominant > 0.95).all()), "dense: every neuron reads one feature (monosemantic)"
    for f in torch.nonzero(computed)[:, 0].tolist():
        readers = A[:, f][A[:, f].abs() > 0.5]
        assert len(readers) == 2 and float(readers.max()) > 0 > float(readers.min()), (
            f"dense: computed feature {f} should have one neuron reading +x and one reading -x; weights {A[:, f].tolist()}")
    for k in torch.nonzero(torch.tensor(ABS_DENSITIES) <= 0.1)[:, 0].tolist():
        per_neuron = (W1[k].abs() > 0.5).sum(1)
        assert int(per_neuron.max()) >= 2, f"density {ABS_DENSITIES[k]}: some neuron reads several features"
    k = len(ABS_DENSITIES) - 1
    out = _single_feature_outputs(solutions, W1, W2, b, k)
    half = (ev[k] > 0.3) & (ev[k] < 0.65)
    one_sign = ((out[:, 0] - 0.8).abs() < 0.25) & (out[:, 1] < 0.1) | ((out[:, 1] - 0.8).abs() < 0.25) & (out[:, 0] < 0.1)
    assert int((half & one_sign).sum()) >= 2, (
        f"sparsest: some features are computed for one sign only (explained variance ~1/2); ev {ev[k].tolist()}, "
        f"outputs on ±0.8: {out.tolist()}")


# ---------------------------------------------------------------------------------------------- section 6

def test_sae_recovers_every_true_feature_and_resamples_dead_latents(solutions, sae_run, sae_h, toy_run):
    W_enc, b_enc, W_dec, b_dec, n_resampled = sae_run
    recovery = solutions.feature_recovery(W_dec, toy_run[0][-1])
    assert bool((recovery >= 0.9).all()), f"every true feature should have a decoder column with cosine >= 0.9; got {recovery.tolist()}"
    assert n_resampled > 0, "some latents should die and be resampled during the notebook's SAE run"
    assert torch.allclose(W_dec.norm(dim=0), torch.ones(W_dec.shape[1]), atol=1e-4), "decoder columns have unit norm"
    assert W_dec.shape[0] == TOY_HIDDEN, "the SAE reads the toy model's hidden layer"
    latents, _ = solutions.sae_forward(sae_h, *sae_run[:4])
    alive = ~solutions.dead_latents(latents)
    assert 0 < int((~alive).sum()), "some latents are still dead at the end (spare capacity)"


def test_sae_spare_latents_duplicate_features_and_fire_together(solutions, sae_run, sae_h, toy_run):
    W_toy = toy_run[0][-1]
    torch.manual_seed(0)  # the notebook's SAE data, and its true features
    x = solutions.generate_batch(sae_h.shape[0], torch.full((1, TOY_FEATURES), 0.05))[:, 0]
    assert torch.allclose(x @ W_toy.T, sae_h), "the fixture's SAE data are the notebook's"
    latents, _ = solutions.sae_forward(sae_h, *sae_run[:4])
    alive = ~solutions.dead_latents(latents)
    cos = _normalised(W_toy).T @ sae_run[2]  # [feature, latent]
    match = (cos > 0.9) & alive
    unmatched = int((~match.any(0) & alive).sum())
    assert unmatched <= 1, f"all alive latents but at most one point at a true feature; cosines {cos.tolist()}"
    copies = match.sum(1)
    assert int((copies == 2).sum()) >= 1 and int(alive.sum()) > TOY_FEATURES, (
        f"some features have two latents, so more latents are alive than there are features; copies {copies.tolist()}")
    for f in torch.nonzero(copies == 2)[:, 0].tolist():
        only_f = (x > 0).sum(-1).eq(1) & (x[:, f] > 0)
        both = (latents[only_f][:, match[f]] > 0).all(-1).float().mean()
        assert float(both) > 0.6, (
            f"on most inputs (about three in four) with only feature {f}, both of its latents should fire; {float(both):.2f}")
