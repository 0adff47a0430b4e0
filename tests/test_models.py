"""Model loading: the hub path (tested on a local HF-format folder), offline fallbacks, checksums."""

import json
import shutil

import pytest
import torch

from micourse import models


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random GPT-2 saved exactly as a hub repository is laid out (config, weights, tokenizer)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=50257))
    hf.eval()
    hf.save_pretrained(folder)
    for f in models.asset_dir("gpt2_tokenizer").iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith((".json", ".txt")):
            shutil.copy(f, folder / f.name)
    return folder, hf


def test_hub_loading_path_boots_a_local_hf_folder_and_matches_hf(hf_folder):
    folder, hf = hf_folder
    model = models.load_hf_folder(folder)
    tokens = model.to_tokens("When Mary and John went to the store")
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = hf(tokens).logits.log_softmax(-1)
    # compatibility mode centres the unembedding: logits shift per position, log-probs do not
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert model.to_str_tokens(" Mary")[-1] == " Mary"


def test_offline_hub_model_falls_back_to_the_named_shipped_model(monkeypatch, capsys):
    monkeypatch.setenv("MICOURSE_OFFLINE", "1")
    shipped = [m for m in models.shipped_models()]
    if not shipped:
        pytest.skip("no shipped model yet")
    model = models.load_model("gpt2", offline_alternative=shipped[0])
    out = capsys.readouterr().out
    assert "Not loading 'gpt2'" in out and shipped[0] in out and model.course_name == shipped[0]


def test_offline_hub_model_without_alternative_names_the_shipped_ones(monkeypatch):
    monkeypatch.setenv("MICOURSE_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline_alternative"):
        models.load_model("gpt2")


def test_unknown_model_name_lists_what_exists():
    with pytest.raises(ValueError, match="Hub models"):
        models.load_model("gpt-5")


def test_a_corrupted_asset_is_refused(tmp_path, monkeypatch):
    asset = tmp_path / "toy"
    asset.mkdir()
    (asset / "weights.bin").write_bytes(b"original")
    (asset / "model.json").write_text(json.dumps({"format": "native"}))
    models.write_checksums(asset)
    monkeypatch.setattr(models, "ASSETS", tmp_path)
    assert models.asset_dir("toy") == asset
    (asset / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(OSError, match="Checksum mismatch"):
        models.asset_dir("toy")


def test_native_save_and_load_round_trip(tmp_path):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=8, d_vocab=11,
                                  attn_only=True, normalization_type=None, seed=0)
    model = TransformerBridge.boot_native(cfg)
    models.save_native(model, tmp_path)
    again = models.load_native_checkpoint(tmp_path / "model.pt")
    tokens = torch.randint(0, 11, (2, 5))
    with torch.no_grad():
        assert torch.allclose(model(tokens), again(tokens), atol=1e-6)


def test_every_shipped_model_loads_offline_and_says_so(capsys, monkeypatch):
    monkeypatch.setenv("MICOURSE_OFFLINE", "1")
    for name in models.shipped_models():
        model = models.load_model(name)
        assert f"Loaded shipped model '{name}'" in capsys.readouterr().out
        assert model.cfg.n_layers >= 1


def test_gpt2_path_env_boots_a_local_folder_through_the_hub_path_even_offline(tmp_path, monkeypatch, capsys):
    folder = models.write_random_gpt2(tmp_path / "gpt2", n_layer=1, n_head=2, n_embd=16, n_positions=32)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    monkeypatch.setenv("MICOURSE_OFFLINE", "1")
    monkeypatch.setenv(models.GPT2_PATH_ENV, str(folder))
    monkeypatch.delenv(models.DEVICE_ENV, raising=False)
    model = models.load_model("gpt2", offline_alternative="attn_only_2l")
    out = capsys.readouterr().out
    assert model.course_name == "gpt2" and (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model) == (1, 2, 16)
    assert str(folder) in out and "random" in out and "on the CPU" in out
    assert model.to_str_tokens(" Mary")[-1] == " Mary"  # the shipped GPT-2 tokenizer


def test_random_gpt2_has_gpt2_small_shape_by_default(monkeypatch):
    from transformers import GPT2Config

    cfg = GPT2Config()
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size) == (12, 12, 768, 50257)


def _fallback_seconds(monkeypatch, capsys) -> float:
    import time

    shipped = models.shipped_models()[0]
    models.load_model(shipped)  # imports and caches warm: what is left is the decision to fall back
    start = time.perf_counter()
    model = models.load_model(shipped, verbose=False)
    shipped_seconds = time.perf_counter() - start
    capsys.readouterr()
    start = time.perf_counter()
    model = models.load_model("gpt2", offline_alternative=shipped)
    seconds = time.perf_counter() - start - shipped_seconds
    out = capsys.readouterr().out
    assert model.course_name == shipped and "Not loading 'gpt2'" in out
    assert "cannot be reached" in out or "did not answer" in out
    return seconds


def _online(monkeypatch):
    for var in ("MICOURSE_OFFLINE", "HF_HUB_OFFLINE", models.GPT2_PATH_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(models, "cached_snapshot", lambda repo: None)


def test_an_unreachable_hub_falls_back_within_seconds(monkeypatch, capsys):
    """A refused connection (no network, or a firewall): the probe answers at once, no hub retries."""
    import socket

    _online(monkeypatch)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert _fallback_seconds(monkeypatch, capsys) < 5


def test_a_hanging_hub_lookup_falls_back_after_the_timeout(monkeypatch, capsys):
    """A DNS lookup or connection that hangs (captive portal, dropped packets) is abandoned after the timeout."""
    import time

    _online(monkeypatch)
    monkeypatch.setenv(models.HUB_TIMEOUT_ENV, "1")
    def hang(*args, **kwargs):
        time.sleep(30)
        raise OSError("the lookup hung (test)")

    monkeypatch.setattr(models.socket, "create_connection", hang)
    assert _fallback_seconds(monkeypatch, capsys) < 5


def test_a_cached_hub_model_loads_from_the_cache_when_the_hub_is_unreachable(tmp_path, monkeypatch, capsys):
    folder = models.write_random_gpt2(tmp_path / "snapshot", n_layer=1, n_head=2, n_embd=16, n_positions=32)
    _online(monkeypatch)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=None: "huggingface.co cannot be reached (test)")
    monkeypatch.setattr(models, "cached_snapshot", lambda repo: str(folder))
    model = models.load_model("gpt2", offline_alternative="attn_only_2l")
    assert model.course_name == "gpt2" and "local Hugging Face cache" in capsys.readouterr().out


def test_device_choice(monkeypatch):
    monkeypatch.delenv(models.DEVICE_ENV, raising=False)
    assert models.choose_device().type == "cpu"  # the default: the chapters' own tensors live on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.choose_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="no GPU"):
        models.choose_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.choose_device("auto").type == "cuda"
    monkeypatch.setenv(models.DEVICE_ENV, "auto")
    assert models.choose_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Test GPU")
    assert "GPU (Test GPU)" in models._device_words(torch.device("cuda"))
    assert "MICOURSE_DEVICE=auto" in models._device_words(torch.device("cpu"))


def test_thread_policy_on_import():
    """micourse sets torch's threads on import: 1 by default (as in CI), MICOURSE_THREADS when set."""
    import os
    import subprocess
    import sys

    code = ("import torch, micourse; a = torch.get_num_threads()\n"
            "with micourse.threads(): b = torch.get_num_threads()\n"
            "print(a, b, torch.get_num_threads(), micourse.all_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("MICOURSE_THREADS", "OMP_NUM_THREADS")}
    a, b, after, cores = map(int, subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                                 text=True, check=True).stdout.split())
    assert a == 1 and b == cores and after == 1
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MICOURSE_THREADS": "2"}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "2"
