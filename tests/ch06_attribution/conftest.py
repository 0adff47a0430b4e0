"""Session-scoped models, prompts and stored activations/gradients for chapter 6's hidden checks.

IOI checks run on the shipped `ioi_gpt2_2l` (2 prompts of a short template, as the notebook's, and 2 prompts of
another template); induction checks on the shipped `attn_only_2l` with short BOS + R + R batches. Activations and
gradients for the attribution checks are taken here with TransformerLens's own hooks, not with any solution."""

from __future__ import annotations

import pytest
import torch


def _ld(logits, d):
    end = logits[torch.arange(d.tokens.shape[0]), d.word_idx["end"]]
    return (end.gather(1, d.answer_ids[:, :1]) - end.gather(1, d.answer_ids[:, 1:])).mean()


def _flip(d):
    out = d.tokens.clone()
    out[torch.arange(len(d)), d.word_idx["S2"]] = d.io_ids
    return out


def _ioi_setting(model, d):
    flipped = _flip(d)
    with torch.no_grad():
        clean_ld, corrupted_ld = _ld(model(d.tokens), d), _ld(model(flipped), d)
    return {"data": d, "clean": d.tokens, "corrupted": flipped, "answer_ids": d.answer_ids, "end": d.word_idx["end"],
            "clean_ld": clean_ld, "corrupted_ld": corrupted_ld}


def hooked_acts_grads(model, tokens, names, metric):
    """Activations and gradients of `metric(logits)` at `names`, with TransformerLens's forward and backward hooks."""
    acts, grads = {}, {}
    fwd = [(n, lambda x, hook, n=n: acts.__setitem__(n, x.detach().clone()) or x) for n in names]
    bwd = [(n, lambda g, hook, n=n: grads.__setitem__(n, g.detach().clone())) for n in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        metric(model(tokens)).backward()
    model.zero_grad(set_to_none=True)
    return acts, grads


@pytest.fixture(scope="session")
def ioi_model():
    from micourse.models import load_model

    return load_model("ioi_gpt2_2l", verbose=False)


@pytest.fixture(scope="session")
def ind_model():
    from micourse.models import load_model

    return load_model("attn_only_2l", verbose=False)


@pytest.fixture(scope="session")
def ioi_small(ioi_model):
    """2 prompts of one short template (positions line up) and their S2-flipped version."""
    from micourse import ioi

    return _ioi_setting(ioi_model, ioi.make_ioi_data(2, seed=21, templates=[5]))


@pytest.fixture(scope="session")
def ioi_fresh(ioi_model):
    """Prompts the notebook never uses: another template, other names."""
    from micourse import ioi

    return _ioi_setting(ioi_model, ioi.make_ioi_data(2, seed=987, templates=[16]))


@pytest.fixture(scope="session")
def ioi_mixed():
    from micourse import ioi

    return ioi.make_ioi_data(4, seed=33)


IOI_NAMES = [f"blocks.{li}.{h}" for li in range(2) for h in ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                                                               "attn.hook_z", "attn.hook_pattern", "mlp.hook_post")]


@pytest.fixture(scope="session")
def ioi_stored(ioi_model, ioi_small):
    """(base = corrupted acts, source = clean acts, grads at the corrupted run) of the normalised metric."""
    s = ioi_small
    metric = lambda logits: (_ld(logits, s["data"]) - s["corrupted_ld"]) / (s["clean_ld"] - s["corrupted_ld"])
    base, grads = hooked_acts_grads(ioi_model, s["corrupted"], IOI_NAMES, metric)
    source, _ = hooked_acts_grads(ioi_model, s["clean"], IOI_NAMES, metric)
    return base, source, grads


def make_rep(model, n_batch, n, seed):
    bos, vocab = model.tokenizer.bos_token_id, model.cfg.d_vocab
    gen = torch.Generator().manual_seed(seed)

    def draw():
        r = torch.randint(0, vocab - 1, (n_batch, n), generator=gen)
        return r + (r >= bos).long()

    r, other = draw(), draw()
    col = torch.full((n_batch, 1), bos, dtype=torch.long)
    return {"clean": torch.cat([col, r, r], 1), "corrupted": torch.cat([col, other, r], 1), "n": n}


@pytest.fixture(scope="session")
def rep_small(ind_model):
    return make_rep(ind_model, 2, 6, seed=11)


@pytest.fixture(scope="session")
def rep_fresh(ind_model):
    return make_rep(ind_model, 3, 9, seed=2024)


@pytest.fixture(scope="session")
def rep_stored(ind_model, rep_small):
    """(base = clean acts, source = corrupted acts, grads at the clean run) of the second-copy log-probability."""
    from transformer_lens import utilities

    r = rep_small
    names = [f"blocks.{li}.attn.hook_{a}" for li in range(2) for a in ("q", "k", "z", "pattern")]
    metric = lambda logits: -utilities.lm_cross_entropy_loss(logits, r["clean"], per_token=True)[:, r["n"] + 1:].mean()
    base, grads = hooked_acts_grads(ind_model, r["clean"], names, metric)
    source, _ = hooked_acts_grads(ind_model, r["corrupted"], names, metric)
    return base, source, grads


@pytest.fixture(scope="session")
def ref_results():
    """Reference results computed once per session (wrong variants rerun the checks)."""
    return {}


def cached(store: dict, key, compute):
    if key not in store:
        store[key] = compute()
    return store[key]
