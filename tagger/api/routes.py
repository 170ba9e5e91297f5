"""The routes. Each is a few lines over the engine's ``Tagger.tag_many``, the call the tab, the CLI and
batch captions make too: cache lookups, one download or load per model however many requests ask, the
model's run under the engine's lock, per-image errors."""

import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from tagger.api.auth import BasicAuth, DocumentedBasicAuth
from tagger.api.errors import ApiError, error_response, json_error
from tagger.api.limits import ApiLimits, LimitedRequest, check_length
from tagger.api.payload import decode_base64_image, legacy_caption
from tagger.api.schemas import (
    ERROR_RESPONSES,
    BatchItem,
    InterrogateBatchRequest,
    InterrogateBatchResponse,
    InterrogateRequest,
    InterrogateResponse,
    InterrogatorsResponse,
    ItemError,
    ItemTagsOut,
    LoadedOut,
    LoadedResponse,
    ModelOut,
    ModelsResponse,
    UnloadRequest,
    UnloadResponse,
    unknown_fields,
)
from tagger.catalog import canonical
from tagger.compare import report
from tagger.embedded import read_generation_data
from tagger.engine import ImageTags, Tagger
from tagger.errors import ImageError, OptionsError
from tagger.options import OPTION_FIELDS, TagOptions, options_from_mapping, parse_category_thresholds
from tagger.runtime import LoadedModel

log = logging.getLogger(__name__)


def request_options(req: BaseModel, warnings: list[str], base: TagOptions | None = None) -> TagOptions:
    """The TagOptions of a request; what it leaves out is ``base``'s (the model's own defaults).

    ``threshold`` keeps the earlier extensions' meaning, so that their clients get the tags they got: those
    extensions applied it to every non-rating tag, characters included (toriato's ``postprocess_tags`` over
    all rows after the ratings). It sets general_threshold, and character_threshold unless that is given.
    """
    given = {name: getattr(req, name) for name in OPTION_FIELDS if getattr(req, name) is not None}
    threshold = getattr(req, "threshold", None)
    if threshold is not None:
        if "general_threshold" in given and given["general_threshold"] != threshold:
            raise OptionsError("threshold", "conflicts with general_threshold (threshold is its old name): give one")
        given["general_threshold"] = threshold
        given.setdefault("character_threshold", threshold)
    for name in unknown_fields(req)[:20]:
        shown = name if len(name) <= 60 else name[:60] + "..."
        warnings.append(f"unknown field '{shown}' ignored")
    if base is not None and base.category_thresholds and "category_thresholds" in given:
        try:  # the model's own, with the request's over them
            own = dict(parse_category_thresholds(given["category_thresholds"]))
        except OptionsError as e:
            raise OptionsError("category_thresholds", e.problem) from None
        given["category_thresholds"] = {**dict(base.category_thresholds), **own}
    return options_from_mapping(given, base=base)


def _tags_fields(item: ImageTags, image: bytes, opts: TagOptions) -> dict[str, Any]:
    """The answer's tag fields; ``categories`` only for a model with categories beyond rating, general and
    character, ``embedding`` only when asked for, ``embedded`` and ``comparison`` only for an image carrying
    generation data (the routes leave unset fields out, so a WD14 model's answer for any other image is as
    before)."""
    r = item.result
    caption = legacy_caption(r, item.labels)
    fields = {
        "caption": caption,
        "prompt": r.prompt,
        "rating": r.rating,
        "general": r.general,
        "character": r.character,
    }
    if item.labels.extra:  # the model's other categories (copyright, artist, ...), each with its tags that passed
        fields["categories"] = {name: r.categories.get(name, {}) for name in item.labels.extra}
    if item.embedding is not None:
        fields["embedding"] = [float(v) for v in item.embedding]
    mcut = item.hit.mcut if item.hit is not None else None
    fields.update(report(read_generation_data(image), item.probs, item.labels, opts, mcut=mcut))
    return fields


def _failed(index: int, err: ImageError) -> BatchItem:
    return BatchItem(index=index, ok=False, result=None, error=ItemError(error=str(err), field=err.source))


def _loaded_out(m: LoadedModel) -> LoadedOut:
    return LoadedOut(
        name=m.name,
        provider=m.provider_label,
        provider_note=m.device_note or None,
        input_size=m.size,
        fixed_batch=m.fixed_batch,
        threads=m.threads,
    )


class Routes:
    """The endpoints of one mounted API, over one engine."""

    def __init__(
        self, tagger: Tagger, limits: ApiLimits, auth: BasicAuth, unload_after: Callable[[], bool] | None
    ) -> None:
        self.tagger = tagger
        self.limits = limits
        self.auth = auth
        self.unload_after = unload_after or (lambda: False)
        # Images decoded at once across all requests (memory: see ApiLimits.max_concurrent_decodes).
        self.decode_slots = threading.BoundedSemaphore(limits.max_concurrent_decodes)

    # -- shared steps ----------------------------------------------------------------------------------
    def model_name(self, text: str, warnings: list[str]) -> str:
        """The catalog or folder name of the model ``text`` names: a name, a display name from GET models, a
        repository id or an older extension's name."""
        wanted = text.strip()
        models = self.tagger.list_models()
        names = [m.name for m in models]
        shown_as = {m.display_name: m.name for m in models}  # as GET models shows them
        target = wanted if wanted in names else shown_as.get(wanted) or canonical(wanted)
        if target in names:
            if target != wanted:
                warnings.append(f"model '{wanted}' is called '{target}' here")
            return target  # type: ignore[return-value]
        shown = text if len(text) <= 100 else text[:100] + "..."
        raise ApiError(
            404,
            f"Unknown model '{shown}'. Known models: {', '.join(names)} (GET interrogators lists them).",
            "model",
            {"known": names},
        )

    def tag(
        self, name: str, images: list[bytes], opts: TagOptions, *, embeddings: bool = False
    ) -> list[ImageTags | ImageError]:
        """The engine's answer for every image, in order. A model still downloading or loading after the
        configured wait raises ModelBusyError (503 with Retry-After) while the work goes on. ``embeddings``
        for a model without an embedding output is refused (422) before anything runs."""
        if embeddings and self.tagger.load(name, wait=self.limits.download_timeout_s).embedding_name is None:
            raise OptionsError("embedding", f"model '{name}' has no embedding output (PixAI's tagger has one)")
        try:
            return list(
                self.tagger.tag_many(
                    name,
                    images,
                    opts,
                    wait=self.limits.download_timeout_s,
                    max_pixels=self.limits.max_pixels,
                    decode_slots=self.decode_slots,
                    embeddings=embeddings,
                )
            )
        finally:
            if self.unload_after():
                self.tagger.unload(name)

    # -- endpoints ------------------------------------------------------------------------------------
    def interrogators(self) -> InterrogatorsResponse:
        """Names of the models (catalog and local), as the earlier tagger extensions answered."""
        return InterrogatorsResponse(models=[m.name for m in self.tagger.list_models()])

    def models(self) -> ModelsResponse:
        """Every model with whether it is downloaded, loaded or being downloaded/loaded now."""
        loaded = {m.name for m in self.tagger.loaded()}
        busy = self.tagger.busy()
        return ModelsResponse(
            models=[
                ModelOut(
                    name=m.name,
                    display_name=m.display_name,
                    family=m.family,
                    repo_id=m.repo_id,
                    revision=m.revision,
                    downloaded=m.downloaded,
                    size_bytes=m.size_bytes,
                    tags=m.tags,
                    loaded=m.name in loaded,
                    loading=m.name in busy,
                )
                for m in self.tagger.list_models()
            ]
        )

    def interrogate(self, req: InterrogateRequest) -> InterrogateResponse:  # type: ignore[valid-type]
        """Tag one image. The answer's ``caption`` is the earlier extensions' answer; the rest is new."""
        start = time.perf_counter()
        warnings: list[str] = []
        request_options(req, [])  # a bad option is answered before anything else
        name = self.model_name(req.model, warnings)  # type: ignore[attr-defined]
        opts = request_options(req, warnings, self.tagger.default_options(name))
        data = decode_base64_image(req.image, "image")  # type: ignore[attr-defined]
        (item,) = self.tag(name, [data], opts, embeddings=bool(req.embedding))  # type: ignore[attr-defined]
        if isinstance(item, ImageError):
            raise ImageError("image", item.reason)
        return InterrogateResponse(
            **_tags_fields(item, data, opts),
            model=item.model,
            provider=item.provider,
            provider_note=item.note or None,
            elapsed=time.perf_counter() - start,
            warnings=warnings,
        )

    def interrogate_batch(self, req: InterrogateBatchRequest) -> InterrogateBatchResponse:  # type: ignore[valid-type]
        """Tag several images with one model; one item per image, in order. A bad image fails alone."""
        start = time.perf_counter()
        warnings: list[str] = []
        request_options(req, [])  # a bad option is answered before anything else
        images: list[str] = req.images  # type: ignore[attr-defined]
        if not images:
            raise ApiError(422, "images: give at least one image", "images")
        if len(images) > self.limits.max_images_per_request:
            limit = self.limits.max_images_per_request
            raise ApiError(413, f"images: {len(images)} images, over the limit of {limit} per request", "images")
        name = self.model_name(req.model, warnings)  # type: ignore[attr-defined]
        opts = request_options(req, warnings, self.tagger.default_options(name))
        items: list[BatchItem | None] = [None] * len(images)
        good: list[tuple[int, bytes]] = []
        for i, text in enumerate(images):
            try:
                good.append((i, decode_base64_image(text, f"images[{i}]")))
            except ImageError as e:
                items[i] = _failed(i, e)
        model, provider, note = name, "cache", None
        embeddings = bool(req.embedding)  # type: ignore[attr-defined]
        answers = self.tag(name, [data for _, data in good], opts, embeddings=embeddings) if good else []
        for (i, data), item in zip(good, answers, strict=True):
            if isinstance(item, ImageError):
                items[i] = _failed(i, ImageError(f"images[{i}]", item.reason))
                continue
            result = ItemTagsOut(**_tags_fields(item, data, opts))
            items[i] = BatchItem(index=i, ok=True, result=result, error=None)
            model = item.model
            if not item.cached:
                provider, note = item.provider, item.note or None
        return InterrogateBatchResponse(
            results=[item for item in items if item is not None],
            model=model,
            provider=provider,
            provider_note=note,
            elapsed=time.perf_counter() - start,
            warnings=warnings,
        )

    def unload_interrogators(self) -> str:
        """Unload every model (the earlier extensions' route and answer, which holds the count)."""
        return f"Successfully unload {self.tagger.unload_all()} model(s)"

    def unload(self, req: UnloadRequest | None = None) -> UnloadResponse:
        """Unload one model by name, or all of them when no name is given."""
        model = req.model if req is not None else None
        if model is None:
            unloaded = [m.name for m in self.tagger.loaded()]
            count = self.tagger.unload_all()
        else:
            name = self.model_name(model, [])
            count = int(self.tagger.unload(name))
            unloaded = [name] if count else []
        return UnloadResponse(unloaded=count, models=unloaded, loaded=[_loaded_out(m) for m in self.tagger.loaded()])

    def loaded(self) -> LoadedResponse:
        """The models in memory and where each runs."""
        return LoadedResponse(models=[_loaded_out(m) for m in self.tagger.loaded()])

    # -- wiring ---------------------------------------------------------------------------------------
    def add_to(self, router: APIRouter, prefix: str) -> None:
        """Add the routes straight to ``router`` (the app's own): every version of FastAPI keeps them there
        as they are, so that a later mount can find and replace them (newer ones nest included routers)."""
        route_class = type("TaggerRoute", (TaggerRoute,), {"routes": self})
        deps = [Depends(DocumentedBasicAuth(scheme_name="HTTPBasic", auto_error=False))] if self.auth.enabled else []
        # The two tagging answers leave out the fields they did not set: ``embedded`` and ``comparison`` are
        # there only for an image carrying generation data, ``categories`` only for a model with more than
        # rating, general and character tags, ``embedding`` only when asked for; so every other answer stays as
        # it was.
        sparse = {"interrogate", "interrogate/batch"}
        table: list[tuple[str, Callable[..., Any], str, Any, str]] = [
            ("interrogators", self.interrogators, "GET", InterrogatorsResponse, "List model names"),
            ("models", self.models, "GET", ModelsResponse, "List models with details"),
            ("interrogate", self.interrogate, "POST", InterrogateResponse, "Tag one image"),
            ("interrogate/batch", self.interrogate_batch, "POST", InterrogateBatchResponse, "Tag several images"),
            ("unload-interrogators", self.unload_interrogators, "POST", str, "Unload all models"),
            ("unload", self.unload, "POST", UnloadResponse, "Unload one model or all"),
            ("loaded", self.loaded, "GET", LoadedResponse, "Models in memory"),
        ]
        for path, endpoint, method, response_model, summary in table:
            router.add_api_route(
                f"{prefix}/{path}",
                endpoint,
                methods=[method],
                dependencies=deps,
                tags=["tagger"],
                responses=ERROR_RESPONSES,
                route_class_override=route_class,
                response_model=response_model,
                response_model_exclude_unset=path in sparse,
                summary=summary,
            )


class TaggerRoute(APIRoute):
    """Checks credentials and the body size before FastAPI reads the body, and turns every error of our
    routes into the JSON error answer. ``routes`` is set on a subclass made per mount."""

    routes: Routes

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        routes = self.routes

        async def route(request: Request) -> Response:
            try:
                routes.auth.check(request)
                check_length(request, routes.limits.max_body_bytes)
                return await handler(LimitedRequest(request.scope, request.receive, routes.limits.max_body_bytes))
            except Exception as exc:
                try:
                    return error_response(exc, request)
                except Exception:  # an answer must always go out, even if the error cannot be described
                    log.exception("tagger API: could not describe the error %r", exc)
                    return json_error(500, f"internal error ({type(exc).__name__})", None)

        return route
