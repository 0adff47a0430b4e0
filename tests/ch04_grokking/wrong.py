"""Known-wrong variants of chapter 4's exercises: the mistakes learners really make. Each must fail at least
one hidden check (tests/ch04_grokking/test_wrong_variants.py asserts it). They are self-contained: they do
not call the notebook's other functions (only micourse)."""

import math

import torch

from micourse.grokking import BETAS, LR, WARMUP_STEPS, WEIGHT_DECAY, FastModAddModel


# ------------------------------------------------------------------------------ shared correct pieces
def make_dataset(p):
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], 1), (a + b) % p


def train_test_split(p, frac_train, seed):
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n = int(frac_train * p * p)
    return perm[:n], perm[n:]


def _ce(logits, labels):
    return -logits.double().log_softmax(-1).gather(-1, labels[:, None]).mean()


def _basis(p):
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    b = torch.stack(rows)
    return (b / b.norm(dim=1, keepdim=True)).float()


def _directions(p, freqs):
    tokens, _ = make_dataset(p)
    s = (tokens[:, 0] + tokens[:, 1]).double()
    rows = [f(2 * math.pi * k * s / p) for k in freqs for f in (torch.cos, torch.sin)]
    d = torch.stack(rows)
    return d / d.norm(dim=1, keepdim=True)


def _train(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50, stop_at_test_acc=None,
           warmup=True, betas=BETAS, log_after_step=False, stop=True, lr_at=None, pass_weight_decay=True,
           zero_grad=True, test_on_train=False):
    tokens, labels = make_dataset(p)
    train_idx, test_idx = train_test_split(p, frac_train, seed)
    splits = {n: (tokens[i, 0], tokens[i, 1], labels[i]) for n, i in (("train", train_idx), ("test", test_idx))}
    model = FastModAddModel(p, seed=seed)
    if pass_weight_decay:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    else:  # AdamW's default weight decay (0.01), not the argument
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas)
    if test_on_train:
        splits["test"] = splits["train"]
    lr_at = lr_at or (lambda step: min(step / WARMUP_STEPS, 1.0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at) if warmup else None
    hist = {"epoch": [], "train_loss": [], "test_loss": [], "train_acc": [], "test_acc": []}

    def log(epoch):
        hist["epoch"].append(epoch)
        with torch.no_grad():
            for n, (a, b, y) in splits.items():
                out = model(a, b)
                hist[f"{n}_loss"].append(_ce(out, y).item())
                hist[f"{n}_acc"].append((out.argmax(-1) == y).float().mean().item())

    def step():
        a, b, y = splits["train"]
        loss = _ce(model(a, b), y)
        if zero_grad:
            opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()

    for epoch in range(epochs + 1):
        if log_after_step and epoch < epochs:
            step()
        if epoch % log_every == 0 or epoch == epochs:
            log(epoch)
            if stop and stop_at_test_acc is not None and hist["test_acc"][-1] >= stop_at_test_acc:
                break
        if epoch == epochs:
            break
        if not log_after_step:
            step()
    hist["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return hist


def _fractions(fourier_acts, products_only=False, keep_mean=False):
    p = fourier_acts.shape[0]
    sq = fourier_acts.pow(2)
    mean = 0.0 if keep_mean else sq[0, 0]
    total = sq.sum((0, 1)) - mean
    out = []
    for k in range(1, p // 2 + 1):
        idx = [2 * k - 1, 2 * k] if products_only else [0, 2 * k - 1, 2 * k]
        part = sq[idx][:, idx].sum((0, 1))
        out.append((part if products_only else part - mean) / total)
    return torch.stack(out, -1)


def _measures(states, p, frac_train, seed, key_freqs, excluded_on="train", restricted_on="all"):
    tokens, labels = make_dataset(p)
    train_idx, test_idx = train_test_split(p, frac_train, seed)
    where = {"train": train_idx, "test": test_idx, "all": torch.arange(p * p)}
    d = _directions(p, key_freqs)
    model = FastModAddModel(p)
    out = {k: [] for k in ("train_loss", "test_loss", "test_acc", "restricted_loss", "excluded_loss", "sum_sq_weights")}
    with torch.no_grad():
        for state in states:
            model.load_bridge_state_dict(state)
            logits = model(tokens[:, 0], tokens[:, 1]).double()
            proj = d.T @ (d @ logits)
            restricted, excluded = logits.mean(0, keepdim=True) + proj, logits - proj
            out["train_loss"].append(_ce(logits[train_idx], labels[train_idx]).item())
            out["test_loss"].append(_ce(logits[test_idx], labels[test_idx]).item())
            out["test_acc"].append((logits[test_idx].argmax(-1) == labels[test_idx]).double().mean().item())
            r, e = where[restricted_on], where[excluded_on]
            out["restricted_loss"].append(_ce(restricted[r], labels[r]).item())
            out["excluded_loss"].append(_ce(excluded[e], labels[e]).item())
            out["sum_sq_weights"].append(float(sum(v.double().pow(2).sum() for v in state.values())))
    return out


# ------------------------------------------------------------------------------------------- Part 1
def modular_addition_data_b_major(p):
    a, b = torch.arange(p).repeat(p), torch.arange(p).repeat_interleave(p)
    return torch.stack([a, b, torch.full_like(a, p)], 1), (a + b) % p


def modular_addition_data_without_mod(p):
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], 1), a + b


def modular_addition_data_equals_is_zero(p):
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.zeros_like(a)], 1), (a + b) % p


def split_indices_rounded(p, frac_train, seed=0):
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n = round(frac_train * p * p)
    return perm[:n], perm[n:]


def split_indices_sorted(p, frac_train, seed=0):
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n = int(frac_train * p * p)
    return perm[:n].sort().values, perm[n:].sort().values


def split_indices_unseeded_generator(p, frac_train, seed=0):
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed + 1))
    n = int(frac_train * p * p)
    return perm[:n], perm[n:]


def cross_entropy_float64_in_float32(logits, labels):
    return -logits.float().log_softmax(-1).gather(-1, labels[:, None]).mean().double()


def cross_entropy_float64_summed(logits, labels):
    return -logits.double().log_softmax(-1).gather(-1, labels[:, None]).sum()


def train_model_without_warmup(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50,
                               stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc, warmup=False)


def train_model_warmup_off_by_one(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50,
                                  stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc,
                  lr_at=lambda step: min((step + 1) / WARMUP_STEPS, 1.0))


def train_model_default_betas(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50,
                              stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc, betas=(0.9, 0.999))


def train_model_logs_after_the_update(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50,
                                      stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc, log_after_step=True)


def train_model_never_stops(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50,
                            stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc, stop=False)


def train_model_ignores_weight_decay(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50,
                                     stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc, pass_weight_decay=False)


def train_model_without_zero_grad(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0, log_every=50,
                                  stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc, zero_grad=False)


def train_model_tests_on_the_training_pairs(p, frac_train, epochs, lr=LR, weight_decay=WEIGHT_DECAY, seed=0,
                                            log_every=50, stop_at_test_acc=None):
    return _train(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc, test_on_train=True)


# ------------------------------------------------------------------------------------------- Part 2
def fourier_basis_unnormalised(p):
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    return torch.stack(rows).float()


def fourier_basis_sin_first(p):
    b = _basis(p)
    order = [0] + [i for k in range(1, p // 2 + 1) for i in (2 * k, 2 * k - 1)]
    return b[order]


def fourier_basis_without_two_pi(p):
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(k * x / p), torch.sin(k * x / p)]
    b = torch.stack(rows)
    return (b / b.norm(dim=1, keepdim=True)).float()


def embedding_in_fourier_basis_transposed(W_E, basis):
    return basis.T @ W_E[: basis.shape[0]]


def embedding_in_fourier_basis_drops_first_row(W_E, basis):
    return basis @ W_E[1:]


def frequency_shares_without_constant(fourier_embedding):
    sq = fourier_embedding.pow(2).sum(-1)
    return (sq[1::2] + sq[2::2]) / sq[1:].sum()


def frequency_shares_paired_from_row_0(fourier_embedding):
    sq = fourier_embedding.pow(2).sum(-1)
    return (sq[0:-1:2] + sq[1::2]) / sq.sum()


def frequency_shares_of_norms(fourier_embedding):
    n = fourier_embedding.norm(dim=-1)
    return (n[1::2] + n[2::2]) / n.sum()


def key_frequencies_zero_based(shares, threshold):
    return [int(i) for i in (shares >= threshold).nonzero().flatten()]


def key_frequencies_by_share(shares, threshold):
    order = shares.argsort(descending=True)
    return [int(i) + 1 for i in order if shares[i] >= threshold]


def key_frequencies_strict(shares, threshold):
    return [int(i) + 1 for i in (shares > threshold).nonzero().flatten()]


def mlp_activations_pre_relu(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return cache["blocks.0.mlp.hook_pre"][:, -1]


def mlp_activations_first_position(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return cache["blocks.0.mlp.hook_post"][:, 0]


def fourier_transform_2d_only_a(grid, basis):
    return torch.einsum("ia,ab...->ib...", basis, grid.to(basis.dtype))


def fourier_transform_2d_inverse(grid, basis):
    g = torch.einsum("ai,ab...->ib...", basis, grid.to(basis.dtype))
    return torch.einsum("bj,ib...->ij...", basis, g)


def fourier_transform_2d_swapped_axes(grid, basis):
    g = torch.einsum("ia,ab...->ib...", basis, grid.to(basis.dtype))
    return torch.einsum("jb,ib...->ji...", basis, g)


def neuron_frequency_fractions_with_mean(fourier_acts):
    return _fractions(fourier_acts, keep_mean=True)


def neuron_frequency_fractions_products_only(fourier_acts):
    return _fractions(fourier_acts, products_only=True)


def cluster_neurons_zero_based(fractions, threshold):
    best, index = fractions.max(-1)
    return torch.where(best >= threshold, index, torch.zeros_like(index))


def cluster_neurons_ignores_threshold(fractions, threshold):
    return fractions.argmax(-1) + 1


def cluster_neurons_strict(fractions, threshold):
    best, index = fractions.max(-1)
    return torch.where(best > threshold, index + 1, torch.zeros_like(index))


def trig_logit_directions_plus_c(p, freqs):
    x = torch.arange(p, dtype=torch.float64)
    s = x[:, None, None] + x[None, :, None] + x[None, None, :]
    return torch.stack([torch.cos(2 * math.pi * k * s / p) for k in freqs]).float()


def trig_logit_directions_sine(p, freqs):
    x = torch.arange(p, dtype=torch.float64)
    s = x[:, None, None] + x[None, :, None] - x[None, None, :]
    return torch.stack([torch.sin(2 * math.pi * k * s / p) for k in freqs]).float()


def fit_logits_uncentred(logits, directions):
    X = directions.double().reshape(directions.shape[0], -1).T
    y = logits.double().reshape(-1)
    coef = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
    return coef, float(1 - (y - X @ coef).pow(2).sum() / y.pow(2).sum())


def fit_logits_unnormalised_dot_products(logits, directions):
    centred = logits.double() - logits.double().mean(-1, keepdim=True)
    X = directions.double().reshape(directions.shape[0], -1).T
    y = centred.reshape(-1)
    coef = (X * y[:, None]).sum(0)
    return coef, float(1 - (y - X @ coef).pow(2).sum() / y.pow(2).sum())


# ------------------------------------------------------------------------------------------- Part 3
def sum_frequency_directions_unnormalised(p, freqs):
    d = _directions(p, freqs)
    return d * d.new_tensor(float(p * p) / 2).sqrt()


def sum_frequency_directions_product(p, freqs):
    tokens, _ = make_dataset(p)
    s = (tokens[:, 0] * tokens[:, 1]).double()
    d = torch.stack([f(2 * math.pi * k * s / p) for k in freqs for f in (torch.cos, torch.sin)])
    return d / d.norm(dim=1, keepdim=True)


def sum_frequency_directions_cos_only(p, freqs):
    return _directions(p, freqs)[0::2]


def restricted_logits_without_mean(logits, directions):
    logits, directions = logits.double(), directions.double()
    return directions.T @ (directions @ logits)


def restricted_logits_mean_over_answers(logits, directions):
    logits, directions = logits.double(), directions.double()
    return logits.mean(dim=1, keepdim=True) + directions.T @ (directions @ logits)


def restricted_logits_in_float32(logits, directions):
    logits, directions = logits.float(), directions.float()
    return logits.mean(dim=0, keepdim=True) + directions.T @ (directions @ logits)


def excluded_logits_also_removes_mean(logits, directions):
    logits, directions = logits.double(), directions.double()
    return logits - logits.mean(0, keepdim=True) - directions.T @ (directions @ logits)


def excluded_logits_is_the_projection(logits, directions):
    logits, directions = logits.double(), directions.double()
    return directions.T @ (directions @ logits)


def sum_squared_weights_of_norms(state):
    return float(sum(t.double().norm() for t in state.values() if t.is_floating_point()))


def sum_squared_weights_in_native_dtype(state):
    return float(sum(t.pow(2).sum().double() for t in state.values() if t.is_floating_point()))


def sum_squared_weights_counts_integers(state):
    return float(sum(t.double().pow(2).sum() for t in state.values()))


def progress_measures_excluded_on_all_pairs(states, p, frac_train, seed, key_freqs):
    return _measures(states, p, frac_train, seed, key_freqs, excluded_on="all")


def progress_measures_restricted_on_test(states, p, frac_train, seed, key_freqs):
    return _measures(states, p, frac_train, seed, key_freqs, restricted_on="test")


def phase_boundaries_no_after_peak_rule(epochs, test_loss, sum_sq_weights, p, tolerance=0.05):
    n = len(epochs)
    peak = max(range(n), key=lambda j: test_loss[j])
    below = next((j for j in range(n) if test_loss[j] < math.log(p)), n - 1)
    settled = next((j for j in range(below, n) if sum_sq_weights[j] <= (1 + tolerance) * sum_sq_weights[-1]), n - 1)
    return epochs[peak], epochs[below], epochs[settled]


def phase_boundaries_settled_searched_from_start(epochs, test_loss, sum_sq_weights, p, tolerance=0.05):
    n = len(epochs)
    peak = max(range(n), key=lambda j: test_loss[j])
    below = next((j for j in range(peak + 1, n) if test_loss[j] < math.log(p)), n - 1)
    settled = next((j for j in range(n) if sum_sq_weights[j] <= (1 + tolerance) * sum_sq_weights[-1]), n - 1)
    return epochs[peak], epochs[below], epochs[settled]


def phase_boundaries_log10(epochs, test_loss, sum_sq_weights, p, tolerance=0.05):
    n = len(epochs)
    peak = max(range(n), key=lambda j: test_loss[j])
    below = next((j for j in range(peak + 1, n) if test_loss[j] < math.log10(p)), n - 1)
    settled = next((j for j in range(below, n) if sum_sq_weights[j] <= (1 + tolerance) * sum_sq_weights[-1]), n - 1)
    return epochs[peak], epochs[below], epochs[settled]


WRONG = {
    "modular_addition_data": [modular_addition_data_b_major, modular_addition_data_without_mod,
                              modular_addition_data_equals_is_zero],
    "split_indices": [split_indices_rounded, split_indices_sorted, split_indices_unseeded_generator],
    "cross_entropy_float64": [cross_entropy_float64_in_float32, cross_entropy_float64_summed],
    "train_model": [train_model_without_warmup, train_model_warmup_off_by_one, train_model_default_betas,
                    train_model_logs_after_the_update, train_model_never_stops, train_model_ignores_weight_decay,
                  train_model_without_zero_grad, train_model_tests_on_the_training_pairs],
    "fourier_basis": [fourier_basis_unnormalised, fourier_basis_sin_first, fourier_basis_without_two_pi],
    "embedding_in_fourier_basis": [embedding_in_fourier_basis_transposed, embedding_in_fourier_basis_drops_first_row],
    "frequency_shares": [frequency_shares_without_constant, frequency_shares_paired_from_row_0, frequency_shares_of_norms],
    "key_frequencies": [key_frequencies_zero_based, key_frequencies_by_share, key_frequencies_strict],
    "mlp_activations": [mlp_activations_pre_relu, mlp_activations_first_position],
    "fourier_transform_2d": [fourier_transform_2d_only_a, fourier_transform_2d_inverse, fourier_transform_2d_swapped_axes],
    "neuron_frequency_fractions": [neuron_frequency_fractions_with_mean, neuron_frequency_fractions_products_only],
    "cluster_neurons": [cluster_neurons_zero_based, cluster_neurons_ignores_threshold, cluster_neurons_strict],
    "trig_logit_directions": [trig_logit_directions_plus_c, trig_logit_directions_sine],
    "fit_logits": [fit_logits_uncentred, fit_logits_unnormalised_dot_products],
    "sum_frequency_directions": [sum_frequency_directions_unnormalised, sum_frequency_directions_product,
                                 sum_frequency_directions_cos_only],
    "restricted_logits": [restricted_logits_without_mean, restricted_logits_mean_over_answers, restricted_logits_in_float32],
    "excluded_logits": [excluded_logits_also_removes_mean, excluded_logits_is_the_projection],
    "sum_squared_weights": [sum_squared_weights_of_norms, sum_squared_weights_in_native_dtype,
                            sum_squared_weights_counts_integers],
    "progress_measures": [progress_measures_excluded_on_all_pairs, progress_measures_restricted_on_test],
    "phase_boundaries": [phase_boundaries_no_after_peak_rule, phase_boundaries_settled_searched_from_start,
                         phase_boundaries_log10],
}
