"""Correct implementations written differently from the reference must pass both the visible checks (what the
learner sees) and every hidden check (the grade): ties counted as wins where the spec leaves ties open, a version
written under no_grad, a mask instead of indexing, per-sequence means, a Python loop."""


import torch

from tests.ch02_induction import test_hidden
from tests.harness import correct_alternatives_test


def diagonal_argmax_fraction(M):  # a tie at the maximum counts as a win
    return (M.diagonal() >= M.max(dim=-1).values).float().mean().item()


def ov_copy_fractions(W_E, W_V, W_O, W_U):
    out = torch.zeros(W_V.shape[0], W_V.shape[1])
    for layer in range(W_V.shape[0]):
        for h in range(W_V.shape[1]):
            full = W_E @ W_V[layer, h] @ W_O[layer, h] @ W_U
            out[layer, h] = (full.diagonal() >= full.max(dim=-1).values).float().mean()
    return out


@torch.no_grad()
def mean_ablate_head_z(z, head, z_mean):
    out = z.clone()
    out[:, :, head] = z_mean[:, head]
    return out


def mean_ablate_head_z_where(z, head, z_mean):
    mask = torch.zeros(z.shape[2], 1, dtype=torch.bool)
    mask[head] = True
    return torch.where(mask, z_mean.expand_as(z), z)


@torch.no_grad()
def zero_ablate_head_z(z, head):
    mask = torch.ones(z.shape[2], 1)
    mask[head] = 0
    return z * mask


def in_context_learning_score(loss, early, late):
    per_row = loss[:, late[0]:late[1]].mean(1) - loss[:, early[0]:early[1]].mean(1)
    return float(per_row.mean())


def random_composition_scores(d_model, d_head, n_samples=1000):
    out = []
    for _ in range(n_samples):
        A = torch.randn(d_model, d_head) @ torch.randn(d_head, d_model)
        B = torch.randn(d_model, d_head) @ torch.randn(d_head, d_model)
        out.append((A @ B).norm() / (A.norm() * B.norm()))
    return torch.stack(out)


CASES = [("diagonal_argmax_fraction", diagonal_argmax_fraction), ("ov_copy_fractions", ov_copy_fractions),
         ("mean_ablate_head_z", mean_ablate_head_z), ("mean_ablate_head_z", mean_ablate_head_z_where),
         ("zero_ablate_head_z", zero_ablate_head_z), ("in_context_learning_score", in_context_learning_score),
         ("random_composition_scores", random_composition_scores)]


test_correct_alternatives_pass_visible_and_hidden_checks = correct_alternatives_test(CASES, test_hidden)
