"""Session fixtures for chapter 5: models trained once with the reference solutions, with the notebook's
settings. Hidden checks compare learner functions on them; test_science.py checks what they show."""

from __future__ import annotations

import pytest
import torch

from tests.harness import load_impl

CHAPTER = "05_superposition"

# The notebook's settings (section 1): 5 features in 2 dimensions, importance 0.9^i, 8 sparsities.
TOY_FEATURES, TOY_HIDDEN, TOY_INST = 5, 2, 8
TOY_STEPS, TOY_BATCH, TOY_LR = 2000, 512, 1e-2
# Section 4: 2 pairs in 2 dimensions.
CORR_DENSITIES = (0.3, 0.1, 0.03)
# Section 5: |x| for 20 features with 10 neurons.
ABS_FEATURES, ABS_NEURONS, ABS_DENSITIES = 20, 10, (1.0, 0.3, 0.1, 0.03, 0.01)
# Section 6: an SAE on the pentagon's hidden activations.
SAE_LATENTS, SAE_PROBABILITY, SAE_SAMPLES = 10, 0.05, 20_000


def toy_settings():
    importance = (0.9 ** torch.arange(TOY_FEATURES))[None, :].expand(TOY_INST, TOY_FEATURES)
    probability = (50 ** -torch.linspace(0, 1, TOY_INST))[:, None].expand(TOY_INST, TOY_FEATURES)
    return importance, probability


def train_toy(solutions, seed: int = 0):
    importance, probability = toy_settings()
    return solutions.train_toy_model(importance, probability, TOY_HIDDEN, steps=TOY_STEPS, batch_size=TOY_BATCH,
                                     lr=TOY_LR, seed=seed)


def train_corr(solutions, correlation: str, seed: int = 0):
    """(W, b_final) of section 4's run for one correlation."""
    probability = torch.tensor(CORR_DENSITIES)[:, None].expand(len(CORR_DENSITIES), 4)
    return solutions.train_toy_model(torch.ones(len(CORR_DENSITIES), 4), probability, 2, steps=2000, batch_size=512,
                                     lr=1e-2, seed=seed, correlation=correlation)


def sweep_settings():
    """Section 2's sweep: 24 features of equal importance in 4 dimensions, 16 sparsities."""
    probability = (50 ** -torch.linspace(0, 1, 16))[:, None].expand(16, 24)
    return torch.ones(16, 24), probability


# Section 3's phase diagram
PHASE_GRID, PHASE_COPIES = 7, 4


def train_phase(solutions):
    """The notebook's phase diagram: phases [relative importance, density] of the best of 4 copies per cell."""
    rel, dens = 10 ** torch.linspace(-1, 1, PHASE_GRID), 10 ** torch.linspace(0, -1.5, PHASE_GRID)
    importance, probability = solutions.phase_diagram_instances(rel, dens)
    importance, probability = importance.repeat(PHASE_COPIES, 1), probability.repeat(PHASE_COPIES, 1)
    W, b = solutions.train_toy_model(importance, probability, d_hidden=1, steps=2000, batch_size=256, lr=1e-2, seed=0)
    with torch.no_grad():  # the notebook draws its evaluation batch right after training
        x = solutions.generate_batch(20_000, probability)
        loss = solutions.importance_weighted_loss(solutions.toy_forward(W, b, x), x, importance)
    best = loss.reshape(PHASE_COPIES, -1).argmin(0)
    W_best = W.reshape(PHASE_COPIES, -1, 1, 2)[best, torch.arange(PHASE_GRID ** 2)]
    return rel, dens, solutions.classify_phase(W_best).reshape(PHASE_GRID, PHASE_GRID)


def train_abs(solutions, seed: int = 0):
    n_inst = len(ABS_DENSITIES)
    importance = (0.8 ** torch.arange(ABS_FEATURES))[None, :].expand(n_inst, ABS_FEATURES)
    probability = torch.tensor(ABS_DENSITIES)[:, None].expand(n_inst, ABS_FEATURES)
    W1, W2, b = solutions.train_abs_model(importance, probability, ABS_NEURONS, steps=3000, batch_size=256, lr=3e-3,
                                          seed=seed)
    torch.manual_seed(seed + 1000)
    x = solutions.generate_batch(50_000, probability)
    x = x * (2 * torch.randint(0, 2, x.shape) - 1)
    ev = solutions.explained_variance(x.abs(), solutions.abs_model_forward(W1, W2, b, x))
    return W1, W2, b, ev.clamp(min=0).sum(-1)


def sae_data(solutions, W_toy, seed: int = 0):
    torch.manual_seed(seed)
    x = solutions.generate_batch(SAE_SAMPLES, torch.full((1, W_toy.shape[1]), SAE_PROBABILITY))[:, 0]
    return x @ W_toy.T


def train_sae(solutions, h, seed: int = 0):
    return solutions.train_sae(h, SAE_LATENTS, l1_coeff=0.3, steps=2000, batch_size=256, lr=3e-2, resample_every=100,
                               seed=seed)


@pytest.fixture(scope="session")
def solutions():
    """The reference solutions (a module of their own, not shared with `impl`)."""
    return load_impl(CHAPTER, "solutions")


@pytest.fixture(scope="session")
def toy_run(solutions):
    """(W, b_final) of the notebook's 8-instance run with 5 features in 2 dimensions, seed 0."""
    return train_toy(solutions)


@pytest.fixture(scope="session")
def sweep_W(solutions):
    """W of a short sparsity sweep with 24 features in 4 dimensions (16 instances)."""
    probability = (50 ** -torch.linspace(0, 1, 16))[:, None].expand(16, 24)
    W, _ = solutions.train_toy_model(torch.ones(16, 24), probability, 4, steps=400, batch_size=256, lr=1e-2, seed=0)
    return W


@pytest.fixture(scope="session")
def corr_models(solutions):
    """(W, b_final) of the correlated and of the anticorrelated run (section 4), seed 0."""
    return train_corr(solutions, "correlated"), train_corr(solutions, "anticorrelated")


@pytest.fixture(scope="session")
def corr_runs(corr_models):
    """W of the correlated and of the anticorrelated run (section 4), seed 0."""
    return corr_models[0][0], corr_models[1][0]


@pytest.fixture(scope="session")
def sweep_run(solutions):
    """W of section 2's sweep with the notebook's settings (2000 steps)."""
    importance, probability = sweep_settings()
    W, _ = solutions.train_toy_model(importance, probability, 4, steps=2000, batch_size=256, lr=1e-2, seed=0)
    return W


@pytest.fixture(scope="session")
def abs_run(solutions):
    """(W1, W2, b_final, features computed per instance) of section 5's run, seed 0."""
    return train_abs(solutions)


@pytest.fixture(scope="session")
def sae_h(solutions, toy_run):
    """Hidden activations of the pentagon (the sparsest instance) on fresh sparse inputs."""
    return sae_data(solutions, toy_run[0][-1])


@pytest.fixture(scope="session")
def sae_run(solutions, sae_h):
    """(W_enc, b_enc, W_dec, b_dec, n_resampled) of the SAE trained on sae_h, seed 0."""
    return train_sae(solutions, sae_h)


# Reference runs that hidden checks compare against, trained once per session (the known-wrong-variant
# runner calls each check once per variant).
@pytest.fixture(scope="session")
def ref_dense_model(solutions):
    """The reference toy model of test_train_toy_model_reaches_the_reference_loss."""
    importance, probability = torch.tensor([[1.0, 0.8, 0.5], [1.0, 1.0, 0.0]]), torch.ones(2, 3)
    return solutions.train_toy_model(importance, probability, 2, steps=800, batch_size=256, lr=1e-2, seed=1)


@pytest.fixture(scope="session")
def ref_independent_pairs_model(solutions):
    """A reference toy model of 4 features trained on independent features (the correlation check's baseline)."""
    return solutions.train_toy_model(torch.ones(8, 4), torch.full((8, 4), 0.3), 2, correlation="none", steps=300,
                                     batch_size=256, lr=1e-2, seed=0)


@pytest.fixture(scope="session")
def ref_short_sae(solutions):
    """The reference SAE of test_train_sae_returned_sae_reconstructs_its_data."""
    from tests.ch05_superposition.test_hidden import SHORT_SAE, _pentagon_h

    return solutions.train_sae(_pentagon_h(4000), 10, **SHORT_SAE)
