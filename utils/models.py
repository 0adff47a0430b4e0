"""Every model the course uses is loaded here: hub models and the project's own shipped models.

`load_model(name)` is the one entry point notebooks call. It prints what it loaded, so a learner always
knows whether a result came from GPT-2 small or from an offline stand-in.

Shipped models live in `utils/assets/<name>/` with a `model.json` that says how to load them and a
`checksums.sha256` (sha256sum format) that is verified before loading. Two formats:
- "native": `model.pt` = {"cfg": TransformerBridgeConfig.to_dict(), "state_dict": ...}, tokenizer folder
  named by "tokenizer" (a sibling asset or a subfolder);
- "hf": an HF-format folder (config.json + weights), booted with `TransformerBridge.boot_transformers`
  exactly like a hub model, tokenizer from the asset named by "tokenizer".

Environment variables (all optional):
- MICOURSE_OFFLINE=1 (or HF_HUB_OFFLINE=1): use shipped models instead of the hub, without trying the network.
- MICOURSE_GPT2_PATH=<folder>: load "gpt2" from this local HF-format folder through the hub code path, even
  offline. CI points it at a GPT-2-small-shaped model with random weights (`write_random_gpt2`), so every
  notebook cell that runs on GPT-2 is executed; its results are meaningless, only its shapes are real.
- MICOURSE_DEVICE=cpu|cuda|auto: where hub models (GPT-2) go; default cpu. "auto" takes the GPU when
  torch.cuda.is_available(). Shipped models are tiny and always stay on the CPU. The load message says which.
- MICOURSE_HUB_TIMEOUT=<seconds> (default 3): how long to wait for the hub to answer before falling back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import urllib.parse
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parent / "assets"
OFFLINE_ENV = "MICOURSE_OFFLINE"
GPT2_PATH_ENV = "MICOURSE_GPT2_PATH"
DEVICE_ENV = "MICOURSE_DEVICE"
HUB_TIMEOUT_ENV = "MICOURSE_HUB_TIMEOUT"

# Hub models the course knows, with what they are.
HUB_MODELS = {
    "gpt2": "GPT-2 small (124M parameters, 12 layers x 12 heads)",
    "gpt2-small": "GPT-2 small (124M parameters, 12 layers x 12 heads)",
}
HUB_IDS = {"gpt2-small": "gpt2"}


def offline() -> bool:
    """True when the course must not touch a model hub."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def hub_reachable(timeout: float | None = None) -> str | None:
    """None if the model hub answers a TCP connection within `timeout` seconds, else why not.

    Without this, an unreachable hub costs ~30 s of retries inside huggingface_hub before `load_model` can fall
    back. DNS lookups ignore socket timeouts, so the probe runs in a daemon thread that is abandoned on timeout.
    """
    timeout = float(os.environ.get(HUB_TIMEOUT_ENV, "3")) if timeout is None else timeout
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(f"{type(err).__name__}: {err}"[:120])

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        return f"{host} did not answer within {timeout:g} s"
    return None if result[0] is None else f"{host} cannot be reached ({result[0]})"


def choose_device(device: str | None = None) -> torch.device:
    """The device for a hub model: `device`, else MICOURSE_DEVICE, else the CPU ("auto": the GPU if present)."""
    wanted = (device or os.environ.get(DEVICE_ENV, "") or "cpu").lower()
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{DEVICE_ENV}/device asks for {wanted!r}, but torch sees no GPU "
                           f"(torch.cuda.is_available() is False). Use 'cpu' or 'auto'.")
    return torch.device(wanted)


def _device_words(device: torch.device) -> str:
    if device.type == "cuda":
        return f"on the GPU ({torch.cuda.get_device_name(device)})"
    hint = f"; a GPU is present: {DEVICE_ENV}=auto would use it" if torch.cuda.is_available() else ""
    return f"on the CPU{hint}"


def write_random_gpt2(folder: str | Path, seed: int = 0, **config) -> Path:
    """Write a GPT-2-small-shaped model with random weights (12 layers, 12 heads, d_model 768, GPT-2's
    vocabulary and the shipped GPT-2 tokenizer) as an HF-format folder, laid out like the hub's "gpt2".

    For exercising the GPT-2 code path without the hub (MICOURSE_GPT2_PATH); `config` overrides GPT2Config
    fields (e.g. n_layer=2 for a quick test). Returns the folder.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(**config))  # the defaults are GPT-2 small's configuration
    hf.save_pretrained(folder)
    for f in asset_dir("gpt2_tokenizer").iterdir():
        if f.suffix == ".json":
            shutil.copy(f, folder / f.name)
    return folder


def shipped_models() -> list[str]:
    """Names of the models shipped in utils/assets (folders with a model.json)."""
    return sorted(p.parent.name for p in ASSETS.glob("*/model.json"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    """Write `checksums.sha256` for every file in an asset folder (used by the training scripts)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "checksums.sha256")
    lines = [f"{sha256(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    (folder / "checksums.sha256").write_text("\n".join(lines) + "\n")


def asset_dir(name: str, verify: bool = True) -> Path:
    """The folder of a shipped asset, with its checksums verified."""
    folder = ASSETS / name
    if not folder.is_dir():
        raise FileNotFoundError(f"No shipped asset {name!r}; shipped models are {shipped_models()}")
    sums = folder / "checksums.sha256"
    if verify and sums.exists():
        for line in sums.read_text().splitlines():
            digest, rel = line.split(maxsplit=1)
            if sha256(folder / rel) != digest:
                raise OSError(f"Checksum mismatch for {folder / rel}: the file is corrupt or was changed; "
                              f"re-run the training script that made it or restore it from git.")
    return folder


def load_tokenizer(name: str):
    """A tokenizer shipped as an HF folder (an asset name, or a path)."""
    from transformers import AutoTokenizer

    path = Path(name) if Path(name).is_dir() else asset_dir(name)
    return AutoTokenizer.from_pretrained(str(path))


def _tokenizer_for(folder: Path, spec: dict):
    ref = spec.get("tokenizer")
    if ref is None:
        return None
    return load_tokenizer(str(folder / ref) if (folder / ref).is_dir() else ref)


def save_native(model, folder: Path, checkpoint: str = "model.pt", dtype: torch.dtype | None = None) -> Path:
    """Save a native TransformerBridge as {"cfg", "state_dict"} (optionally cast, e.g. to float16)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).clone()
             for k, v in model.state_dict().items()}
    path = folder / checkpoint
    torch.save({"cfg": model.cfg.to_dict(), "state_dict": state}, path)
    return path


def load_native_checkpoint(path: Path, tokenizer=None):
    """Rebuild a native TransformerBridge from a file written by `save_native` (float32, eval mode)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = TransformerBridge.boot_native(TransformerBridgeConfig.from_dict(ck["cfg"]), tokenizer=tokenizer)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ck["state_dict"].items()}
    model.load_state_dict(state)
    model.eval()
    return model


def load_hf_folder(path: str | Path, tokenizer=None, compatibility_mode: bool = True):
    """Boot an HF-format model (a hub id or a local folder) as a TransformerBridge.

    This is the same code path for GPT-2 small on the hub and for a local folder, so the hub path is
    tested by pointing it at a folder.
    """
    from transformer_lens.model_bridge import TransformerBridge

    kwargs = {"tokenizer": tokenizer} if tokenizer is not None else {}
    model = TransformerBridge.boot_transformers(str(path), **kwargs)
    if compatibility_mode:
        model.enable_compatibility_mode()
    model.eval()
    return model


def _load_shipped(name: str, checkpoint: str | None = None):
    folder = asset_dir(name)
    spec = json.loads((folder / "model.json").read_text())
    tokenizer = _tokenizer_for(folder, spec)
    if spec["format"] == "native":
        model = load_native_checkpoint(folder / (checkpoint or spec.get("checkpoint", "model.pt")), tokenizer)
    elif spec["format"] == "hf":
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(str(folder / spec.get("weights", ".")), dtype=torch.float32)
        model = TransformerBridge.boot_transformers(spec["architecture"], hf_model=hf, tokenizer=tokenizer)
        if spec.get("compatibility_mode", True):
            model.enable_compatibility_mode()
        model.eval()
    else:
        raise ValueError(f"{folder / 'model.json'}: unknown format {spec['format']!r} (expected 'native' or 'hf')")
    model.course_name = name
    return model, spec


def load_model(name: str, offline_alternative: str | None = None, checkpoint: str | None = None,
               verbose: bool = True, device: str | None = None):
    """Load a model by name and say which one was loaded, and on which device.

    name: a hub model ("gpt2") or a shipped model (see `shipped_models()`).
    offline_alternative: the shipped model to use instead of a hub model when offline (MICOURSE_OFFLINE=1)
        or when the hub cannot be reached (probed for a few seconds first, see `hub_reachable`).
    checkpoint: for shipped native models with several checkpoints, the file to load.
    device: for hub models, "cpu" (default), "cuda" or "auto" (the GPU if present); default: MICOURSE_DEVICE.
    """
    say = print if verbose else (lambda *a, **k: None)
    if name in shipped_models():
        model, spec = _load_shipped(name, checkpoint)
        say(f"Loaded shipped model '{name}' (offline, from {ASSETS / name}, on the CPU): {spec.get('description', '')}")
        return model
    if name not in HUB_MODELS:
        raise ValueError(f"Unknown model {name!r}. Hub models: {sorted(HUB_MODELS)}; shipped models: {shipped_models()}.")
    where = choose_device(device)
    local = os.environ.get(GPT2_PATH_ENV, "") if HUB_IDS.get(name, name) == "gpt2" else ""
    if local:
        model = load_hf_folder(local).to(where)
        model.course_name = name
        say(f"Loaded '{name}' from the local folder {local} ({GPT2_PATH_ENV}; if it was made by write_random_gpt2, "
            f"its weights are random and its results meaningless), {_device_words(where)}: "
            f"{model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}")
        return model
    repo = HUB_IDS.get(name, name)
    reason = f"{OFFLINE_ENV}=1 or HF_HUB_OFFLINE=1 is set" if offline() else None
    source, origin = repo, "from the model hub"
    if reason is None:
        unreachable = hub_reachable()
        if unreachable:
            source = cached_snapshot(repo)
            origin = "from the local Hugging Face cache (the hub cannot be reached)"
            reason = None if source else f"{unreachable}, and '{name}' is not in the local Hugging Face cache"
    if reason is None:
        try:
            model = load_hf_folder(source).to(where)
            model.course_name = name
            say(f"Loaded '{name}' {origin}, {_device_words(where)}: {HUB_MODELS[name]} "
                f"(TransformerBridge, compatibility mode)")
            return model
        except OSError as err:  # no network, hub unreachable, missing files
            reason = f"the hub could not be reached ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    if offline_alternative is None:
        raise RuntimeError(f"Cannot load '{name}': {reason}, and no offline alternative was given. "
                           f"Connect to the internet, or pass offline_alternative=one of {shipped_models()}.")
    say(f"Not loading '{name}': {reason}. Using the shipped offline model '{offline_alternative}' instead.")
    return load_model(offline_alternative, checkpoint=checkpoint, verbose=verbose)


def cached_snapshot(repo_id: str) -> str | None:
    """The local Hugging Face cache folder of a hub model, if it was downloaded before (loads with no network)."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not installed, not cached, or an incomplete download
        return None
    has_weights = any((folder / f).exists() for f in ("model.safetensors", "pytorch_model.bin"))
    return str(folder) if (folder / "config.json").exists() and has_weights else None


def load_checkpoint_series(name: str, folder: str = "checkpoints") -> tuple[list[int], list[dict]]:
    """Every checkpoint of a shipped training run, in training order: (epochs, float32 state dicts).

    The files are `<asset>/<folder>/epoch_XXXXX.pt` in `save_native` format (e.g. the grokking run).
    To get one of them as a model: `load_model(name, checkpoint="checkpoints/epoch_01000.pt")`; to turn a
    state dict into a model: `model.load_state_dict(state)` on any model of the same config.
    """
    files = sorted((asset_dir(name) / folder).glob("epoch_*.pt"))
    if not files:
        raise FileNotFoundError(f"No checkpoints {folder}/epoch_*.pt in shipped asset {name!r}")
    epochs, states = [], []
    for path in files:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        epochs.append(int(path.stem.split("_")[1]))
        states.append({k: (v.float() if v.is_floating_point() else v) for k, v in ck["state_dict"].items()})
    return epochs, states
