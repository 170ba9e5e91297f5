"""Finding model files: local folders, the Hugging Face cache, or a download from the Hub.

Where a model's files are looked for, in this order (``resolve_model``):

1. a folder path given directly (holding a ``.onnx`` file and a tag list: ``families.find_model``);
2. ``<models_dir>/<name>/`` (also for catalog models, named by their name, repo id or an older extension's
   name for them, ``catalog.canonical``: files put there by hand are used as they are);
3. for catalog models, the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``) - no network;
4. for catalog models, a download from the Hub (``HF_ENDPOINT``, so mirrors work) into
   ``<models_dir>/<name>/``, checked against the size and checksum the Hub reports.

huggingface_hub does the Hub's part through its public API (``get_hf_file_metadata``, ``hf_hub_download``
with ``local_dir``, ``try_to_load_from_cache``, the error classes of ``huggingface_hub.utils``). This module
adds what it does not do: local model folders, the catalog and its names, a checksum test of each downloaded
file, a quick answer when the Hub cannot be reached, and messages that say what to do.

The environment (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_ETAG_TIMEOUT``) is
read at call time, with ``huggingface_hub.constants`` (read once, when it was imported) as the fallback.
Importing this module does nothing; ``huggingface_hub`` (0.23 or later, 1.x and 2.x included) is imported
only inside the functions that need it.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger import paths
from tagger.catalog import CATALOG, CatalogModel, by_name, canonical
from tagger.errors import ModelFormatError, ModelUnavailableError
from tagger.families import LABEL_FILE_HINT, find_model, usable
from tagger.families.description import ModelDescription
from tagger.files import hash_file

logger = logging.getLogger(__name__)

MIRROR_EXAMPLE = "https://hf-mirror.com"
LIBRARY_NAME = "wd14-tagger"  # in the user agent of every request

_TRUE = {"1", "on", "yes", "true", "y", "t"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class ModelFiles:
    """The two files of a model ready to load (other files it needs lie beside them), where they came from,
    and how the model is run."""

    name: str  # catalog or folder name; the resolved folder path for a folder given directly
    model_path: Path
    tags_path: Path
    repo_id: str | None  # None for local (non-catalog) models
    revision: str | None
    source: str  # "local" | "cache" | "download"
    description: ModelDescription | None = None  # None: SmilingWolf's WD14 contract

    @property
    def model_id(self) -> str:
        """A stable key for caches: ``repo@revision`` for catalog models (``repo@revision:file`` when the model
        file is not ``model.onnx``: a repository may hold several models), ``local:<name>`` otherwise."""
        if self.repo_id:
            file = "" if self.model_path.name == "model.onnx" else f":{self.model_path.name}"
            return f"{self.repo_id}@{self.revision}{file}"
        return f"local:{self.name}"

    @property
    def file_key(self) -> str:
        """``model_id`` with the model file's size and modification time: another key once the file is replaced
        or edited (the probability cache and auto's device check key by it)."""
        st = self.model_path.stat()
        return f"{self.model_id}|{st.st_size}|{st.st_mtime_ns}"


@dataclass(frozen=True)
class ModelInfo:
    """One line of the model list: a catalog model (downloaded or not) or a local folder."""

    name: str
    display_name: str
    family: str  # the catalog family ("v3", "v2", "v1", "pixai", "camie", "cl", "mldanbooru", "z3d") or "local"
    repo_id: str | None
    revision: str | None
    downloaded: bool
    size_bytes: int | None  # of the files on disk; None when not downloaded
    path: Path | None  # the folder holding the files; None when not downloaded
    tags: int | None


@dataclass(frozen=True)
class _Remote:
    """What the Hub says about one file (``get_hf_file_metadata``)."""

    filename: str
    size: int | None
    etag: str  # the git blob sha1 of a regular file, the sha256 of an LFS file


# -- environment, read at call time ------------------------------------------------------------------


def hub_endpoint() -> str:
    """The Hub address: ``$HF_ENDPOINT`` (a mirror) if set now, else huggingface_hub's (https://huggingface.co)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).strip().rstrip("/")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is on now, or was when huggingface_hub was
    imported (it then refuses every request)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> Path:
    """The Hugging Face cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(var)
        if value:
            return Path(os.path.expandvars(value)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _etag_timeout() -> float:
    """Seconds to wait for the Hub's answer about one file: ``$HF_HUB_ETAG_TIMEOUT``, else huggingface_hub's."""
    from huggingface_hub import constants

    try:
        value = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or constants.HF_HUB_ETAG_TIMEOUT)
    except ValueError:
        value = 0
    return value if value > 0 else float(constants.DEFAULT_ETAG_TIMEOUT)


# -- local folders ------------------------------------------------------------------------------------


def model_files_in(folder: Path) -> tuple[Path, Path] | None:
    """``(model file, tag list)`` if ``folder`` holds a model, else None (``families.find_model``: the model is
    ``model.onnx``, else the folder's only ``.onnx`` file; the tag list ``selected_tags.csv``, another known
    tag list, or the folder's only ``.csv`` file). Empty files and leftovers of interrupted downloads
    (``*.incomplete``) do not count; a folder whose ``tagger.json`` is broken is not a model (with a warning)."""
    found = _find(Path(folder))
    return (found[0], found[1]) if found else None


def _find(folder: Path, model: CatalogModel | None = None) -> tuple[Path, Path, ModelDescription] | None:
    """The model in ``folder`` (a catalog model's files also in its repository sub-folder there); None when
    there is none, or when its ``tagger.json`` is broken (logged)."""
    try:
        if model is None:
            return find_model(folder)
        found = find_model(folder, model.model_description)
        if found is None and model.subfolder:
            found = find_model(folder / model.subfolder, model.model_description)
        return found
    except ModelFormatError as e:
        logger.warning("%s is not used as a model: %s", folder, e)
        return None


def _size_of(*paths: Path) -> int | None:
    try:
        return sum(p.stat().st_size for p in paths)
    except OSError:
        return None


def _count_tags(labels_path: Path) -> int | None:
    """Rows of a tags csv (header excluded), or entries of a JSON tag list; None if it cannot be read."""
    try:
        if labels_path.suffix.lower() != ".json":
            with labels_path.open(encoding="utf-8", newline="") as f:
                return max(sum(1 for _ in csv.reader(f)) - 1, 0)
        st = labels_path.stat()
        return _count_json_tags(str(labels_path), st.st_size, st.st_mtime_ns)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError):
        return None


@functools.lru_cache(maxsize=32)
def _count_json_tags(path: str, size: int, mtime_ns: int) -> int | None:
    """Entries of a JSON tag list (cl_tagger, Camie, ML-Danbooru), read once per file version."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = (data.get("dataset_info") or {}).get("tag_mapping", data) if "dataset_info" in data else data
        data = data.get("idx_to_tag", data) if isinstance(data, dict) else data
    return len(data) if isinstance(data, (dict, list)) else None


# -- the Hugging Face cache ------------------------------------------------------------------------------


def _cached_files(model: CatalogModel, cache_dir: Path) -> tuple[Path, Path] | None:
    """The model's files (model, tag list) in the Hugging Face cache at its pinned revision, else None. No
    network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    found: list[Path] = []
    for filename in model.files:
        try:
            hit = try_to_load_from_cache(model.repo_id, filename, cache_dir=str(cache_dir), revision=model.revision)
        except (OSError, ValueError) as e:
            logger.debug("cache lookup of %s/%s failed: %s", model.repo_id, filename, e)
            return None
        if not isinstance(hit, str) or not usable(Path(hit)):
            return None
        found.append(Path(hit))
    return found[0], found[1]


# -- listing ---------------------------------------------------------------------------------------------


def list_models(models_dir: Path) -> list[ModelInfo]:
    """The catalog models (in catalog order), then the local model folders of ``models_dir`` by name (folders
    whose name cannot be a model's, ``paths.name_problem``, such as hidden ones, are not models).

    A catalog model counts as downloaded when its files are in ``models_dir/<name>/`` or in the Hugging
    Face cache. Makes no network request.
    """
    models_dir = Path(models_dir).expanduser()
    cache_dir = hf_cache_dir()
    infos: list[ModelInfo] = []
    for model in CATALOG:
        found = _find(models_dir / model.name, model)
        files = found[:2] if found else _cached_files(model, cache_dir)
        infos.append(
            ModelInfo(
                name=model.name,
                display_name=model.display_name,
                family=model.family,
                repo_id=model.repo_id,
                revision=model.revision,
                downloaded=files is not None,
                size_bytes=_size_of(*files) if files else None,
                path=files[0].parent if files else None,
                tags=model.tags if model.tags is not None or not files else _count_tags(files[1]),
            )
        )
    catalog_names = {m.name for m in CATALOG}
    try:
        folders = sorted(
            (p for p in models_dir.iterdir() if p.is_dir() and paths.name_problem(p.name) is None),
            key=lambda p: p.name.lower(),
        )
    except OSError:  # no models folder yet
        folders = []
    for folder in folders:
        if folder.name in catalog_names:
            continue
        files = model_files_in(folder)
        if files is None:
            continue
        infos.append(
            ModelInfo(
                name=folder.name,
                display_name=f"{folder.name} (local)",
                family="local",
                repo_id=None,
                revision=None,
                downloaded=True,
                size_bytes=_size_of(*files),
                path=folder,
                tags=_count_tags(files[1]),
            )
        )
    return infos


# -- resolving -------------------------------------------------------------------------------------------


def resolve_model(
    name_or_path: str | os.PathLike[str],
    models_dir: Path,
    *,
    download: bool = True,
    progress: bool = True,
) -> ModelFiles:
    """The files of the model ``name_or_path``: a folder path, a local folder name, a catalog name or repo id, or
    a name an older tagger extension gave a catalog model (``catalog.canonical``: ``wd-vit-v3``, ``wd14-vit-v2``).

    Looks in this order: the folder given directly; ``models_dir/<name>/``; the Hugging Face cache (catalog
    models, no network); a download into ``models_dir/<name>/`` (catalog models, when ``download``).
    ``progress`` shows huggingface_hub's progress bar while downloading.

    Raises:
        ModelUnavailableError: unknown name, or a catalog model that is not here and cannot be
            downloaded; the message says where to put the files by hand.
    """
    return _resolve(name_or_path, Path(models_dir).expanduser(), download=download, progress=progress, cache=True)


def download_model(name: str, models_dir: Path, *, progress: bool = True) -> ModelFiles:
    """Make sure the model ``name`` is in ``models_dir/<name>/``, downloading it if needed.

    For ``models download NAME``. Files already in the models folder are kept without a network request;
    files in the Hugging Face cache are copied from there (huggingface_hub does that after asking the Hub
    which version is current). A local (non-catalog) model is returned as it is.

    Raises:
        ModelUnavailableError: as ``resolve_model``.
    """
    return _resolve(name, Path(models_dir).expanduser(), download=True, progress=progress, cache=False)


def _resolve(
    name_or_path: str | os.PathLike[str], models_dir: Path, *, download: bool, progress: bool, cache: bool
) -> ModelFiles:
    text = os.fspath(name_or_path).strip() if isinstance(name_or_path, (str, os.PathLike)) else ""
    if not text:
        raise ModelUnavailableError("No model named: give a catalog model name, a local folder name or a folder path.")

    # (1) a folder path given directly
    direct = _direct_folder(text, models_dir)
    if direct is not None:
        return direct

    # (2) a catalog name or repo id; else a local folder of that name; else an older extension's name for a
    # catalog model (a local folder called like an alias is the user's own model and wins over the alias)
    model = by_name(text)
    if model is None and paths.name_problem(text) is None:
        local = find_model(models_dir / text)  # a broken tagger.json says so here, naming the key
        if local is not None:
            logger.debug("model %s: using %s", text, local[0].parent)
            return ModelFiles(text, local[0], local[1], None, None, "local", local[2])
    if model is None:
        alias_of = canonical(text)
        model = by_name(alias_of) if alias_of else None
    if model is None:
        raise ModelUnavailableError(_unknown_message(text, models_dir))

    # (3) models_dir/<catalog name>/: files put there by hand win over the cache and any download
    found = _find(models_dir / model.name, model)
    if found is not None:
        logger.debug("model %s: using %s", model.name, found[0].parent)
        return ModelFiles(model.name, found[0], found[1], model.repo_id, model.revision, "local", found[2])

    # (4) the Hugging Face cache: no network at all
    if cache:
        cached = _cached_files(model, hf_cache_dir())
        if cached is not None:
            logger.debug("model %s: using the Hugging Face cache %s", model.name, cached[0].parent)
            return ModelFiles(
                model.name, cached[0], cached[1], model.repo_id, model.revision, "cache", model.model_description
            )

    # (5) download
    if is_offline():
        raise ModelUnavailableError(
            _message(
                model,
                models_dir,
                f"offline mode is on (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE') or '1'}), and the files are "
                f"neither in the models folder nor in the Hugging Face cache ({hf_cache_dir()})",
                first_step="turn offline mode off (unset HF_HUB_OFFLINE), then try again",
                downloads=False,
            )
        )
    if not download:
        raise ModelUnavailableError(
            _message(
                model,
                models_dir,
                "downloading is turned off here (--offline)",
                first_step=f"download it once (python -m tagger models download {model.name}), then try again",
                downloads=False,
            )
        )
    return _download(model, models_dir, progress=progress)


def _direct_folder(text: str, models_dir: Path) -> ModelFiles | None:
    """ModelFiles for ``text`` when it names an existing folder that holds a model."""
    folder = Path(text).expanduser()
    try:
        if not folder.is_dir():
            return None
    except OSError:
        return None
    resolved = folder.resolve()
    try:
        in_models_dir = resolved.parent == models_dir.resolve()
    except OSError:
        in_models_dir = False
    model = by_name(resolved.name) if in_models_dir else None
    found = _find(folder, model) if model is not None else find_model(folder)
    if found is None:
        return None
    if in_models_dir:  # same model as by its name: same name (and catalog identity) as step (2)
        repo_id, revision = (model.repo_id, model.revision) if model else (None, None)
        return ModelFiles(resolved.name, found[0], found[1], repo_id, revision, "local", found[2])
    # Outside the models folder the full path is the name: two folders called alike stay two models.
    return ModelFiles(str(resolved), found[0], found[1], None, None, "local", found[2])


# -- downloading -----------------------------------------------------------------------------------------


def _download(model: CatalogModel, models_dir: Path, *, progress: bool) -> ModelFiles:
    """Download the model's files into ``models_dir/<name>/`` and check them."""
    endpoint = hub_endpoint()
    folder = models_dir / model.name
    logger.info("downloading %s (%s@%s) from %s into %s", model.name, model.repo_id, model.revision, endpoint, folder)
    # Ask about every file first: a missing file or a Hub that cannot be reached fails here, before a large
    # download starts; the answers carry the size and checksum each download is then checked against.
    remotes = [_metadata(model, filename, endpoint, models_dir) for filename in model.files]
    found: dict[str, Path] = {}
    for remote in sorted(remotes, key=lambda r: r.size if r.size is not None else 1 << 62):  # the small csv first
        found[remote.filename] = _fetch(model, remote, folder, endpoint, models_dir, progress=progress)
    return ModelFiles(
        model.name,
        found[model.files[0]],
        found[model.files[1]],
        model.repo_id,
        model.revision,
        "download",
        model.model_description,
    )


def _metadata(model: CatalogModel, filename: str, endpoint: str, models_dir: Path) -> _Remote:
    """The Hub's answer about one file, bounded by ``HF_HUB_ETAG_TIMEOUT`` and not retried."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(model.repo_id, filename, revision=model.revision, endpoint=endpoint)
    timeout = _etag_timeout()
    try:
        if "retry_on_errors" not in inspect.signature(get_hf_file_metadata).parameters:
            # huggingface_hub before 1.x (0.x, 1.0) retries this request with back-off: 23 s when nothing
            # answers, over a minute when packets are dropped. One plain request through its own session first
            # says whether anything answers at all (any HTTP answer will do: get_hf_file_metadata reads it).
            from huggingface_hub.utils import build_hf_headers, get_session

            get_session().head(url, headers=build_hf_headers(library_name=LIBRARY_NAME), timeout=timeout).close()
        meta = get_hf_file_metadata(url, timeout=timeout, library_name=LIBRARY_NAME)
    except _download_errors() as e:
        raise _unavailable(model, models_dir, e, filename) from e
    if not meta.commit_hash or not meta.etag:
        missing = " and ".join(h for h, v in (("X-Repo-Commit", meta.commit_hash), ("ETag", meta.etag)) if not v)
        raise ModelUnavailableError(
            _message(
                model,
                models_dir,
                f"{endpoint} answered without the {missing} header, so it is not a Hugging Face Hub (or a proxy "
                "or captive portal is in the way)",
                first_step="check HF_ENDPOINT and the proxy settings (HTTPS_PROXY, NO_PROXY), then try again",
            )
        )
    return _Remote(filename, meta.size, meta.etag)


def _fetch(
    model: CatalogModel, remote: _Remote, folder: Path, endpoint: str, models_dir: Path, *, progress: bool
) -> Path:
    """Download one file with ``hf_hub_download`` and check it; once more after a failure that another try
    can mend (a dropped connection, a server error, a damaged file), then fail clearly."""
    from huggingface_hub import hf_hub_download

    quiet: dict[str, Any] = {}
    if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # newer huggingface_hub
        quiet["tqdm_class"] = _silent_tqdm()  # older versions show their bar: they have no per-call switch
    problem = ""
    for attempt in (1, 2):
        try:
            path = Path(
                hf_hub_download(
                    model.repo_id,
                    remote.filename,
                    revision=model.revision,
                    endpoint=endpoint,
                    local_dir=folder,
                    cache_dir=hf_cache_dir(),  # a copy already there is copied, not downloaded
                    force_download=bool(problem),  # after a damaged copy: anew, whatever it recorded
                    etag_timeout=_etag_timeout(),
                    library_name=LIBRARY_NAME,
                    **quiet,
                )
            )
        except _download_errors() as e:
            if attempt == 1 and not _final(e):
                logger.warning("%s/%s: %s; trying again", model.repo_id, remote.filename, _short_cause(e))
                continue
            raise _unavailable(model, models_dir, e, remote.filename) from e
        problem = _check(path, remote)
        if not problem:
            return path
        logger.warning("%s is damaged (%s): deleting it%s", path, problem, ", downloading it again" * (attempt == 1))
        try:
            path.unlink()
        except OSError as e:
            logger.warning("could not delete %s: %s", path, e)
    raise ModelUnavailableError(
        _message(
            model,
            models_dir,
            f"{remote.filename} arrived damaged twice ({problem}) and was deleted; the connection, a proxy or the "
            "mirror alters the file",
            first_step="try again on another network",
        )
    )


def _check(path: Path, remote: _Remote) -> str:
    """Why ``path`` does not match what the Hub reported ("" when it does).

    The size is compared with the Hub's; the content with the ETag: sha256 for LFS files (the model), the
    git blob sha1 for regular files (the csv), as the Hub defines them. Other ETags are not compared.
    huggingface_hub compares only the size.
    """
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot read it: {e}"
    if remote.size is not None and size != remote.size:
        return f"{size} bytes instead of {remote.size}"
    etag = remote.etag.lower()
    try:
        if _SHA256.fullmatch(etag):
            kind, actual = "sha256", hash_file(path, "sha256")
        elif _SHA1.fullmatch(etag):  # a regular file (small: large ones are LFS), as a git blob
            data = path.read_bytes()
            kind, actual = "git sha1", hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
        else:
            return ""
    except OSError as e:
        return f"cannot read it: {e}"
    return "" if actual == etag else f"{kind} {actual} instead of {etag}"


def _silent_tqdm() -> type:
    """A progress bar class for ``hf_hub_download(tqdm_class=...)`` that never shows."""
    from huggingface_hub.utils import tqdm

    class SilentTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


# -- errors ------------------------------------------------------------------------------------------------


def _download_errors() -> tuple[type[BaseException], ...]:
    """What a request to the Hub can end in: huggingface_hub's errors and those of requests (its HTTP client
    before 1.0) are OSError or ValueError; those of httpx and httpx2 (1.x, 2.x) are not."""
    kinds: list[type[BaseException]] = [OSError, ValueError]
    for client in ("httpx", "httpx2"):
        module = sys.modules.get(client)
        base = getattr(module, "HTTPError", None)
        if isinstance(base, type) and issubclass(base, Exception):
            kinds.append(base)
    return tuple(kinds)


def _final(exc: BaseException) -> bool:
    """An answer another try cannot change: no such repository, revision or file; offline mode."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
        return True
    return isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, OfflineModeIsEnabled))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(exc: BaseException) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _unavailable(model: CatalogModel, models_dir: Path, exc: BaseException, filename: str) -> ModelUnavailableError:
    """The error for a failed request to the Hub: what happened, what to do, then the technical cause."""
    reason, first_step = _diagnose(exc, model, filename, hub_endpoint())
    return ModelUnavailableError(_message(model, models_dir, reason, first_step=first_step, cause=exc))


def _diagnose(exc: BaseException, model: CatalogModel, filename: str, endpoint: str) -> tuple[str, str]:
    """What happened, in words, and the first thing to do about it."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain = list(_chain(exc))
    elsewhere = f"check HF_ENDPOINT ({endpoint} does not have this model), then try again"
    for e in chain:  # the Hub's own answers first: they are the most precise
        if isinstance(e, OfflineModeIsEnabled):
            return (
                "huggingface_hub is in offline mode (HF_HUB_OFFLINE was set when it was imported)",
                "unset HF_HUB_OFFLINE and restart",
            )
        if isinstance(e, GatedRepoError):
            return (
                f"the repository {model.repo_id} is gated at {endpoint}",
                f"log in (hf auth login) and accept its terms at {endpoint}/{model.repo_id}, then try again",
            )
        if isinstance(e, RepositoryNotFoundError):
            return f"the repository {model.repo_id} was not found at {endpoint}", elsewhere
        if isinstance(e, RevisionNotFoundError):
            return f"the revision {model.revision} was not found in {model.repo_id} at {endpoint}", elsewhere
        if isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError):
            return f"{filename} was not found in {model.repo_id} at revision {model.revision} ({endpoint})", elsewhere
    for e in chain:  # then what the connection did
        if isinstance(e, TimeoutError):
            return f"{endpoint} did not answer in time", "check the internet connection, then try again"
        if _system_error(e):
            return f"cannot connect to {endpoint}", "connect this machine to the internet, then try again"
        if isinstance(e, HfHubHTTPError) and _status(e) is not None:
            return f"{endpoint} answered HTTP {_status(e)} for {filename}", "try again later"
    return f"downloading {filename} from {endpoint} failed", "check the internet connection, then try again"


def _system_error(exc: BaseException) -> bool:
    """An error of the operating system's network stack (refused, reset, unreachable, no such host, TLS)."""
    return isinstance(exc, OSError) and type(exc).__module__ in ("builtins", "socket", "ssl")


def _short_cause(exc: BaseException) -> str:
    """The technical cause in one line: the operating system's error where there is one (``Connection
    refused``, ``timed out``), else the first line of the outermost error."""
    root = list(_chain(exc))[-1]
    pick = root if _system_error(root) else exc
    lines = str(pick).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(pick).__name__}: {text}" if text else type(pick).__name__


def _message(
    model: CatalogModel,
    models_dir: Path,
    reason: str,
    *,
    first_step: str,
    cause: BaseException | None = None,
    downloads: bool = True,
) -> str:
    """The whole story for a catalog model that cannot be had: what happened, what to do (``first_step``, a
    mirror where downloading is the way, the files by hand), then the technical cause."""
    folder = (models_dir / model.name).absolute()
    files = " and ".join(model.files)
    steps = [first_step]
    if downloads:
        endpoint_env = os.environ.get("HF_ENDPOINT")
        now = f"it is {endpoint_env} now" if endpoint_env else f"it is not set now, so {hub_endpoint()}"
        steps.append(
            f"or set HF_ENDPOINT to a Hugging Face mirror this machine can reach, e.g. "
            f"HF_ENDPOINT={MIRROR_EXAMPLE} ({now})"
        )
    by_hand = (
        f"or download {files} from {hub_endpoint()}/{model.repo_id}/tree/{model.revision} by hand and put "
        f"them in this folder:\n    {folder}{os.sep}"
    )
    if folder.parent == (paths.user_data_dir() / "models").absolute():  # hidden away: say how to choose another
        by_hand += f"\n    (the default models folder; choose another with --models-dir DIR or {paths.ENV_MODELS_DIR})"
    steps.append(by_hand)
    text = f"Model '{model.name}' ({model.repo_id}) is not here and could not be downloaded: {reason}.\n"
    text += "To get it:\n" + "\n".join(f"  - {step}" for step in steps)
    if cause is not None:
        text += f"\nCause: {_short_cause(cause)}"
    return text


def _unknown_message(text: str, models_dir: Path) -> str:
    known = ", ".join(m.name for m in CATALOG)
    local = [i.name for i in list_models(models_dir) if i.family == "local"]
    where = f"Local models in {models_dir}: {', '.join(local)}." if local else f"No local models in {models_dir}."
    folder_note = ""
    candidate = Path(text).expanduser()
    try:
        if candidate.is_dir():
            folder_note = (
                f" The folder {candidate} holds no model: it needs a .onnx file and its tag list ({LABEL_FILE_HINT})."
            )
    except OSError:
        pass
    return (
        f"Unknown model '{text}'.{folder_note} Known models: {known}. {where} A model can also be given as "
        f"the path of a folder holding a .onnx file and its tag list."
    )
