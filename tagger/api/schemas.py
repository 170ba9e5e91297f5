"""Request and response models of the HTTP API, for pydantic 1 (A1111) and 2 (Forge).

No ``from __future__ import annotations`` in this package: FastAPI 0.94 with pydantic 1 (the WebUI's
versions) resolves endpoint and model annotations at runtime and needs real types.
"""

from typing import Any, get_origin, get_type_hints

import pydantic
from pydantic import BaseModel, Field, create_model

from tagger.options import OPTION_FIELDS, TagOptions

PYDANTIC_V2 = int(pydantic.VERSION.split(".")[0]) >= 2


def _no_huge_ints(value: Any) -> Any:
    # pydantic 1 lets OverflowError escape from float("9" * 400): refuse such numbers as a field error.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1000:
        raise ValueError("number too large")
    return value


if PYDANTIC_V2:

    class _RequestModel(BaseModel):
        """Unknown fields are kept (and reported as warnings), never refused: older clients send extras."""

        model_config = pydantic.ConfigDict(extra="allow")

    def unknown_fields(req: BaseModel) -> list[str]:
        return sorted(req.model_extra or {})

else:

    class _RequestModel(BaseModel):  # type: ignore[no-redef]
        """Unknown fields are kept (and reported as warnings), never refused: older clients send extras."""

        class Config:
            extra = "allow"

        _check_ints = pydantic.validator("*", pre=True, allow_reuse=True)(_no_huge_ints)

    def unknown_fields(req: BaseModel) -> list[str]:
        return sorted(set(req.__dict__) - set(req.__fields__))


def _json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[]" if not value else repr(list(value))
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _option_fields() -> dict[str, Any]:
    """Request fields for every TagOptions field, from its metadata: optional, with range and description.

    Tag lists accept a list of strings or one comma-separated string.
    """
    hints = get_type_hints(TagOptions)
    defs: dict[str, Any] = {}
    for name, f in OPTION_FIELDS.items():
        typ: Any = hints[name]
        limits = {k: f.metadata[k] for k in ("ge", "le") if k in f.metadata}
        if name == "category_thresholds":  # {category: threshold}; the range is checked per value
            typ, limits = dict[str, float], {}
        elif get_origin(typ) is tuple:
            typ = list[str] | str
        default = "{}" if name == "category_thresholds" else _json_text(f.default)
        description = f"{f.metadata.get('description', '')} Default: {default}."
        defs[name] = (typ | None, Field(None, description=description, **limits))
    return defs


_MODEL_DESCRIPTION = (
    "Model name, as listed by GET interrogators: a catalog model or a folder in the models folder (the "
    "earlier extensions' names, such as wd14-vit-v2, are accepted too). A catalog model not downloaded yet "
    "is downloaded first."
)
_THRESHOLD_DESCRIPTION = (
    "The earlier extensions' threshold, with their meaning: minimum probability of every tag (0..1). Sets "
    "general_threshold, and character_threshold unless that is given."
)
_IMAGE_DESCRIPTION = (
    "The image file (PNG, JPEG, WebP, ...), base64-encoded. A data: URL prefix such as "
    "'data:image/png;base64,', line breaks and the URL-safe alphabet are accepted."
)


_EMBEDDING_DESCRIPTION = (
    "Also answer the model's image embedding (models with an embedding output, such as PixAI's tagger); the "
    "model then runs even for an image the probability cache knows."
)


class _InterrogateFields(_RequestModel):
    image: str = Field(..., description=_IMAGE_DESCRIPTION)
    model: str = Field(..., description=_MODEL_DESCRIPTION)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description=_THRESHOLD_DESCRIPTION)
    embedding: bool = Field(False, description=_EMBEDDING_DESCRIPTION)


class _BatchFields(_RequestModel):
    images: list[str] = Field(
        ...,
        description="The images, each base64-encoded as in POST interrogate; answered in this order.",
    )
    model: str = Field(..., description=_MODEL_DESCRIPTION)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description=_THRESHOLD_DESCRIPTION)
    embedding: bool = Field(False, description=_EMBEDDING_DESCRIPTION)


InterrogateRequest = create_model(  # type: ignore[call-overload]
    "InterrogateRequest", __base__=_InterrogateFields, __module__=__name__, **_option_fields()
)
InterrogateRequest.__doc__ = "One image to tag, with the earlier extensions' fields and every tag option."
InterrogateBatchRequest = create_model(  # type: ignore[call-overload]
    "InterrogateBatchRequest", __base__=_BatchFields, __module__=__name__, **_option_fields()
)
InterrogateBatchRequest.__doc__ = "Several images to tag with one model and one set of options."


class UnloadRequest(_RequestModel):
    model: str | None = Field(None, description="The model to unload; all models when left out.")


_CAPTION_DESCRIPTION = (
    "The earlier extensions' answer: every rating (in the model's order), then the tags that passed, "
    "highest probability first, each with its probability."
)


class EmbeddedOut(BaseModel):
    """The generation data the image carries (A1111/Forge infotext, NovelAI, ComfyUI)."""

    source: str = Field(..., description="Where it was read: a1111, a1111-exif, novelai, comfyui, comfyui-workflow.")
    prompt: str = Field(..., description="The prompt; empty when it could not be found (see note).")
    negative_prompt: str = Field(..., description="The negative prompt; empty when there is none.")
    settings: dict[str, str] = Field(..., description="The settings (Steps, Sampler, CFG scale, Seed, Size...).")
    note: str | None = Field(None, description="What could not be read, and why; null when all was read.")


class JudgedOut(BaseModel):
    text: str = Field(..., description="The item as the prompt has it (no weight or escapes), or the tag as shown.")
    tag: str | None = Field(None, description="The model's tag (csv name); left out when it has none.")
    probability: float | None = Field(None, description="The model's probability of the tag.")
    reason: str | None = Field(
        None, description="Why it cannot be judged: network, embedding, quality, rating, artist or unknown."
    )


class ComparisonOut(BaseModel):
    """The embedded prompt's items against the model, by the request's thresholds."""

    confirmed: list[JudgedOut] = Field(..., description="Embedded tags at or above the threshold.")
    weak: list[JudgedOut] = Field(..., description="Embedded tags the model knows, below the threshold.")
    not_judgeable: list[JudgedOut] = Field(
        ..., description="Embedded items that are not tags of this model (LoRAs, quality tags, free text...)."
    )
    added: list[JudgedOut] = Field(..., description="Tags of the answer that the embedded prompt lacks.")
    thresholds: dict[str, float] = Field(..., description="The general and character thresholds used.")
    merged_prompt: str = Field(
        ..., description="The embedded prompt without its weak tags and excludes, plus the tags it lacks."
    )
    merged_prompt_without_networks: str = Field(
        ..., description="The same without LoRA/extra-network and embedding references."
    )


class TagsOut(BaseModel):
    caption: dict[str, float] = Field(..., description=_CAPTION_DESCRIPTION)
    prompt: str = Field(..., description="The tags as a prompt, formatted by the options.")
    rating: dict[str, float] = Field(..., description="Every rating with its probability, highest first.")
    general: dict[str, float] = Field(..., description="General tags that passed, in prompt order (csv names).")
    character: dict[str, float] = Field(..., description="Character tags that passed, in prompt order.")
    embedded: EmbeddedOut | None = Field(
        None, description="The generation data the image carries; left out for an image without any."
    )
    comparison: ComparisonOut | None = Field(
        None, description="The embedded prompt against this answer; left out when there is no embedded prompt."
    )


_CATEGORIES_DESCRIPTION = (
    "Every other category the model has (copyright, artist, meta, year, quality, ...) with the tags of it that "
    "passed, in prompt order; left out for models with only rating, general and character tags."
)
_EMBEDDING_OUT = "The image embedding, when it was asked for (embedding: true); left out otherwise."
_OPENVINO_LABELS = (
    "OpenVINO's device with the precision it computes in (OpenVINO CPU bf16, OpenVINO CPU fp32, OpenVINO GPU fp16)"
)
_PROVIDER = (
    f"Where it ran: CPU or CUDA (ONNX Runtime), {_OPENVINO_LABELS}, or cache when the probability cache answered."
)
_PROVIDER_LOADED = f"What runs it: CPU or CUDA (ONNX Runtime), or {_OPENVINO_LABELS}."
_PROVIDER_NOTE = (
    "Why the device asked for is not what runs, with the fix (CUDA that does not start; cpu-bf16 on a CPU without "
    "bf16 units); null otherwise."
)


class ItemTagsOut(TagsOut):
    """One image's tags in a batch answer (the fields after ``character`` are new: older clients ignore them)."""

    categories: dict[str, dict[str, float]] = Field(default_factory=dict, description=_CATEGORIES_DESCRIPTION)
    embedding: list[float] | None = Field(None, description=_EMBEDDING_OUT)


class InterrogateResponse(TagsOut):
    model: str = Field(..., description="The model that answered (its catalog or folder name).")
    provider: str = Field(..., description=_PROVIDER)
    provider_note: str | None = Field(None, description=_PROVIDER_NOTE)
    elapsed: float = Field(..., description="Seconds this request took on the server.")
    warnings: list[str] = Field(default_factory=list, description="Ignored fields, renamed models.")
    categories: dict[str, dict[str, float]] = Field(default_factory=dict, description=_CATEGORIES_DESCRIPTION)
    embedding: list[float] | None = Field(None, description=_EMBEDDING_OUT)


class ItemError(BaseModel):
    error: str = Field(..., description="What is wrong with this image.")
    field: str = Field(..., description="Which image: images[i].")


class BatchItem(BaseModel):
    index: int = Field(..., description="Position of the image in the request.")
    ok: bool = Field(..., description="True when the image was tagged.")
    result: ItemTagsOut | None = Field(None, description="The tags; null when the image failed.")
    error: ItemError | None = Field(None, description="Why the image failed; null when it was tagged.")


class InterrogateBatchResponse(BaseModel):
    results: list[BatchItem] = Field(..., description="One item per image, in request order.")
    model: str = Field(..., description="The model that answered.")
    provider: str = Field(..., description=_PROVIDER)
    provider_note: str | None = Field(None, description=_PROVIDER_NOTE)
    elapsed: float = Field(..., description="Seconds this request took on the server.")
    warnings: list[str] = Field(default_factory=list, description="Ignored fields, renamed models.")


class InterrogatorsResponse(BaseModel):
    models: list[str] = Field(..., description="Names of the catalog models and the local model folders.")


class ModelOut(BaseModel):
    name: str
    display_name: str
    family: str = Field(..., description="v3, v2, v1, pixai, camie, cl, mldanbooru, z3d, or local.")
    repo_id: str | None = Field(None, description="Hugging Face repository; null for local models.")
    revision: str | None = None
    downloaded: bool = Field(..., description="Its files are here (models folder or Hugging Face cache).")
    size_bytes: int | None = Field(None, description="Size of its files; null when not downloaded.")
    tags: int | None = Field(None, description="Number of tags the model knows.")
    loaded: bool = Field(..., description="In memory now.")
    loading: bool = Field(..., description="Being downloaded or loaded now.")


class ModelsResponse(BaseModel):
    models: list[ModelOut]


class LoadedOut(BaseModel):
    name: str
    provider: str = Field(..., description=_PROVIDER_LOADED)
    provider_note: str | None = Field(None, description=_PROVIDER_NOTE)
    input_size: int = Field(..., description="Side of the square the model sees, in pixels.")
    fixed_batch: int | None = Field(None, description="Batch size the model is fixed to; null if dynamic.")
    threads: int = Field(..., description="CPU threads of its session.")


class LoadedResponse(BaseModel):
    models: list[LoadedOut]


class UnloadResponse(BaseModel):
    unloaded: int = Field(..., description="How many models were unloaded.")
    models: list[str] = Field(..., description="Their names.")
    loaded: list[LoadedOut] = Field(..., description="What is still loaded.")


class ErrorResponse(BaseModel):
    error: str = Field(..., description="What went wrong, naming the field.")
    field: str | None = Field(None, description="The request field at fault (image, model, images[2]...).")
    detail: Any = Field(None, description="More: FastAPI's validation errors, or the known models.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (401, "Missing or wrong credentials (when the server has --api-auth)."),
        (404, "Unknown model; detail.known lists the known ones."),
        (413, "Request body or number of images over the limit."),
        (422, "Invalid field: not base64, not an image, too many pixels, out of range..."),
        (503, "The model cannot be had now (offline, download failed, or still downloading)."),
    )
}
