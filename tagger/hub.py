"""Finding model files: local folders, the Hugging Face cache, or a download from the Hub.

Where a model's files are looked for, in this order (``resolve_model``):

1. a folder path given directly (holding a ``.onnx`` file and a tags csv);
2. ``<models_dir>/<name>/`` (also for catalog models: files put there by hand are used as they are);
3. for catalog models, the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``) - no network;
4. for catalog models, a download from the Hub (``HF_ENDPOINT``, so mirrors work) into
   ``<models_dir>/<name>/``, checked against the size and checksum the Hub reports.

Everything is read at call time (environment variables included): importing this module does nothing,
and ``huggingface_hub`` is imported only inside the functions that need it. Supported: huggingface_hub
0.20 and later (keyword arguments that differ between versions are passed only where they exist).
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger.catalog import CATALOG, TAGS_FILE, CatalogModel, by_name, canonical
from tagger.errors import ModelUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
MIRROR_EXAMPLE = "https://hf-mirror.com"
DEFAULT_ETAG_TIMEOUT = 10.0  # seconds to wait for the Hub's answer about one file (huggingface_hub's default)

_TRUE = {"1", "on", "yes", "true", "y", "t"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
_HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ModelFiles:
    """The two files of a model ready to load, and where they came from."""

    name: str  # catalog or folder name; the resolved folder path for a folder given directly
    model_path: Path
    tags_path: Path
    repo_id: str | None  # None for local (non-catalog) models
    revision: str | None
    source: str  # "local" | "cache" | "download"

    @property
    def model_id(self) -> str:
        """A stable key for caches: ``repo@revision`` for catalog models, ``local:<name>`` otherwise."""
        if self.repo_id:
            return f"{self.repo_id}@{self.revision}"
        return f"local:{self.name}"


@dataclass(frozen=True)
class ModelInfo:
    """One line of the model list: a catalog model (downloaded or not) or a local folder."""

    name: str
    display_name: str
    family: str  # "v3", "v2" or "local"
    repo_id: str | None
    revision: str | None
    downloaded: bool
    size_bytes: int | None  # of the files on disk; None when not downloaded
    path: Path | None  # the folder holding the files; None when not downloaded
    tags: int | None


@dataclass(frozen=True)
class _Remote:
    """What the Hub says about one file (from a HEAD request)."""

    filename: str
    size: int | None
    etag: str | None
    commit: str | None


# -- environment, read at call time ------------------------------------------------------------------


def hub_endpoint() -> str:
    """The Hub address: ``$HF_ENDPOINT`` (a mirror) if set, else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def hf_cache_dir() -> Path:
    """The Hugging Face cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default.

    huggingface_hub reads these variables once, at import; this reads them on every call.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(var)
        if value:
            return Path(os.path.expandvars(value)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base).expanduser() / "huggingface" / "hub"


def _etag_timeout() -> float:
    try:
        value = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_ETAG_TIMEOUT)
    except ValueError:
        return DEFAULT_ETAG_TIMEOUT
    return value if value > 0 else DEFAULT_ETAG_TIMEOUT


# -- local folders ------------------------------------------------------------------------------------


def _usable(path: Path) -> bool:
    """A regular, non-empty file (a 0-byte file is a failed copy or download, not a model)."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _pick(folder: Path, preferred: str, suffix: str) -> Path | None:
    """``folder/preferred`` if usable, else the only usable ``*suffix`` file, else None."""
    first = folder / preferred
    if _usable(first):
        return first
    candidates = sorted(p for p in folder.glob(f"*{suffix}") if p.suffix.lower() == suffix and _usable(p))
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        logger.warning(
            "%s holds several %s files (%s) and none is called %s: cannot tell which to use",
            folder,
            suffix,
            ", ".join(p.name for p in candidates),
            preferred,
        )
    return None


def model_files_in(folder: Path) -> tuple[Path, Path] | None:
    """``(onnx, csv)`` if ``folder`` holds a model, else None.

    The model is ``model.onnx``, else the folder's only ``.onnx`` file; the tags are ``selected_tags.csv``,
    else the folder's only ``.csv`` file. Empty files and leftovers of interrupted downloads
    (``*.incomplete``) do not count.
    """
    folder = Path(folder)
    try:
        if not folder.is_dir():
            return None
    except OSError:
        return None
    onnx = _pick(folder, "model.onnx", ".onnx")
    if onnx is None:
        return None
    tags = _pick(folder, TAGS_FILE, ".csv")
    if tags is None:
        return None
    return onnx, tags


def _size_of(*paths: Path) -> int | None:
    try:
        return sum(p.stat().st_size for p in paths)
    except OSError:
        return None


def _count_tags(csv_path: Path) -> int | None:
    """Rows of a tags csv (header excluded), or None if it cannot be read."""
    try:
        with csv_path.open(encoding="utf-8", newline="") as f:
            return max(sum(1 for _ in csv.reader(f)) - 1, 0)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _folder_name_ok(name: str) -> bool:
    """A plain folder name (no separators, not . or ..): safe to join to the models folder."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


# -- the Hugging Face cache ------------------------------------------------------------------------------


def _cached_files(model: CatalogModel, cache_dir: Path) -> tuple[Path, Path] | None:
    """The model's files in the Hugging Face cache at its pinned revision, else None. No network."""
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
        if not isinstance(hit, str) or not _usable(Path(hit)):
            return None
        found.append(Path(hit))
    return found[0], found[1]


# -- listing ---------------------------------------------------------------------------------------------


def list_models(models_dir: Path) -> list[ModelInfo]:
    """The catalog models (in catalog order), then the local model folders of ``models_dir`` by name.

    A catalog model counts as downloaded when its files are in ``models_dir/<name>/`` or in the Hugging
    Face cache. Makes no network request.
    """
    models_dir = Path(models_dir).expanduser()
    cache_dir = hf_cache_dir()
    infos: list[ModelInfo] = []
    for model in CATALOG:
        files = model_files_in(models_dir / model.name) or _cached_files(model, cache_dir)
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
                tags=model.tags,
            )
        )
    catalog_names = {m.name for m in CATALOG}
    try:
        folders = sorted(
            (p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
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
    if model is None and _folder_name_ok(text):
        files = model_files_in(models_dir / text)
        if files is not None:
            logger.debug("model %s: using %s", text, files[0].parent)
            return ModelFiles(text, files[0], files[1], None, None, "local")
    if model is None:
        alias_of = canonical(text)
        model = by_name(alias_of) if alias_of else None
    if model is None:
        raise ModelUnavailableError(_unknown_message(text, models_dir))

    # (3) models_dir/<catalog name>/: files put there by hand win over the cache and any download
    files = model_files_in(models_dir / model.name)
    if files is not None:
        logger.debug("model %s: using %s", model.name, files[0].parent)
        return ModelFiles(model.name, files[0], files[1], model.repo_id, model.revision, "local")

    # (4) the Hugging Face cache: no network at all
    if cache:
        cached = _cached_files(model, hf_cache_dir())
        if cached is not None:
            logger.debug("model %s: using the Hugging Face cache %s", model.name, cached[0].parent)
            return ModelFiles(model.name, cached[0], cached[1], model.repo_id, model.revision, "cache")

    # (5) download
    if is_offline():
        raise ModelUnavailableError(
            _unavailable_message(
                model,
                models_dir,
                f"offline mode is on (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE') or '1'}) and the files "
                f"are neither in the models folder nor in the Hugging Face cache ({hf_cache_dir()})",
            )
        )
    if not download:
        raise ModelUnavailableError(
            _unavailable_message(model, models_dir, "it is not downloaded, and downloading is turned off")
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
    files = model_files_in(folder)
    if files is None:
        return None
    resolved = folder.resolve()
    try:
        in_models_dir = resolved.parent == models_dir.resolve()
    except OSError:
        in_models_dir = False
    if in_models_dir:  # same model as by its name: same name (and catalog identity) as step (2)
        model = by_name(resolved.name)
        repo_id, revision = (model.repo_id, model.revision) if model else (None, None)
        return ModelFiles(resolved.name, files[0], files[1], repo_id, revision, "local")
    # Outside the models folder the full path is the name: two folders called alike stay two models.
    return ModelFiles(str(resolved), files[0], files[1], None, None, "local")


# -- downloading -----------------------------------------------------------------------------------------


def _download(model: CatalogModel, models_dir: Path, *, progress: bool) -> ModelFiles:
    """Download the model's files into ``models_dir/<name>/`` and check them."""
    endpoint = hub_endpoint()
    folder = models_dir / model.name
    logger.info("downloading %s (%s@%s) from %s into %s", model.name, model.repo_id, model.revision, endpoint, folder)
    _sweep_stale_incomplete(folder)
    # Ask about every file first: a missing file or a dead endpoint fails fast, before a large download,
    # and without huggingface_hub's retries with back-off (about 20 s when nothing answers).
    remotes = [_head(model, filename, endpoint, models_dir) for filename in model.files]
    # Small files first: the tags csv is tiny next to the model.
    paths: dict[str, Path] = {}
    for remote in sorted(remotes, key=lambda r: r.size if r.size is not None else 1 << 62):
        paths[remote.filename] = _fetch(model, remote, folder, endpoint, models_dir, progress=progress)
    return ModelFiles(
        model.name, paths[model.model_file], paths[model.tags_file], model.repo_id, model.revision, "download"
    )


def _head(model: CatalogModel, filename: str, endpoint: str, models_dir: Path) -> _Remote:
    """The Hub's metadata for one file: one HEAD request, no retries, bounded by HF_HUB_ETAG_TIMEOUT."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(model.repo_id, filename, **_supported(hf_hub_url, revision=model.revision, endpoint=endpoint))
    if not url.startswith(endpoint):  # versions without ``endpoint=``: swap the import-time endpoint
        url = endpoint + "/" + url.split("/", 3)[3]
    try:
        if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:  # huggingface_hub >= 1.0
            meta = get_hf_file_metadata(url, timeout=_etag_timeout(), retry_on_errors=False)
            remote = _Remote(filename, meta.size, meta.etag, meta.commit_hash)
        else:  # before: get_hf_file_metadata retries with back-off (~23 s on a dead endpoint): ask once here
            remote = _head_once(url, filename, _etag_timeout())
    except _catchable() as e:
        raise ModelUnavailableError(
            _unavailable_message(model, models_dir, _reason(e, model, filename, endpoint))
        ) from e
    if not remote.commit or not remote.etag:
        missing = " and ".join(h for h, v in (("X-Repo-Commit", remote.commit), ("ETag", remote.etag)) if not v)
        raise ModelUnavailableError(
            _unavailable_message(
                model,
                models_dir,
                f"{endpoint} answered without the {missing} header, so it is not a Hugging Face Hub (or a "
                "proxy or captive portal is in the way); check HF_ENDPOINT and the proxy settings",
            )
        )
    return remote


def _head_once(url: str, filename: str, timeout: float) -> _Remote:
    """One HEAD request through huggingface_hub's own session (requests or httpx), read as
    ``get_hf_file_metadata`` reads it: relative redirects (renamed repos) are followed, others (the LFS CDN)
    are not, as the metadata is on the redirect itself."""
    from urllib.parse import urljoin, urlparse

    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = build_hf_headers(**_supported(build_hf_headers, library_name="wd14-tagger"))
    headers["Accept-Encoding"] = "identity"  # the real size, not a compressed one
    session = get_session()
    # requests (0.x) follows redirects unless told not to; httpx (1.x) takes another keyword for it.
    no_redirects = {
        "follow_redirects"
        if "follow_redirects" in inspect.signature(session.head).parameters
        else "allow_redirects": False
    }
    for _ in range(10):
        response = session.head(url, headers=headers, timeout=timeout, **no_redirects)
        location = response.headers.get("Location")
        if 300 <= response.status_code < 400 and location and not urlparse(location).netloc:
            url = urljoin(url, location)
            continue
        break
    hf_raise_for_status(response)
    redirect = 300 <= response.status_code < 400
    etag = response.headers.get("X-Linked-Etag") or response.headers.get("ETag")
    if etag:
        etag = etag.removeprefix("W/").strip('"')
    size = response.headers.get("X-Linked-Size") or (None if redirect else response.headers.get("Content-Length"))
    return _Remote(
        filename, int(size) if size and size.isdigit() else None, etag, response.headers.get("X-Repo-Commit")
    )


def _fetch(
    model: CatalogModel, remote: _Remote, folder: Path, endpoint: str, models_dir: Path, *, progress: bool
) -> Path:
    """Download one file with huggingface_hub and check it; retry once, then fail clearly."""
    from huggingface_hub import hf_hub_download

    force = False
    problem = ""
    for attempt in (1, 2):
        kwargs = _download_kwargs(hf_hub_download, model, folder, endpoint, force=force, progress=progress)
        try:
            with _progress_bars(progress, "tqdm_class" in kwargs):
                path = Path(hf_hub_download(model.repo_id, remote.filename, **kwargs))
        except _catchable() as e:
            if attempt == 1 and _transient(e):
                logger.warning("download of %s/%s failed (%s); trying again", model.repo_id, remote.filename, e)
                continue  # without force: huggingface_hub resumes from what it kept, where it keeps anything
            raise ModelUnavailableError(
                _unavailable_message(model, models_dir, _reason(e, model, remote.filename, endpoint))
            ) from e
        problem = _check(path, remote)
        if not problem:
            return path
        again = "downloading it again" if attempt == 1 else "giving up"
        logger.warning("%s is damaged (%s): deleting it, %s", path, problem, again)
        _discard(path, folder, remote.filename)
        force = True
    raise ModelUnavailableError(
        _unavailable_message(
            model,
            models_dir,
            f"{remote.filename} could not be downloaded intact ({problem}, also on a second try); the connection "
            "or a proxy/mirror is "
            "altering the file. The damaged copy was deleted",
        )
    )


_UNIQUE_INCOMPLETE = re.compile(r"\.[0-9a-f]{8}\.incomplete$")
_STALE_AFTER_S = 3600.0


def _sweep_stale_incomplete(folder: Path) -> None:
    """Delete partial downloads nobody can resume: huggingface_hub 2.x names them ``<...>.<8 hex>.incomplete``
    (one per process) and deletes them itself on failure, so one left untouched for an hour belongs to a
    killed process. Older versions' ``<...>.<etag>.incomplete`` files are kept: those versions resume them.
    """
    download_dir = folder / ".cache" / "huggingface" / "download"
    try:
        leftovers = [p for p in download_dir.glob("*.incomplete") if _UNIQUE_INCOMPLETE.search(p.name)]
    except OSError:
        return
    now = time.time()
    for path in leftovers:
        try:
            if now - path.stat().st_mtime > _STALE_AFTER_S:
                path.unlink()
                logger.info("deleted %s, left by an interrupted download", path)
        except OSError as e:
            logger.debug("could not delete %s: %s", path, e)


def _download_kwargs(
    func: Callable[..., Any], model: CatalogModel, folder: Path, endpoint: str, *, force: bool, progress: bool
) -> dict[str, Any]:
    """Keyword arguments for ``hf_hub_download``, limited to those the installed version knows."""
    wanted: dict[str, Any] = {
        "revision": model.revision,
        "endpoint": endpoint,
        "local_dir": str(folder),
        "cache_dir": str(hf_cache_dir()),
        "force_download": force,
        "local_files_only": False,
        "etag_timeout": _etag_timeout(),
        "library_name": "wd14-tagger",
    }
    if _hf_version() < (0, 23):
        # Before 0.23: resume only on request, and local_dir held symlinks into the cache for big files.
        wanted["resume_download"] = True
        wanted["local_dir_use_symlinks"] = False
    if not progress:
        wanted["tqdm_class"] = _quiet_tqdm()
    return _supported(func, **wanted)


def _check(path: Path, remote: _Remote) -> str:
    """Why ``path`` does not match what the Hub reported ("" when it does).

    The size is compared with the Hub's; the content with the ETag: sha256 for LFS files (the model), the
    git blob sha1 for regular files (the csv), as the Hub defines them. Other ETags are not compared.
    """
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot read it: {e}"
    if remote.size is not None and size != remote.size:
        return f"{size} bytes instead of {remote.size}"
    etag = (remote.etag or "").lower()
    if _SHA256.fullmatch(etag):
        digest = hashlib.sha256()
        kind = "sha256"
    elif _SHA1.fullmatch(etag):
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % size)
        kind = "git sha1"
    else:
        return ""
    try:
        with path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as e:
        return f"cannot read it: {e}"
    actual = digest.hexdigest()
    return "" if actual == etag else f"{kind} {actual} instead of {etag}"


def _discard(path: Path, folder: Path, filename: str) -> None:
    """Delete a damaged download and huggingface_hub's record of it (so it is not taken as current)."""
    for stale in (path, folder / ".cache" / "huggingface" / "download" / f"{filename}.metadata"):
        try:
            stale.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("could not delete %s: %s", stale, e)


# -- huggingface_hub version differences -------------------------------------------------------------------


def _hf_version() -> tuple[int, int]:
    import huggingface_hub

    parts = re.findall(r"\d+", huggingface_hub.__version__)[:2]
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, 0)


def _supported(func: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """``kwargs`` without the names ``func`` does not accept (they differ between huggingface_hub versions)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - no signature: pass everything
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    dropped = sorted(set(kwargs) - set(params))
    if dropped:
        logger.debug("%s does not take %s in this huggingface_hub", getattr(func, "__name__", func), dropped)
    return {k: v for k, v in kwargs.items() if k in params}


def _quiet_tqdm() -> type:
    """A tqdm class that never shows (huggingface_hub's ``tqdm_class=`` to turn the bar off per call)."""
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


@contextmanager
def _progress_bars(progress: bool, per_call: bool) -> Iterator[None]:
    """Turn huggingface_hub's bars off for the call where ``tqdm_class=`` cannot (older versions)."""
    if progress or per_call:
        yield
        return
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:  # pragma: no cover
        yield
        return
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


# -- errors ------------------------------------------------------------------------------------------------


def _catchable() -> tuple[type[BaseException], ...]:
    """The exceptions a download can end in: huggingface_hub's (all OSError or ValueError subclasses in
    every supported version), the HTTP client's (httpx/httpx2 errors are not OSError), and OS errors."""
    kinds: list[type[BaseException]] = [OSError, ValueError]
    for module_name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for attr in ("HTTPError", "RequestException"):
            kind = getattr(module, attr, None)
            if isinstance(kind, type) and issubclass(kind, BaseException):
                kinds.append(kind)
    return tuple(kinds)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _names(exc: BaseException) -> set[str]:
    # Class names rather than classes: they moved between huggingface_hub versions (utils -> errors,
    # EntryNotFoundError -> RemoteEntryNotFoundError) and the HTTP client changed (requests -> httpx2).
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


# Dropped connections and timeouts, in httpx/httpx2 (huggingface_hub >= 1.0) and requests (older) terms.
_TRANSIENT_NAMES = frozenset(
    {"TimeoutException", "Timeout", "TimeoutError", "NetworkError", "RemoteProtocolError", "ConnectionError",
     "ChunkedEncodingError", "ProtocolError"}
)  # fmt: skip


def _transient(exc: BaseException) -> bool:
    """A dropped connection, a timeout or a size mismatch: worth one more try."""
    for e in _chain(exc):
        names = _names(e)
        if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError", "OfflineModeIsEnabled"}:
            return False
        if names & _TRANSIENT_NAMES:
            return True
        if "Consistency check failed" in str(e):
            return True
        status = _status(e)
        if status is not None:
            return status in (408, 429, 500, 502, 503, 504)
    return False


def _reason(exc: BaseException, model: CatalogModel, filename: str, endpoint: str) -> str:
    """What went wrong, in words, from an exception raised by huggingface_hub or the HTTP client."""
    chain = list(_chain(exc))
    for e in chain:
        names = _names(e)
        if "OfflineModeIsEnabled" in names:
            return (
                "huggingface_hub is in offline mode (HF_HUB_OFFLINE was set when it was imported; unset it and "
                "restart to download)"
            )
        if "GatedRepoError" in names:
            return f"the repository {model.repo_id} is gated at {endpoint}: log in and accept its terms"
        if "RepositoryNotFoundError" in names:
            return f"the repository {model.repo_id} was not found at {endpoint} (HTTP {_status(e) or 404})"
        if "RevisionNotFoundError" in names:
            return f"the revision {model.revision} was not found in {model.repo_id} at {endpoint}"
        if "EntryNotFoundError" in names and "LocalEntryNotFoundError" not in names:
            return f"{filename} was not found in {model.repo_id} at revision {model.revision} ({endpoint})"
    for e in chain:
        names = _names(e)
        if names & {"TimeoutException", "Timeout", "TimeoutError", "ReadTimeout", "ConnectTimeout"}:
            return f"{endpoint} did not answer in time ({type(e).__name__}: {e})"
        if names & {"ConnectError", "ConnectionError", "NetworkError", "ProxyError"} or isinstance(
            e, ConnectionRefusedError
        ):
            return f"cannot connect to {endpoint} ({type(e).__name__}: {e})"
        if names & {"RemoteProtocolError", "ChunkedEncodingError"}:
            return f"the connection to {endpoint} broke off while downloading {filename} ({e})"
        status = _status(e)
        if status is not None:
            return f"{endpoint} answered HTTP {status} for {filename}"
    first = chain[0]
    if "LocalEntryNotFoundError" in _names(first):
        return f"the Hub at {endpoint} could not be reached and the files are not here"
    return f"{type(first).__name__}: {first}"


def _unavailable_message(model: CatalogModel, models_dir: Path, reason: str) -> str:
    """The whole story for a catalog model that cannot be had: what, why, and what the user can do."""
    folder = (models_dir / model.name).absolute()
    endpoint_env = os.environ.get("HF_ENDPOINT")
    endpoint_now = (
        f"HF_ENDPOINT is {endpoint_env}" if endpoint_env else f"HF_ENDPOINT is not set (so {DEFAULT_ENDPOINT})"
    )
    files = " and ".join(model.files)
    return (
        f"Model '{model.name}' is not available: {reason}.\n"
        f"It is the Hugging Face repository {model.repo_id}, revision {model.revision}; it needs the files {files}.\n"
        f"To install it by hand, download {files} from {hub_endpoint()}/{model.repo_id}/tree/{model.revision} "
        f"and put them in this folder:\n  {folder}{os.sep}\n"
        f"{endpoint_now}. Where the Hub cannot be reached, a mirror can be set with it, "
        f"e.g. HF_ENDPOINT={MIRROR_EXAMPLE}"
    )


def _unknown_message(text: str, models_dir: Path) -> str:
    known = ", ".join(m.name for m in CATALOG)
    local = [i.name for i in list_models(models_dir) if i.family == "local"]
    where = f"Local models in {models_dir}: {', '.join(local)}." if local else f"No local models in {models_dir}."
    folder_note = ""
    candidate = Path(text).expanduser()
    try:
        if candidate.is_dir():
            folder_note = (
                f" The folder {candidate} holds no model: it needs a .onnx file and its {TAGS_FILE} "
                "(or a single .csv file)."
            )
    except OSError:
        pass
    return (
        f"Unknown model '{text}'.{folder_note} Known models: {known}. {where} A model can also be given as "
        f"the path of a folder holding a .onnx file and its {TAGS_FILE}."
    )
