"""Visible checks of chapter 4 (grokking modular addition).

They compare your functions with hand-worked answers on tiny inputs, with identities your results must
satisfy (orthonormality, inverses, projections), with what TransformerLens computes on the shipped model
`grokking_p113`, and with the metrics logged while that model trained. They contain no reference solution.
"""

from __future__ import annotations

import functools
import json
import math

import torch

from micourse.checks.core import CheckFailed, expect, expect_close, expect_shape, visible
from micourse.checks.core import as_float as _float, no_grad as _no_grad

MODEL = "grokking_p113"
HISTORY = ("train_loss", "test_loss", "train_acc", "test_acc")


# --------------------------------------------------------------------------------------------- helpers
@functools.cache
def _model():
    from micourse.models import load_model

    return load_model(MODEL, verbose=False)


@functools.cache
def _run() -> dict:
    from micourse.models import asset_dir

    return json.loads((asset_dir(MODEL) / "metrics.json").read_text())


def _logged(epoch: int) -> dict:
    return next(row for row in _run()["log"] if row["epoch"] == epoch)


def _state(epoch: int) -> dict:
    from micourse.models import asset_dir

    ck = torch.load(asset_dir(MODEL) / "checkpoints" / f"epoch_{epoch:05d}.pt", map_location="cpu", weights_only=False)
    return {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}


def _orthonormal(n: int, seed: int) -> torch.Tensor:
    """A random orthonormal [n, n] matrix (rows orthonormal), float64."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.T.contiguous()


def _waves(p: int) -> dict:
    """Hand-built normalised cos/sin rows over 0..p-1 (float64), keyed ('cos', k) / ('sin', k)."""
    x = torch.arange(p, dtype=torch.float64)
    out = {}
    for k in range(1, p // 2 + 1):
        for name, f in (("cos", torch.cos), ("sin", torch.sin)):
            v = f(2 * math.pi * k * x / p)
            out[name, k] = v / v.norm()
    return out


# ------------------------------------------------------------------------------------------- Part 1
@visible("modular_addition_data")
def _modular_addition_data(fn):
    tokens, labels = fn(3)
    expect_shape(tokens, (9, 3), "tokens for p = 3")
    expect_shape(labels, (9,), "labels for p = 3")
    want = [[a, b, 3] for a in range(3) for b in range(3)]
    expect(tokens.tolist() == want, f"tokens for p = 3 should be rows [a, b, 3] with a = i // 3, b = i % 3, i.e. "
                                    f"{want}; got {tokens.tolist()}")
    expect(labels.tolist() == [0, 1, 2, 1, 2, 0, 2, 0, 1], f"labels for p = 3 should be (a + b) % 3; got {labels.tolist()}")
    expect(not tokens.is_floating_point() and not labels.is_floating_point(), "tokens and labels should be integer tensors")
    tokens, labels = fn(5)
    expect(tokens[7].tolist() == [1, 2, 5] and int(labels[7]) == 3, "row 7 for p = 5 should be [1, 2, 5] with label 3")


def _shipped_losses(state: dict, idx: torch.Tensor) -> float:
    """Mean cross-entropy (float64) of a shipped checkpoint on the pairs with indices idx (dataset order)."""
    from micourse.grokking import FastModAddModel

    p = _run()["config"]["p"]
    with torch.no_grad():
        model = FastModAddModel(p).load_bridge_state_dict(state)
        a, b = idx // p, idx % p
        logits = model(a, b).double()
        return float(torch.nn.functional.cross_entropy(logits, (a + b) % p))


@visible("split_indices")
def _split_indices(fn):
    train, test = fn(113, 0.3, 0)
    expect(isinstance(train, torch.Tensor) and isinstance(test, torch.Tensor) and not train.is_floating_point(),
           "split_indices should return two integer tensors")
    expect(len(train) == 3830 and len(test) == 113 * 113 - 3830,
           f"p = 113 with 30 % for training: 3830 training and 8939 test indices; got {len(train)} and {len(test)}")
    expect(torch.equal(torch.cat([train, test]).sort().values, torch.arange(113 * 113)),
           "together, the training and test indices should be every index 0 .. p*p - 1 exactly once")
    expect(not bool((train[1:] >= train[:-1]).all()),
           "the training indices should be in the shuffled order of the permutation, not sorted")
    again, _ = fn(113, 0.3, 0)
    expect(torch.equal(again, train), "the same seed should give the same split every time")
    other, _ = fn(113, 0.3, 1)
    expect(not torch.equal(other, train), "a different seed should give a different split")
    # The shipped run trained on the split of p = 113, 30 %, seed 0: at epoch 1000 it had memorised those pairs
    # (training loss ~1e-5) and was confidently wrong on the others, so only that split gives the logged losses.
    config, row = _run()["config"], _logged(1000)
    train, _ = fn(config["p"], config["frac_train"], config["split_seed"])
    got = _shipped_losses(_state(1000), train)
    expect(abs(got - row["train_loss"]) < 0.2 * row["train_loss"],
           f"the shipped run's training loss at epoch 1000 on your training split should be the one it logged "
           f"({row['train_loss']:.3g}); got {got:.3g}: your split is not the one it trained on (use "
           f"torch.randperm(p * p, generator=torch.Generator().manual_seed(seed)) as the spec says)")


@visible("cross_entropy_float64")
def _cross_entropy_float64(fn):
    loss = fn(torch.zeros(3, 5), torch.tensor([0, 2, 4]))
    expect(isinstance(loss, torch.Tensor) and loss.dim() == 0, "cross_entropy_float64 should return a 0-dimensional tensor")
    expect(loss.dtype == torch.float64, f"the loss should be float64; got {loss.dtype}")
    expect_close(loss, torch.tensor(math.log(5), dtype=torch.float64), "loss of all-zero logits over 5 classes (ln 5)")
    expect_close(fn(torch.tensor([[1.0, 0.0]]), torch.tensor([0])), torch.tensor(math.log(1 + math.exp(-1))),
                 "loss of logits [1, 0] with label 0 (ln(1 + e^-1))")
    margin = fn(torch.tensor([[30.0, 0.0, 0.0, 0.0, 0.0]]), torch.tensor([0]))
    want = 4 * math.exp(-30)
    expect(abs(float(margin) - want) < 1e-2 * want,
           f"with a logit margin of 30 over 4 other classes the loss is ln(1 + 4 e^-30) = {want:.4g}; got {float(margin):.4g} "
           f"(convert the logits to float64 before the softmax: float32 rounds this loss to 0)")
    logits = torch.randn(4, 7, requires_grad=True)
    with torch.enable_grad():
        fn(logits, torch.tensor([1, 2, 3, 4])).backward()
    expect(logits.grad is not None and float(logits.grad.abs().sum()) > 0, "gradients should flow back to the logits")


def _all_pairs(model, p: int) -> tuple[float, float]:
    """(mean float64 cross-entropy, accuracy) of a FastModAddModel on all p * p pairs (pair i = (i // p, i % p))."""
    i = torch.arange(p * p)
    with torch.no_grad():
        logits = model(i // p, i % p).double()
    labels = (i // p + i % p) % p
    return float(torch.nn.functional.cross_entropy(logits, labels)), float((logits.argmax(-1) == labels).double().mean())


def _weighted(history: dict, row: int, kind: str, n_train: int, n_test: int) -> float:
    """The all-pairs value implied by a logged row: the training and test values weighted by their sizes."""
    train, test = _float(history[f"train_{kind}"][row], f"train_{kind}"), _float(history[f"test_{kind}"][row], f"test_{kind}")
    return (n_train * train + n_test * test) / (n_train + n_test)


@visible("train_model")
def _train_model(fn):
    from micourse.grokking import WARMUP_STEPS, FastModAddModel

    p, frac, lr, wd, seed = 5, 0.6, 0.1, 1.0, 0
    with torch.enable_grad():
        got = fn(p, frac, 2, lr=lr, weight_decay=wd, seed=seed, log_every=1)
    expect(isinstance(got, dict), f"train_model should return a dict; got {type(got).__name__}")
    missing = {"epoch", "train_loss", "test_loss", "train_acc", "test_acc", "state_dict"} - set(got)
    expect(not missing, f"the history is missing {sorted(missing)}")
    expect(list(got["epoch"]) == [0, 1, 2], f"2 epochs logged every 1 should log epochs [0, 1, 2]; got {got['epoch']}")
    expect(all(isinstance(v, float) for k in HISTORY for v in got[k]), "the logged values should be Python floats")

    # Epoch 0 is the initial model FastModAddModel(p, seed): its training and test values, weighted by the sizes of
    # the two sets, are its values on all pairs (whatever the split).
    n_train = int(frac * p * p)
    initial = FastModAddModel(p, seed=seed)
    for kind, value in zip(("loss", "acc"), _all_pairs(initial, p)):
        expect(abs(_weighted(got, 0, kind, n_train, p * p - n_train) - value) < 1e-6,
               f"epoch 0 should describe FastModAddModel(p, seed=seed) before any update, on the training and on the "
               f"test pairs: {n_train} x train_{kind} + {p * p - n_train} x test_{kind} should be {p * p} x its {kind} "
               f"on all pairs ({value:.6g} per pair); got {_weighted(got, 0, kind, n_train, p * p - n_train):.6g}")

    # Warm-up: update 0 uses learning rate lr * min(0 / 10, 1) = 0 (AdamW's decay is scaled by it too), so epoch 1
    # logs what epoch 0 logged.
    expect(all(got[k][1] == got[k][0] for k in HISTORY),
           f"the first update uses learning rate lr * min(0 / {WARMUP_STEPS}, 1) = 0, so epoch 1 should log exactly "
           f"what epoch 0 logged; got training losses {got['train_loss'][:2]} (is the scheduler's lambda "
           f"min(step / {WARMUP_STEPS}, 1), stepped once after each optimizer step?)")

    # Update 1 uses lr_1 = lr / 10. Both updates saw the same gradient g (the model had not changed), so AdamW's
    # bias-corrected moments are exactly g and g^2 and the update is, per weight,
    #     w <- w * (1 - lr_1 * weight_decay) - lr_1 * g / (|g| + eps)        (whatever the betas).
    state = got["state_dict"]
    model = FastModAddModel(p)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        raise CheckFailed(f"\"state_dict\" should be the FastModAddModel's state_dict(): {err}") from None
    train_idx = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))[:n_train]  # the spec's split
    with torch.enable_grad():
        logits = initial(train_idx // p, train_idx % p).double()
        loss = torch.nn.functional.cross_entropy(logits, (train_idx // p + train_idx % p) % p)
        weights = [w for _, w in initial.named_parameters()]
        grads = torch.autograd.grad(loss, weights)
    lr_1 = lr * min(1 / WARMUP_STEPS, 1.0)
    for (name, w), g in zip(initial.named_parameters(), grads):
        want = w.detach() * (1 - lr_1 * wd) - lr_1 * g / (g.abs() + 1e-8)
        expect_close(state[name], want, f"{name} after 2 epochs of p = {p} (lr {lr}, weight decay {wd}): the first update "
                     f"changes nothing, the second is AdamW's first real step with learning rate lr / {WARMUP_STEPS} "
                     f"(check that the optimizer gets weight_decay, and that gradients are zeroed before each backward)",
                     atol=1e-6, rtol=1e-5)
    # The last row describes the returned model.
    for kind, value in zip(("loss", "acc"), _all_pairs(model, p)):
        expect(abs(_weighted(got, 2, kind, n_train, p * p - n_train) - value) < 1e-6,
               "the last row (epoch 2) should describe the returned state_dict's model on the training and test pairs")

    stopped = fn(5, 0.6, 12, lr=1e-2, seed=0, log_every=5, stop_at_test_acc=0.0)
    expect(list(stopped["epoch"]) == [0], "with stop_at_test_acc=0.0 training should stop right after logging epoch 0")
    other = fn(5, 0.6, 0, seed=1, log_every=1)
    expect(other["train_loss"][0] != got["train_loss"][0], "a different seed should give a different initial model and split")


# ------------------------------------------------------------------------------------------- Part 2
@visible("fourier_basis")
def _fourier_basis(fn):
    basis = fn(5)
    expect_shape(basis, (5, 5), "fourier_basis(5)")
    expect(basis.dtype == torch.float32, f"the basis should be float32; got {basis.dtype}")
    expect_close(basis @ basis.T, torch.eye(5), "basis @ basis.T for p = 5 (rows orthonormal)", atol=1e-5)
    waves = _waves(5)
    want = torch.stack([torch.full((5,), 5 ** -0.5, dtype=torch.float64), waves["cos", 1], waves["sin", 1],
                        waves["cos", 2], waves["sin", 2]])
    expect_close(basis, want, "fourier_basis(5): rows const, cos 1, sin 1, cos 2, sin 2, each of norm 1", atol=1e-5)
    big = fn(113)
    expect_close(big @ big.T, torch.eye(113), "basis @ basis.T for p = 113", atol=1e-4)


@visible("embedding_in_fourier_basis")
def _embedding_in_fourier_basis(fn):
    basis = _orthonormal(7, 0).float()
    W_E = torch.cat([basis.T, torch.full((1, 7), 9.0)])  # 7 number tokens whose embedding is the basis, then '='
    expect_close(fn(W_E, basis), torch.eye(7), "an embedding whose number rows are the basis transposed, in that basis "
                 "(the identity; the last row of W_E, the '=' token, must be dropped)", atol=1e-5)
    W_E = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    out = fn(W_E, basis)
    expect_shape(out, (7, 3), "embedding_in_fourier_basis of a [p + 1, d_model] = [8, 3] embedding")
    expect_close(basis.T @ out, W_E[:7], "basis.T @ result should give back W_E[:p] (the basis is orthonormal)", atol=1e-5)


@visible("frequency_shares")
def _frequency_shares(fn):
    emb = torch.zeros(7, 2)
    emb[3, 0] = 2.0  # row 3 = cos 2
    expect_close(fn(emb), torch.tensor([0.0, 1.0, 0.0]), "shares of an embedding made only of cos 2 (p = 7)")
    emb = torch.zeros(7, 2)
    emb[0, 1], emb[1, 0], emb[2, 1] = 1.0, 1.0, 1.0  # const, cos 1, sin 1
    expect_close(fn(emb), torch.tensor([2 / 3, 0.0, 0.0]),
                 "shares when const, cos 1 and sin 1 each have squared norm 1 (frequency 1 holds 2 of 3; the constant "
                 "counts in the total but belongs to no frequency)")
    emb = torch.zeros(7, 2)
    emb[4, 0], emb[1, 1] = 2.0, 1.0  # sin 2 with norm 2, cos 1 with norm 1
    expect_close(fn(emb), torch.tensor([1 / 5, 4 / 5, 0.0]),
                 "shares when sin 2 has norm 2 and cos 1 norm 1: squared norms 4 and 1 of a total 5 (shares of the "
                 "squared norm, not of the norm)")
    expect_shape(fn(torch.randn(113, 4)), (56,), "frequency_shares of a [113, d_model] input ((p - 1) / 2 frequencies)")


@visible("key_frequencies")
def _key_frequencies(fn):
    got = fn(torch.tensor([0.1, 0.5, 0.0, 0.3]), 0.2)
    expect(isinstance(got, list), f"key_frequencies should return a list; got {type(got).__name__}")
    expect([int(k) for k in got] == [2, 4], f"shares [0.1, 0.5, 0.0, 0.3] with threshold 0.2 give frequencies [2, 4] "
                                            f"(counting from 1, increasing); got {got}")
    expect(list(fn(torch.tensor([0.25, 0.5]), 0.25)) == [1, 2], "a share equal to the threshold counts as key")
    expect(list(fn(torch.tensor([0.1, 0.2]), 0.5)) == [], "no share above the threshold: an empty list")


@visible("mlp_activations")
@_no_grad
def _mlp_activations(fn):
    model = _model()
    p = model.cfg.d_vocab_out
    tokens = torch.tensor([[0, 0, p], [3, 7, p], [112, 5, p], [50, 50, p]])
    got = fn(model, tokens)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    expect_shape(got, (4, model.cfg.d_mlp), "mlp_activations on 4 inputs")
    expect_close(got, cache["blocks.0.mlp.hook_post"][:, -1],
                 "activations on 4 inputs (vs cache['blocks.0.mlp.hook_post'] at the last position)", atol=1e-4)


@visible("fourier_transform_2d")
@_no_grad
def _fourier_transform_2d(fn):
    basis = _orthonormal(5, 2).float()
    grid = torch.outer(basis[3], basis[4])
    want = torch.zeros(5, 5)
    want[3, 4] = 1.0
    expect_close(fn(grid, basis), want, "the transform of basis[3](a) * basis[4](b): a single 1 at [3, 4]", atol=1e-5)
    stacked = torch.stack([grid, 2 * torch.outer(basis[0], basis[1])], dim=-1)
    out = fn(stacked, basis)
    expect_shape(out, (5, 5, 2), "the transform of a [5, 5, 2] grid (trailing axes kept)")
    expect(abs(float(out[3, 4, 0]) - 1) < 1e-5 and abs(float(out[0, 1, 1]) - 2) < 1e-5,
           "each trailing slice is transformed on its own: expected 1 at [3, 4, 0] and 2 at [0, 1, 1]")
    rand = torch.randn(5, 5, generator=torch.Generator().manual_seed(3))
    expect_close(basis.T @ fn(rand, basis) @ basis, rand, "basis.T @ transform @ basis should give back the grid", atol=1e-5)


@visible("neuron_frequency_fractions")
def _neuron_frequency_fractions(fn):
    acts = torch.zeros(7, 7, 3)
    acts[3, 0, 0], acts[0, 4, 0] = 1.0, 1.0      # neuron 0: cos 2 in a, sin 2 in b
    acts[1, 1, 1], acts[3, 3, 1] = 1.0, 1.0      # neuron 1: cos 1 cos 1 and cos 2 cos 2
    acts[0, 0, 2], acts[5, 6, 2] = 100.0, 1.0    # neuron 2: a large mean, and cos 3 sin 3
    got = fn(acts)
    expect_shape(got, (3, 3), "fractions for 3 neurons with p = 7 ([n_neurons, (p - 1) / 2])")
    expect_close(got, torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]),
                 "fractions of 3 hand-built neurons (the (const, const) coefficient is the mean: it counts for "
                 "nothing, in neither the numerator nor the total)")


@visible("cluster_neurons")
def _cluster_neurons(fn):
    got = fn(torch.tensor([[0.1, 0.9], [0.5, 0.4]]), 0.8)
    expect(isinstance(got, torch.Tensor) and not got.is_floating_point(), "cluster_neurons should return an integer tensor")
    expect(got.tolist() == [2, 0], f"fractions [[0.1, 0.9], [0.5, 0.4]] with threshold 0.8 give [2, 0]; got {got.tolist()}")
    expect(fn(torch.tensor([[0.1, 0.9], [0.5, 0.4]]), 0.5).tolist() == [2, 1], "with threshold 0.5 both neurons are clustered: [2, 1]")


@visible("trig_logit_directions")
def _trig_logit_directions(fn):
    p, freqs = 7, [1, 3]
    got = fn(p, freqs)
    expect_shape(got, (2, p, p, p), "trig_logit_directions(7, [1, 3])")
    x = torch.arange(p, dtype=torch.float64)
    a, b, c = x[:, None, None], x[None, :, None], x[None, None, :]
    for i, k in enumerate(freqs):
        w = 2 * math.pi * k / p
        cos_ab = torch.cos(w * a) * torch.cos(w * b) - torch.sin(w * a) * torch.sin(w * b)
        sin_ab = torch.sin(w * a) * torch.cos(w * b) + torch.cos(w * a) * torch.sin(w * b)
        expect_close(got[i], cos_ab * torch.cos(w * c) + sin_ab * torch.sin(w * c),
                     f"direction {i} (k = {k}) vs the product form cos(w(a+b)) cos(wc) + sin(w(a+b)) sin(wc)", atol=1e-5)


def _cos_directions(p: int, freqs: list[int]) -> torch.Tensor:
    x = torch.arange(p, dtype=torch.float64)
    s = x[:, None, None] + x[None, :, None] - x[None, None, :]
    return torch.stack([torch.cos(2 * math.pi * k * s / p) for k in freqs])


@visible("fit_logits")
def _fit_logits(fn):
    directions = _cos_directions(5, [1, 2])
    offset = torch.arange(25, dtype=torch.float64).reshape(5, 5, 1)  # a per-(a, b) constant: softmax ignores it
    coef, explained = fn(2 * directions[0] - 3 * directions[1] + 5 + offset, directions)
    expect_close(torch.as_tensor(coef).flatten(), torch.tensor([2.0, -3.0]),
                 "coefficients of logits 2 d0 - 3 d1 + a constant per (a, b)", atol=1e-5)
    expect(abs(_float(explained, "the explained fraction") - 1) < 1e-6, f"an exact combination is fully explained (1); got {explained}")
    noise = torch.randn(5, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _, part = fn(directions[0] + noise, directions)
    expect(0 < _float(part, "the explained fraction") < 1, f"with noise added the explained fraction is between 0 and 1; got {part}")


@visible("sum_frequency_directions")
def _sum_frequency_directions(fn):
    p, freqs = 7, [1, 3]
    got = fn(p, freqs)
    expect_shape(got, (4, p * p), "sum_frequency_directions(7, [1, 3])")
    expect(got.dtype == torch.float64, f"the directions should be float64; got {got.dtype}")
    expect_close(got @ got.T, torch.eye(4), "directions @ directions.T (orthonormal rows)", atol=1e-8)
    s = torch.arange(p).repeat_interleave(p) + torch.arange(p).repeat(p)
    for row, (name, k) in enumerate([("cos", 1), ("sin", 1), ("cos", 3), ("sin", 3)]):
        v = (torch.cos if name == "cos" else torch.sin)(2 * math.pi * k * s.double() / p)
        expect_close(got[row], v / v.norm(), f"row {row}: {name}(w_{k} (a + b)) over pairs i = a * p + b, normalised",
                     atol=1e-8)


def _projection_setting(seed: int):
    """Logits over 12 'inputs' x 3 answers = mean + part in the span of 2 directions + part orthogonal to both."""
    gen = torch.Generator().manual_seed(seed)
    columns = torch.cat([torch.ones(12, 1, dtype=torch.float64), torch.randn(12, 5, generator=gen, dtype=torch.float64)], 1)
    q, _ = torch.linalg.qr(columns)  # column 0 is the constant direction
    directions, other = q[:, 1:3].T, q[:, 3:6].T  # orthonormal, orthogonal to the constant and to each other
    mean = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    inside = directions.T @ torch.randn(2, 3, generator=gen, dtype=torch.float64)
    outside = other.T @ torch.randn(3, 3, generator=gen, dtype=torch.float64)
    return directions, mean, inside, outside


@visible("restricted_logits")
def _restricted_logits(fn):
    directions, mean, inside, outside = _projection_setting(5)
    got = fn((mean + inside + outside).float(), directions)
    expect(got.dtype == torch.float64, f"restricted logits should be float64; got {got.dtype}")
    expect_close(got, mean + inside, "restricted logits of mean + (part in the directions' span) + (orthogonal part): "
                 "the orthogonal part should go", atol=1e-5)


@visible("excluded_logits")
def _excluded_logits(fn):
    directions, mean, inside, outside = _projection_setting(6)
    got = fn((mean + inside + outside).float(), directions)
    expect(got.dtype == torch.float64, f"excluded logits should be float64; got {got.dtype}")
    expect_close(got, mean + outside, "excluded logits of mean + (part in the directions' span) + (orthogonal part): "
                 "only the part in the span should go", atol=1e-5)


@visible("sum_squared_weights")
def _sum_squared_weights(fn):
    got = fn({"w": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([3.0])})
    expect(isinstance(got, float), f"sum_squared_weights should return a Python float; got {type(got).__name__}")
    expect(abs(got - 14) < 1e-9, f"{{'w': [[1, 2]], 'b': [3]}} gives 1 + 4 + 9 = 14; got {got}")
    expect(abs(fn({"w": torch.tensor([2.0]), "steps": torch.tensor([5])}) - 4) < 1e-9,
           "integer tensors (like a step counter) are not weights: {'w': [2.], 'steps': [5]} gives 4")
    half = fn({"w": torch.tensor([300.0, 400.0], dtype=torch.float16)})
    expect(abs(half - 250000) < 1e-6, f"a float16 tensor [300, 400] gives 90000 + 160000 = 250000 (square in float64: "
                                      f"in float16, 300^2 is already beyond its largest number, 65504); got {half}")
    final = _state(16000)
    logged = _logged(16000)["sum_sq_weights"]
    expect(abs(fn(final) - logged) < 1e-2 * logged,
           f"the shipped run's last checkpoint: about {logged:.1f} (logged during training); got {fn(final):.1f}")


@visible("progress_measures")
@_no_grad
def _progress_measures(fn):
    config = _run()["config"]
    epochs = [0, 16000]
    out = fn([_state(e) for e in epochs], config["p"], config["frac_train"], config["split_seed"], [7, 20])
    names = ("train_loss", "test_loss", "test_acc", "restricted_loss", "excluded_loss", "sum_sq_weights")
    expect(isinstance(out, dict) and all(n in out for n in names), f"progress_measures should return a dict with keys {names}")
    expect(all(len(out[n]) == 2 for n in names), "each measure should have one value per state dict (2 here)")
    for i, epoch in enumerate(epochs):
        row = _logged(epoch)
        for key in ("train_loss", "test_loss", "sum_sq_weights"):
            got = _float(out[key][i], key)
            expect(abs(got - row[key]) <= 0.05 * abs(row[key]),
                   f"{key} at epoch {epoch}: about {row[key]:.4g} was logged during training (checkpoints are stored in "
                   f"float16, so a few % differ); got {got:.4g}")
        expect(abs(_float(out["test_acc"][i], "test_acc") - row["test_acc"]) < 0.01, f"test_acc at epoch {epoch}")
    expect(all(_float(v, "restricted_loss") > 0 for v in out["restricted_loss"]), "restricted losses are positive")
    # A model whose embedding is zero gives every pair the same logits r. Their projection onto the (mean-free)
    # directions is 0, so the restricted logits are r and the excluded logits are r: the restricted loss (all pairs)
    # is the size-weighted average of the training and test losses, and the excluded loss (training pairs) is the
    # training loss.
    from micourse.grokking import FastModAddModel

    p = config["p"]
    constant = FastModAddModel(p, seed=3).state_dict_for_bridge()
    constant["embed.weight"].zero_()
    constant["unembed.weight"].mul_(20)  # logits that differ a lot between answers
    one = fn([constant], p, config["frac_train"], config["split_seed"], [7, 20])
    n_train = int(config["frac_train"] * p * p)
    train, test = _float(one["train_loss"][0], "train_loss"), _float(one["test_loss"][0], "test_loss")
    everything = (n_train * train + (p * p - n_train) * test) / (p * p)
    expect(abs(_float(one["restricted_loss"][0], "restricted_loss") - everything) < 1e-6 * everything,
           f"a model that gives every pair the same logits (zero embedding): its restricted logits are its logits, and "
           f"the restricted loss is over all p * p pairs, i.e. the training and test losses weighted by their sizes, "
           f"{everything:.6g}; got {one['restricted_loss'][0]:.6g}")
    expect(abs(_float(one["excluded_loss"][0], "excluded_loss") - train) < 1e-6 * train,
           f"for the same model the excluded logits are its logits too, and the excluded loss is over the training "
           f"pairs: the training loss, {train:.6g}; got {one['excluded_loss'][0]:.6g}")


@visible("phase_boundaries")
def _phase_boundaries(fn):
    epochs = list(range(0, 100, 10))
    test_loss = [3.0, 5.0, 8.0, 6.0, 5.0, 2.0, 0.5, 0.1, 0.1, 0.1]
    ssw = [10.0, 12.0, 12.0, 11.0, 10.0, 8.0, 5.0, 3.1, 3.05, 3.0]
    got = fn(epochs, test_loss, ssw, 5, 0.05)
    expect(tuple(int(x) for x in got) == (20, 60, 70),
           f"made-up curves (p = 5, ln 5 = 1.61): the test loss peaks at epoch 20, is first below ln 5 after that at 60, "
           f"and the weights are within 5 % of their final value (3.0) from epoch 70: expected (20, 60, 70), got {tuple(got)}")
    early = [1.0] + test_loss[1:]
    got = fn(epochs, early, ssw, 5, 0.05)
    expect(tuple(int(x) for x in got) == (20, 60, 70),
           f"a test loss below ln p at epoch 0 (before the peak) does not end circuit formation; got {tuple(got)}")
    test_loss = [3.0, 5.0, 8.0, 6.0, 5.0, 1.0, 0.5, 0.1, 0.1, 0.1]
    ssw = [3.0, 12.0, 12.0, 11.0, 10.0, 8.0, 5.0, 3.1, 3.05, 3.0]
    got = fn(epochs, test_loss, ssw, 5, 0.05)
    expect(tuple(int(x) for x in got) == (20, 50, 70),
           f"made-up curves where the test loss is 1.0 at epoch 50 (below ln 5 = 1.61, the natural log) and the weights "
           f"start at their final value (3.0 at epoch 0; clean-up ends at the first checkpoint at or after the end of "
           f"circuit formation within 5 % of it): expected (20, 50, 70), got {tuple(got)}")
