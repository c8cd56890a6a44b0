"""OpenAI-compatible request validation and response shapes.

Request bodies are validated by the pydantic models below. They are written
here rather than taken from the `openai` package because that package
describes requests as TypedDicts without validation, and the router needs
its own rules (strict types, the `ignore_eos` extension, rejecting options
it does not implement). Responses are built from the `openai` package's own
pydantic types, so their shape is the one the official client parses.

Errors use OpenAI's body: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

from openai.types import Completion, CompletionChoice, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice as ChatChoice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel, ConfigDict, Field, ValidationError

RequestModel = TypeVar("RequestModel", bound="_SamplingFields")

# OpenAI's limit on stop sequences per request.
MAX_STOP_SEQUENCES = 4
# Default max_tokens of /v1/completions, as in the OpenAI API.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class RequestError(Exception):
    """A request the router rejects, rendered as an OpenAI error body."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.error_type = error_type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: bool = False


class _SamplingFields(BaseModel):
    """Fields shared by completions and chat completions."""

    # Strict: "5" is not an int and true is not a number. Unknown keys are
    # kept and ignored, because clients send fields such as `user`.
    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    max_tokens: int | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, lt=2**64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    # Extension (also accepted by vLLM): generate until max_tokens even past
    # the end-of-sequence token. Trace replay uses it to fix output lengths.
    ignore_eos: bool = False
    # Accepted only at their no-op values; anything else is rejected rather
    # than silently ignored.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None


class CompletionRequest(_SamplingFields):
    # A string, a list of token ids, or a batch of one of either.
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    # Newer name of max_tokens in the chat API; either may be given.
    max_completion_tokens: int | None = None
    tools: list[Any] | None = None
    top_logprobs: int | None = None


def _param_name(location: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as OpenAI does, e.g. messages[0].content."""
    name = ""
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name


def _is_union_branch(part: int | str) -> bool:
    # pydantic names the failing branch of a union by its type ("str",
    # "list[int]", a model class name); field names are lower-case words.
    return isinstance(part, str) and ("[" in part or part in {"str", "int"} or part[:1].isupper())


def _union_prefix(location: tuple[int | str, ...]) -> tuple[int | str, ...] | None:
    """Return the location of the union a branch error belongs to, or None."""
    for index, part in enumerate(location):
        if _is_union_branch(part):
            return location[:index]
    return None


def _describe(error: ValidationError, body: dict[str, Any]) -> tuple[str, str | None]:
    """Return (message, param) for the first invalid field of a validation error."""
    errors = error.errors()
    first = errors[0]
    full_location = tuple(part for part in first["loc"] if not _is_union_branch(part))
    param = _param_name(full_location) or None
    if first["type"] == "missing":
        return f"missing required field {param!r}", param

    # A value that fits no branch of a union gets one error per branch;
    # naming the accepted types reads better than the first branch's error.
    union = _union_prefix(tuple(first["loc"]))
    if union is not None:
        branches = [
            item["loc"][len(union)] for item in errors if _union_prefix(tuple(item["loc"])) == union
        ]
        accepted = list(dict.fromkeys(branches))
        if len(accepted) > 1:
            param = _param_name(union) or None
            shown = _shorten(repr(_value_at(body, union)))
            return (
                f"invalid value for {param!r}: expected one of {', '.join(accepted)} (got {shown})",
                param,
            )
    shown = _shorten(repr(first.get("input")))
    return f"invalid value for {param!r}: {first['msg']} (got {shown})", param


def _value_at(body: dict[str, Any], location: tuple[int | str, ...]) -> Any:
    value: Any = body
    for part in location:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_request(model_class: type[RequestModel], body: Any) -> RequestModel:
    """Validate a decoded JSON body, raising RequestError naming the first bad field."""
    if not isinstance(body, dict):
        raise RequestError(
            f"the request body must be a JSON object, got {type(body).__name__}", param=None
        )
    try:
        request = model_class.model_validate(body)
    except ValidationError as error:
        raise RequestError(*_describe(error, body)) from error
    _check_common(request)
    return request


def _check_common(request: _SamplingFields) -> None:
    if request.max_tokens is not None and request.max_tokens < 1:
        raise RequestError(
            f"max_tokens must be at least 1, got {request.max_tokens}", param="max_tokens"
        )
    if request.n != 1:
        raise RequestError(f"n must be 1 (one choice per request), got {request.n}", param="n")
    if isinstance(request.stop, list) and len(request.stop) > MAX_STOP_SEQUENCES:
        raise RequestError(
            f"stop takes at most {MAX_STOP_SEQUENCES} sequences, got {len(request.stop)}",
            param="stop",
        )
    if any(not sequence for sequence in stop_sequences(request)):
        raise RequestError("stop sequences must not be empty strings", param="stop")
    unsupported = {
        "frequency_penalty": request.frequency_penalty not in (None, 0, 0.0),
        "presence_penalty": request.presence_penalty not in (None, 0, 0.0),
        "logit_bias": bool(request.logit_bias),
        "logprobs": request.logprobs not in (None, False, 0),
    }
    if isinstance(request, CompletionRequest):
        unsupported["echo"] = request.echo
        unsupported["best_of"] = request.best_of not in (None, 1)
        unsupported["suffix"] = bool(request.suffix)
    if isinstance(request, ChatCompletionRequest):
        unsupported["tools"] = bool(request.tools)
        unsupported["top_logprobs"] = request.top_logprobs not in (None, 0)
        if request.max_completion_tokens is not None and request.max_completion_tokens < 1:
            raise RequestError(
                f"max_completion_tokens must be at least 1, got {request.max_completion_tokens}",
                param="max_completion_tokens",
            )
    for field, is_set in unsupported.items():
        if is_set:
            raise RequestError(f"{field} is not supported by this server; omit it", param=field)


def stop_sequences(request: _SamplingFields) -> list[str]:
    if request.stop is None:
        return []
    if isinstance(request.stop, str):
        return [request.stop]
    return list(request.stop)


def single_prompt(request: CompletionRequest) -> str | list[int]:
    """Return the one prompt of a completions request (a batch must hold one)."""
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        raise RequestError("prompt must not be empty", param="prompt")
    if isinstance(prompt[0], int):
        return prompt
    if len(prompt) != 1:
        raise RequestError(
            f"prompt batches are not supported: send one prompt per request, got {len(prompt)}",
            param="prompt",
        )
    inner = prompt[0]
    if not inner:
        raise RequestError("prompt must not be empty", param="prompt")
    return inner


# ---------------------------------------------------------------------------
# Responses.


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def model_list(model_name: str, created: int) -> dict[str, Any]:
    model = Model(id=model_name, created=created, object="model", owned_by="disagg")
    return {"object": "list", "data": [model.model_dump(mode="json", exclude_none=True)]}


def completion(
    request_id: str, model_name: str, text: str, finish_reason: str, usage_: CompletionUsage
) -> dict[str, Any]:
    response = Completion(
        id=request_id,
        object="text_completion",
        created=int(time.time()),
        model=model_name,
        choices=[CompletionChoice(index=0, text=text, finish_reason=finish_reason)],
        usage=usage_,
    )
    return response.model_dump(mode="json")


def completion_chunk(
    request_id: str,
    model_name: str,
    created: int,
    text: str,
    finish_reason: str | None,
    usage_: CompletionUsage | None = None,
) -> dict[str, Any]:
    """One SSE chunk of a streamed completion.

    A usage-only chunk (OpenAI's `stream_options.include_usage`) has an
    empty choices list. `model_construct` is used because the `openai`
    Completion type declares finish_reason non-null, while streamed chunks
    carry null until the last one.
    """
    choices = []
    if usage_ is None:
        choices = [
            CompletionChoice.model_construct(
                index=0, text=text, finish_reason=finish_reason, logprobs=None
            )
        ]
    response = Completion.model_construct(
        id=request_id,
        object="text_completion",
        created=created,
        model=model_name,
        choices=choices,
        usage=usage_,
        system_fingerprint=None,
    )
    return response.model_dump(mode="json", warnings=False)


def chat_completion(
    request_id: str, model_name: str, text: str, finish_reason: str, usage_: CompletionUsage
) -> dict[str, Any]:
    response = ChatCompletion(
        id=request_id,
        object="chat.completion",
        created=int(time.time()),
        model=model_name,
        choices=[
            ChatChoice(
                index=0,
                message=ChatCompletionMessage(role="assistant", content=text),
                finish_reason=finish_reason,
            )
        ],
        usage=usage_,
    )
    return response.model_dump(mode="json")


def chat_chunk(
    request_id: str,
    model_name: str,
    created: int,
    content: str | None,
    finish_reason: str | None,
    role: str | None = None,
    usage_: CompletionUsage | None = None,
) -> dict[str, Any]:
    """One SSE chunk of a streamed chat completion (usage-only when usage_ is set)."""
    choices = []
    if usage_ is None:
        choices = [
            ChunkChoice(
                index=0,
                delta=ChoiceDelta(role=role, content=content),
                finish_reason=finish_reason,
            )
        ]
    response = ChatCompletionChunk(
        id=request_id,
        object="chat.completion.chunk",
        created=created,
        model=model_name,
        choices=choices,
        usage=usage_,
    )
    return response.model_dump(mode="json")
