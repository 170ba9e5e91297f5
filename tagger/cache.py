"""The probability cache: an embedded SQLite database of what a model said about an image.

Keyed by the image's content hash and the model (id, revision and file identity), it holds every
probability at or above ``floor`` exactly (float32) plus the two MCut thresholds computed from the full
vector, so every option (thresholds >= floor, MCut, excludes, formatting) is reproduced exactly without
the model. Entries are compact: a few hundred (index, value) pairs, zlib-compressed.

Safe with concurrent readers and one writer (WAL mode, busy timeout). A corrupt or foreign file is set
aside (renamed) and rebuilt with a warning, never a crash; a size cap evicts the oldest entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.errors import TaggerError
from tagger.files import hash_file
from tagger.labels import Labels
from tagger.options import TagOptions
from tagger.postprocess import CHARACTER_MCUT_FLOOR, category_threshold, mcut_threshold

log = logging.getLogger(__name__)

APPLICATION_ID = 0x57443134  # "WD14": marks the file as ours; anything else is foreign and set aside
SCHEMA_VERSION = 1
DEFAULT_FLOOR = 0.01  # thresholds below this (nobody's) make the model answer instead
DEFAULT_MAX_BYTES = 2 * 1024**3
# The size cap is checked when the cache opens, whenever the bytes written since the last measurement could
# have reached it (each entry counted twice its payload, as half-full B-tree pages hold it), and every
# RESYNC_PUTS writes in any case (other processes write to the same file). A measurement costs ~10 us, a put
# ~300 us; measuring on every put would cost 3-7 %.
RESYNC_PUTS = 256
FILE_NAME = "probs.sqlite3"  # the file a folder given as the cache holds
_SQLITE_HEADER = b"SQLite format 3\x00"


class CacheFileError(TaggerError):
    """A path given as the probability cache cannot be one; nothing was changed."""


def cache_file(path: str | Path) -> Path:
    """The cache file that a path the user gave names: a folder means the ``probs.sqlite3`` in it.

    Refuses (CacheFileError) a file that is something else: a damaged cache is set aside and rebuilt, and a
    mistyped ``--cache notes.txt`` must not have the user's file moved aside as a damaged cache.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if path.exists():
        if not path.is_file():
            raise CacheFileError(f"{path} is not a file; give the cache file, or a folder to hold {FILE_NAME}")
        try:
            with open(path, "rb") as fh:
                head = fh.read(72)
        except OSError as e:
            raise CacheFileError(f"probability cache {path} cannot be read ({e.strerror or e})") from e
        ours = head[:16] == _SQLITE_HEADER and int.from_bytes(head[68:72], "big") == APPLICATION_ID
        if head and not ours:
            what = "an SQLite database of another program" if head[:16] == _SQLITE_HEADER else "not a database"
            raise CacheFileError(
                f"{path} is not a tagger probability cache ({what}); nothing was changed. Give a new file name "
                f"or a folder (it will hold {FILE_NAME})."
            )
        return path
    folder = next(p for p in path.parents if p.exists() or p == p.parent)
    if folder.exists() and not folder.is_dir():
        raise CacheFileError(f"probability cache {path}: {folder} is a file, not a folder")
    return path


def content_hash(data: bytes) -> str:
    """The cache key of an image: BLAKE2b-128 of its bytes (fast, and collisions are not a concern here)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_hash(path: Path) -> str:
    """The cache key of an image file: ``content_hash`` of its bytes, read piece by piece."""
    return hash_file(path, "blake2b", digest_size=16)


@dataclass(frozen=True)
class CachedProbs:
    """A stored prediction: dense probabilities (exact at or above ``floor``, zero below) and MCut points."""

    probs: np.ndarray
    floor: float
    mcut_general: float
    mcut_character: float

    @property
    def mcut(self) -> tuple[float, float]:
        """The MCut points ``(general, character)`` of the full vector, for ``postprocess(..., mcut=)``."""
        return self.mcut_general, self.mcut_character

    def serves(self, opts: TagOptions, labels: Labels | None = None) -> bool:
        """True when every tag these options select is at or above the floor, so the answer is exact.

        With ``labels``, the thresholds of the model's other categories (copyright, artist, ...) count too
        (a category of which only the best label counts is stored whole)."""
        g = self.mcut_general if opts.general_mcut else opts.general_threshold
        c = max(self.mcut_character, CHARACTER_MCUT_FLOOR) if opts.character_mcut else opts.character_threshold
        others = [
            category_threshold(name, opts)
            for name in (labels.extra if labels is not None else ())
            if name not in labels.single and name not in opts.exclude_categories  # type: ignore[union-attr]
        ]
        return g >= self.floor and c >= self.floor and all(t >= self.floor for t in others)


def encode(probs: np.ndarray, labels: Labels, floor: float) -> tuple[bytes, float, float]:
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    keep = probs >= floor  # every category: re-thresholding any of them stays exact above the floor
    keep[labels.rating] = True  # ratings always, whatever their value
    for name in labels.single:  # as ratings: only the best counts, whatever its value
        keep[labels.groups[name]] = True
    idx = np.flatnonzero(keep)
    gaps = np.diff(idx, prepend=0).astype(np.uint16 if len(probs) < 65536 else np.uint32)  # small: compress well
    blob = zlib.compress(gaps.tobytes() + probs[idx].tobytes(), 6)
    return blob, mcut_threshold(probs[labels.general]), mcut_threshold(probs[labels.character])


def decode(blob: bytes, n_tags: int, floor: float, mg: float, mc: float) -> CachedProbs:
    raw = zlib.decompress(blob)
    itemsize = 2 if n_tags < 65536 else 4
    count = len(raw) // (itemsize + 4)
    gaps = np.frombuffer(raw[: count * itemsize], dtype=np.uint16 if itemsize == 2 else np.uint32)
    idx = np.cumsum(gaps, dtype=np.int64)
    vals = np.frombuffer(raw[count * itemsize :], dtype=np.float32)
    dense = np.zeros(n_tags, dtype=np.float32)
    dense[idx] = vals
    return CachedProbs(dense, floor, mg, mc)


class ProbCache:
    """One SQLite file; share one instance per process (it serialises its own writes)."""

    def __init__(self, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, floor: float = DEFAULT_FLOOR):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.floor = floor
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._writes = 0
        self._estimate = 0  # bytes in use, as of the last measurement plus what was written since
        self._warned = False  # "cannot be opened" is said once, not once per image

    # -- connection -----------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._open()
        except (OSError, sqlite3.OperationalError) as e:  # no folder, busy, locked, read-only: not damage
            if not self._warned:
                self._warned = True
                log.warning("probability cache %s cannot be opened (%s): going on without it", self.path, e)
            raise CacheUnavailable(str(e)) from e
        except sqlite3.DatabaseError as e:  # "file is not a database", "malformed": damage
            self._set_aside(f"unreadable ({e})")
            conn = self._open()
        self._conn = conn
        self._enforce_cap(conn)  # what earlier runs (or other processes) left over the cap goes now
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            # One write transaction checks and sets up the file, so that two processes opening a new cache
            # at once never see each other's half-made file (and never take it for a foreign one).
            conn.execute("BEGIN IMMEDIATE")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and (app_id != APPLICATION_ID or "entries" not in tables):
                conn.rollback()
                conn.close()
                self._set_aside(f"not a tagger cache (application id {app_id:#x}, tables {sorted(tables)})")
                return self._open()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if tables and version != SCHEMA_VERSION:
                conn.execute("DROP TABLE IF EXISTS entries")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS entries ("
                " image TEXT NOT NULL, model TEXT NOT NULL, n_tags INTEGER NOT NULL, floor REAL NOT NULL,"
                " mcut_general REAL NOT NULL, mcut_character REAL NOT NULL, data BLOB NOT NULL,"
                " created REAL NOT NULL, PRIMARY KEY (image, model)) WITHOUT ROWID"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS entries_created ON entries(created)")
            conn.execute("SELECT count(*) FROM entries").fetchone()  # reads a page: surfaces corruption now
            conn.execute("COMMIT")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _set_aside(self, why: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("probability cache %s is %s: moved to %s and rebuilt", self.path, why, aside)
        with contextlib.suppress(OSError):
            self.path.replace(aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                self.path.with_name(self.path.name + suffix).unlink()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connect()
            except sqlite3.OperationalError as e:  # busy or locked past the timeout: skip the cache this once
                log.info("probability cache %s not used for this call: %s", self.path, e)
                raise CacheUnavailable(str(e)) from e
            except sqlite3.DatabaseError as e:  # corrupted while open: set aside, next call rebuilds
                self.close()
                self._set_aside(f"damaged ({e})")
                raise CacheUnavailable(str(e)) from e

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    # -- entries --------------------------------------------------------------------------------------
    def get(self, image: str, model: str) -> CachedProbs | None:
        try:
            with self._db() as db:
                row = db.execute(
                    "SELECT n_tags, floor, mcut_general, mcut_character, data FROM entries WHERE image=? AND model=?",
                    (image, model),
                ).fetchone()
        except CacheUnavailable:
            return None
        if row is None:
            return None
        n, floor, mg, mc, blob = row
        try:
            return decode(blob, n, floor, mg, mc)
        except (zlib.error, ValueError, IndexError):
            log.warning("probability cache: a damaged entry for %s was ignored", image)
            return None

    def put(self, image: str, model: str, probs: np.ndarray, labels: Labels) -> None:
        blob, mg, mc = encode(probs, labels, self.floor)
        try:
            with self._db() as db:
                db.execute(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (image, model, len(labels), self.floor, mg, mc, blob, time.time()),
                )
                self._writes += 1
                self._estimate += 2 * (len(blob) + len(image) + len(model) + 32)
                if self._estimate > self.max_bytes or self._writes % RESYNC_PUTS == 0:
                    self._enforce_cap(db)
        except CacheUnavailable:
            return

    def _enforce_cap(self, db: sqlite3.Connection) -> None:
        """Measure the bytes in use; over ``max_bytes``, drop the oldest entries down to 80 % of it."""
        size = self.size_bytes(db)
        if size > self.max_bytes:
            count = db.execute("SELECT count(*) FROM entries").fetchone()[0]
            drop = max(1, int(count * (1 - 0.8 * self.max_bytes / size)))
            db.execute(
                "DELETE FROM entries WHERE (image, model) IN"
                " (SELECT image, model FROM entries ORDER BY created LIMIT ?)",
                (drop,),
            )
            log.info("probability cache over %d bytes: dropped the %d oldest entries", self.max_bytes, drop)
            size = self.size_bytes(db)
        self._estimate = size

    def size_bytes(self, db: sqlite3.Connection | None = None) -> int:
        def measure(conn: sqlite3.Connection) -> int:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]

        if db is not None:
            return measure(db)
        with self._db() as conn:
            return measure(conn)

    def stats(self) -> dict[str, object]:
        with self._db() as db:
            count = db.execute("SELECT count(*) FROM entries").fetchone()[0]
            models = [r[0] for r in db.execute("SELECT DISTINCT model FROM entries")]
            return {"path": str(self.path), "entries": count, "bytes": self.size_bytes(db), "models": models}

    def clear(self) -> int:
        with self._db() as db:
            n = db.execute("SELECT count(*) FROM entries").fetchone()[0]
            db.execute("DELETE FROM entries")
            db.execute("VACUUM")
            return n


class CacheUnavailable(Exception):
    """The cache could not be used for this call (it was set aside); callers go on without it."""
