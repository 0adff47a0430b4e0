"""The fast grokking trainer (`micourse.grokking.FastModAddModel`) computes exactly what the
TransformerLens model computes: same logits, loss and gradients on the same weights, and weights that
convert both ways without change."""

from __future__ import annotations

import os

import torch

from micourse import grokking
from scripts import grokking_training as training
from micourse.grokking import STATE_DICT_NAMES, FastModAddModel

torch.set_num_threads(int(os.environ.get("MICOURSE_THREADS", "1")))


def _randomise_biases(model: FastModAddModel, seed: int) -> FastModAddModel:
    """Give every bias, trained or fixed, a nonzero value, so the comparison covers them all."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.startswith("b_"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype))
    return model


def _fast_and_bridge(p: int, seed: int = 0):
    """The same weights as a float64 fast model and a float64 TransformerLens bridge."""
    fast = _randomise_biases(FastModAddModel(p, seed=seed), seed).double()
    bridge = fast.to_bridge().to(torch.float64)
    bridge.load_state_dict(fast.state_dict_for_bridge())  # the float64 values, not a float32 copy
    return fast, bridge


def _compare_loss_and_gradients(p: int, examples: torch.Tensor):
    fast, bridge = _fast_and_bridge(p)
    tokens, labels = training.make_dataset(p)
    tokens, labels = tokens[examples], labels[examples]

    fast_logits = fast(tokens[:, 0], tokens[:, 1])
    bridge_logits = bridge(tokens)[:, -1]
    torch.testing.assert_close(fast_logits, bridge_logits, rtol=0, atol=1e-12)

    fast_loss, bridge_loss = training.loss_fn(fast_logits, labels), training.loss_fn(bridge_logits, labels)
    assert abs(float(fast_loss.detach() - bridge_loss.detach())) < 1e-12
    fast_loss.backward()
    bridge_loss.backward()

    bridge_params = bridge.state_dict(keep_vars=True)
    for name, weight in fast.named_parameters():
        expected = bridge_params[STATE_DICT_NAMES[name]].grad
        scale = float(expected.abs().max())
        assert scale > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(weight.grad, expected, rtol=0, atol=1e-10 * scale, msg=f"gradient of {name}")


def test_dataset_is_every_pair_with_equals_token_last():
    tokens, labels = training.make_dataset(5)
    assert tokens.shape == (25, 3) and labels.shape == (25,)
    assert (tokens[:, 2] == 5).all()
    assert tokens[7].tolist() == [1, 2, 5] and labels[7] == 3
    assert len({tuple(t) for t in tokens[:, :2].tolist()}) == 25


def test_split_is_a_seeded_randperm_partition():
    train, test = training.train_test_split(113, 0.3, seed=0)
    assert len(train) == int(0.3 * 113 * 113) == 3830 and len(test) == 113 * 113 - 3830
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(113 * 113))
    torch.manual_seed(0)
    assert torch.equal(train, torch.randperm(113 * 113)[:3830])


def test_fast_loss_and_gradients_match_transformerlens_small_p():
    p = 7
    _compare_loss_and_gradients(p, torch.arange(p * p))


def test_fast_loss_and_gradients_match_transformerlens_p113_subset():
    examples = torch.randperm(113 * 113, generator=torch.Generator().manual_seed(1))[:400]
    _compare_loss_and_gradients(113, examples)


def test_paper_initialisation_scales():
    fast = FastModAddModel(113, seed=0).requires_grad_(False)
    assert abs(float(fast.W_in.std()) / 128 ** -0.5 - 1) < 0.03
    assert abs(float(fast.W_U.std()) / 113 ** -0.5 - 1) < 0.03
    assert all(float(b.abs().max()) == 0 for n, b in fast.named_parameters() if n.startswith("b_"))
    assert not torch.equal(fast.W_E, FastModAddModel(113, seed=1).W_E)


def test_conversion_round_trip_through_bridge_and_file(tmp_path):
    from micourse.models import load_native_checkpoint, save_native

    fast = _randomise_biases(FastModAddModel(11, seed=3), seed=3)
    bridge = fast.to_bridge()
    assert set(bridge.state_dict()) == set(STATE_DICT_NAMES.values())
    path = save_native(bridge, tmp_path, "model.pt")
    back = FastModAddModel.from_bridge(load_native_checkpoint(path))
    for name, tensor in list(fast.state_dict().items()):
        assert torch.equal(back.state_dict()[name], tensor), name

    tokens, _ = training.make_dataset(11)
    with torch.no_grad():
        torch.testing.assert_close(back(tokens[:, 0], tokens[:, 1]), bridge(tokens)[:, -1], rtol=1e-5, atol=1e-5)


def test_one_training_step_matches_transformerlens():
    """One AdamW step of each gives the same weights (float64)."""
    p = 7
    fast, bridge = _fast_and_bridge(p)
    tokens, labels = training.make_dataset(p)
    bridge_params = bridge.state_dict(keep_vars=True)
    for name, key in STATE_DICT_NAMES.items():  # train exactly the same tensors in both
        if name in grokking.FIXED_ZERO:
            bridge_params[key].requires_grad_(False)
    trained_in_bridge = [bridge_params[STATE_DICT_NAMES[n]] for n, _ in fast.named_parameters()]

    fast_opt, fast_sched = training.make_optimizer(fast, lr=1e-2)
    bridge_opt = torch.optim.AdamW(trained_in_bridge, lr=1e-2, weight_decay=grokking.WEIGHT_DECAY,
                                   betas=grokking.BETAS)
    bridge_sched = torch.optim.lr_scheduler.LambdaLR(bridge_opt, lambda s: min(s / grokking.WARMUP_STEPS, 1.0))
    for _ in range(3):
        for opt, sched, loss in ((fast_opt, fast_sched, lambda: training.loss_fn(fast(tokens[:, 0], tokens[:, 1]), labels)),
                                 (bridge_opt, bridge_sched, lambda: training.loss_fn(bridge(tokens)[:, -1], labels))):
            opt.zero_grad()
            loss().backward()
            opt.step()
            sched.step()
    for name, weight in fast.named_parameters():
        torch.testing.assert_close(weight, bridge_params[STATE_DICT_NAMES[name]], rtol=0, atol=1e-10,
                                   msg=f"{name} after 3 steps")


def test_train_loop_logs_and_reduces_training_loss():
    p = 5
    data = training.Data.make(p, frac_train=0.6, seed=0)
    history = training.train(FastModAddModel(p), data, epochs=30, log_every=10, progress=False)
    assert [row["epoch"] for row in history] == [0, 10, 20, 30]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
