"""OpenAI /v1/embeddings request model (pydantic, validated once at the edge, with vLLM's extensions) and the
documented response shape (for /openapi.json and tests; responses are built without pydantic)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

# A string, a list of strings, one token-id list, or a list of token-id lists (OpenAI's four shapes).
EmbeddingInput = Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]


class CreateEmbeddingRequest(BaseModel):
    """POST /v1/embeddings body."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: str | None = None  # an end-user id for the caller's own records; nothing to act on here
    # vLLM extensions: keep only the last k tokens of each input (-1 = as many as the model's context holds)
    truncate_prompt_tokens: StrictInt | None = Field(default=None, ge=-1)
    priority: StrictInt | None = None  # lower = more urgent (admission queues; engines that support it)
    request_id: str | None = None

    @field_validator("input")
    @classmethod
    def _input_nonempty(cls, v: EmbeddingInput) -> EmbeddingInput:
        if isinstance(v, list) and not v:
            raise ValueError("input must not be an empty list")
        if isinstance(v, list) and isinstance(v[0], int) and any(t < 0 for t in v):
            raise ValueError("token ids must be >= 0")
        if isinstance(v, list) and isinstance(v[0], list) and any(t < 0 for ids in v for t in ids):
            raise ValueError("token ids must be >= 0")
        return v

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _truncate(cls, v: int | None) -> int | None:
        if v == 0:
            raise ValueError("truncate_prompt_tokens must be -1 (the model's context length) or >= 1")
        return v

    __openapi_paths__ = {
        "/v1/embeddings": {"post": {
            "operationId": "createEmbedding", "summary": "Embeddings of one or more inputs (embedding models)",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CreateEmbeddingRequest"}}}},
            "responses": {
                "200": {"description": "One embedding per input, in input order", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/CreateEmbeddingResponse"}}}},
                **{str(c): {"description": "Error", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
                   for c in (400, 401, 404, 413, 415, 429, 500, 503, 504)}}}},
    }

    def inputs(self) -> list[str | list[int]]:
        """The inputs as a list, one entry per embedding (a token-id list is one input)."""
        v = self.input
        if isinstance(v, str):
            return [v]
        if isinstance(v[0], int):
            return [v]  # type: ignore[list-item]
        return list(v)  # type: ignore[arg-type]


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # floats, or base64 of little-endian float32 (encoding_format=base64)
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[EmbeddingObject]
    usage: EmbeddingUsage
