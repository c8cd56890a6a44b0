"""Model facts the router needs (name, tokenizer, context), loaded without the weights."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServedModel:
    name: str
    tokenizer: object
    max_context: int
    vocab_size: int
    eos_token_ids: frozenset[int]


def load_served_model(
    model: str, cache_dir: str | None = None, *, revision: str | None = None
) -> ServedModel:
    """Load the tokenizer and config of `model` (a source as `disagg worker --model` takes).

    `revision` (branch, tag or commit) applies to Hugging Face model ids
    only, as in `disagg_worker.model.load_model`.

    Raises disagg_worker.model.ModelLoadError with a one-line message.
    """
    from transformers import AutoConfig

    from disagg_worker import model as model_loading

    # NOTE: _resolve_source is private to the model module. It is used because
    # it is the one place that maps a model source to a folder and a served
    # name, and the router must agree with the workers on both.
    path, name = model_loading._resolve_source(model, cache_dir)
    # load_tokenizer rejects a revision of a local folder before any download.
    tokenizer = model_loading.load_tokenizer(model, cache_dir=cache_dir, revision=revision)
    hub_options = {"revision": revision} if revision is not None else {}
    try:
        config = AutoConfig.from_pretrained(path, **hub_options)
    except (OSError, ValueError) as error:
        raise model_loading.ModelLoadError(
            f"cannot read the config of model {model!r} from {path}: {error}"
        ) from error
    text_config = config.get_text_config(decoder=True)
    eos_ids: set[int] = set()
    for value in (getattr(text_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            eos_ids.add(value)
        elif value is not None:
            eos_ids.update(int(item) for item in value)
    return ServedModel(
        name=name,
        tokenizer=tokenizer,
        max_context=int(text_config.max_position_embeddings),
        vocab_size=max(int(text_config.vocab_size), len(tokenizer)),
        eos_token_ids=frozenset(eos_ids),
    )
