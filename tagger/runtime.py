"""ONNX Runtime sessions: one per loaded model, shared by all callers, and honest about the device.

After a session is created we read back which execution provider is really active. When CUDA was asked
for (``cuda``, or ``auto`` with a CUDA provider offered or onnxruntime-gpu installed) and is not active,
``LoadedModel.device_note`` says why in words a user can act on; every front end shows it (CLI stderr, UI
status line, API ``provider_note``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tagger import backends
from tagger.backends import OPENVINO
from tagger.errors import ModelFormatError, OptionsError, TaggerError
from tagger.families.description import WD14, ModelDescription
from tagger.families.preprocess import Preparer, make_preparer
from tagger.families.readers import load_labels
from tagger.hub import ModelFiles
from tagger.labels import Labels

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def available_cpus() -> int:
    """CPUs this process may really use: the affinity mask, bounded by a cgroup CPU quota if one is set."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, int(quota + 0.5)))
    return max(1, n)


def _cgroup_cpu_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


_TRIM: Any = None  # glibc's malloc_trim once looked up; False where there is none


def release_free_memory() -> bool:
    """Hand memory the C allocator holds free back to the operating system (glibc's ``malloc_trim``).

    Without it an unloaded model's memory mostly stays with the process: a ViT-B stand-in left 671 MB
    resident after its unload, 98 MB with this call. Costs about a millisecond. Returns False where there is
    no such call (not glibc).
    """
    global _TRIM
    if _TRIM is None:
        _TRIM = False
        import platform

        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            import ctypes

            try:
                fn = ctypes.CDLL("libc.so.6").malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
                _TRIM = fn
            except (OSError, AttributeError):
                pass
    if _TRIM is False:
        return False
    _TRIM(0)
    return True


DEVICES = "auto, cpu, cpu-bf16, openvino, cuda, cuda:N, intel-gpu, intel-gpu:N"


@dataclass(frozen=True)
class Device:
    """Where a model runs. ONNX Runtime: ``cpu``, ``cuda[:N]``; OpenVINO (``tagger.backends``): ``cpu-bf16`` (the
    CPU's bf16 units), ``openvino`` (the CPU at fp32), ``intel-gpu[:N]``; ``auto`` picks (see ``create_session``)."""

    kind: str  # "auto" | "cpu" | "cuda" | "cpu-bf16" | "openvino" | "intel-gpu"
    index: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Device:
        text = (text or "auto").strip().lower()
        m = re.fullmatch(r"(auto|cpu|cuda|cpu-bf16|openvino|intel-gpu)(?::(\d+))?", text)
        if not m or (m.group(2) is not None and m.group(1) not in ("cuda", "intel-gpu")):
            raise OptionsError("device", f"{text!r} is not one of {DEVICES}")
        return cls(m.group(1), int(m.group(2) or 0))

    def __str__(self) -> str:
        return f"{self.kind}:{self.index}" if self.kind in ("cuda", "intel-gpu") and self.index else self.kind

    @property
    def wants_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def openvino(self) -> bool:
        """Whether OpenVINO runs it (rather than ONNX Runtime)."""
        return self.kind in ("cpu-bf16", "openvino", "intel-gpu")


def installed_runtimes() -> list[str]:
    """Which onnxruntime distributions pip has installed (more than one breaks the GPU build)."""
    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def cuda_diagnosis(available: list[str], installed: list[str], active: list[str] | None = None) -> str:
    """Why CUDA is not being used, and the fix, as one message for a user (empty when CUDA is active).

    ``available`` is onnxruntime's available providers, ``installed`` the runtime distributions with
    versions, ``active`` the providers a session really got (None when no session was made yet).
    """
    if active is not None and active and active[0] == CUDA:
        return ""
    names = [i.split()[0] for i in installed]
    if "onnxruntime-gpu" in names and len(names) > 1:
        others = ", ".join(n for n in names if n != "onnxruntime-gpu")
        return (
            f"CUDA is not used: both onnxruntime-gpu and {others} are installed, and the CPU build hides the "
            "GPU one. Fix: pip uninstall -y onnxruntime onnxruntime-gpu, then pip install onnxruntime-gpu "
            "(in the WebUI's venv; restarting the WebUI runs install.py, which does this for you)."
        )
    if CUDA not in available:
        if "onnxruntime-gpu" not in names:
            have = installed[0] if installed else "onnxruntime"
            return (
                f"CUDA is not used: {have} is the CPU-only build. Fix: pip uninstall -y onnxruntime, then "
                f"pip install onnxruntime-gpu in a version matching your CUDA and cuDNN ({_GPU_BUILDS})."
            )
        return (
            "CUDA is not used: onnxruntime-gpu is installed but reports no CUDA provider. Check that an "
            "NVIDIA driver is present (nvidia-smi) and reinstall onnxruntime-gpu."
        )
    gpu = next((i for i in installed if i.startswith("onnxruntime-gpu ")), installed[0] if installed else "onnxruntime")
    return (
        f"CUDA is not used: {gpu} offers CUDA but could not start it: no NVIDIA driver, or the CUDA or cuDNN "
        "libraries it was built for are missing or of another major version. (Without an NVIDIA GPU, choose the "
        f"device cpu and this note goes away.) {_GPU_BUILDS}. Install the onnxruntime-gpu version that matches "
        "the CUDA/cuDNN your torch brings (torch.version.cuda), or the matching nvidia-cudnn / nvidia-cuda-runtime "
        "packages. The console log of onnxruntime names the library that failed."
    )


# Which onnxruntime-gpu build needs which CUDA and cuDNN (PyPI's builds; sources in install.py).
_GPU_BUILDS = (
    "onnxruntime-gpu 1.27 and newer need CUDA 13 with cuDNN 9, 1.19 to 1.26 CUDA 12 with cuDNN 9; the CUDA 12 "
    "builds of 1.17-1.18.0 need cuDNN 8 (as torch 2.1-2.3 ships)"
)


@functools.cache
def _preload_cuda_libraries() -> str:
    """Have onnxruntime load the CUDA and cuDNN libraries of pip's nvidia-* packages (torch's CUDA wheels bring
    them), so that CUDA starts without a system-wide CUDA; once per process. onnxruntime 1.21 and newer
    (``preload_dlls``; https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html, section
    "Preload DLLs"); a library torch already loaded is reused. Returns what it printed (the libraries it could
    not load), for the device note."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    printed = io.StringIO()
    try:  # it prints its findings: keep them off stdout, where the CLI writes its results
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as e:  # only a help: CUDA can still start from the system's libraries
        return f"onnxruntime.preload_dlls() failed: {e}"
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", printed.getvalue()).split())  # without its colour codes


@dataclass
class LoadedModel:
    """A session with what is needed to feed it: input size, batch limit, tag list, active provider, and the
    model's description (how an image becomes its input, which output is the prediction)."""

    files: ModelFiles
    session: Any
    labels: Labels
    input_name: str
    size: int
    fixed_batch: int | None  # None: the batch dimension is dynamic
    provider: str  # what really runs it: "CUDAExecutionProvider", "CPUExecutionProvider", "OpenVINO CPU"...
    device_note: str = ""  # why CUDA was wanted and is not used, with the fix; empty otherwise
    threads: int = 1
    run_lock: Any = field(default_factory=threading.Lock, repr=False)  # held around each run (the engine's)
    holders: int = field(default=0, repr=False)  # calls using the model now (see ModelRegistry)
    retired: bool = field(default=False, repr=False)  # unloaded: closed when the last holder lets go
    description: ModelDescription = WD14
    output_name: str | None = None  # the prediction output (None: the first)
    embedding_name: str | None = None  # the embedding output, when the model has one
    prepare: Preparer | None = field(default=None, repr=False)  # loaded image -> input tensor (no batch axis)
    precision: str = "fp32"  # what it computes in: fp32, or bf16 / fp16 on OpenVINO

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def provider_label(self) -> str:
        """CPU, CUDA, or OpenVINO's device with its precision ("OpenVINO CPU bf16")."""
        if self.provider.startswith(OPENVINO):
            return f"{self.provider} {self.precision}"
        return "CUDA" if self.provider == CUDA else "CPU" if self.provider == CPU else self.provider

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` for a float32 batch of input tensors; splits batches a fixed model refuses."""
        return self.run_outputs(batch)[0]

    def run_outputs(
        self, batch: np.ndarray, *, embeddings: bool = False, on_start: Callable[[], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probabilities [N, T], embeddings [N, D] or None)``: the prediction output (through a sigmoid when
        the model gives logits), and the embedding output when asked for and the model has one. ``on_start`` is
        called once the run lock is held, right before the model runs (the pipeline keeps decodes out of the
        run from there, and not while it waits for the lock, which the WebUI's image generation may hold)."""
        if batch.ndim == 3:
            batch = batch[None]
        step = self.fixed_batch or len(batch)
        want_emb = embeddings and self.embedding_name is not None and self.output_name is not None
        names = (
            [self.output_name, self.embedding_name] if want_emb else [self.output_name] if self.output_name else None
        )
        probs, embs = [], []
        with self.run_lock:
            session = self.session
            if session is None:
                raise TaggerError(f"{self.name} was unloaded: load it again")
            if on_start is not None:
                on_start()
            for i in range(0, len(batch), step):
                outs = session.run(names, {self.input_name: batch[i : i + step]})
                probs.append(outs[0])
                if want_emb:
                    embs.append(np.asarray(outs[1], dtype=np.float32).reshape(len(outs[1]), -1))
        out = probs[0] if len(probs) == 1 else np.concatenate(probs)
        if self.description.output.activation == "sigmoid":
            out = sigmoid(out)
        emb = (embs[0] if len(embs) == 1 else np.concatenate(embs)) if want_emb else None
        return out, emb


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, float32, without overflow warnings for large negative logits."""
    x = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _session_options(threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def create_session(
    files: ModelFiles, device: Device, threads: int | None = None, labels: Labels | None = None
) -> LoadedModel:
    """Create and validate a session for ``files``. Raises ModelFormatError for unusable models.

    ``auto`` runs on CUDA when ONNX Runtime offers it; else, where OpenVINO is installed and the CPU has bf16
    units, where ``backends.autoselect``'s check (once per machine and model) found it best; else ONNX Runtime
    on the CPU. ``labels``: the model's tag list when the caller has read it already (else it is read here).
    """
    desc = files.description or WD14
    labels = labels if labels is not None else load_labels(desc.labels, files.tags_path, single=desc.single)
    threads = threads or available_cpus()
    if device.openvino:
        ov_session, note = backends.open_session(files.model_path, device, threads)
        if note:
            log.warning("%s", note)
        return _loaded(files, desc, labels, ov_session, ov_session.get_providers()[0], note, threads,
                       ov_session.precision)  # fmt: skip
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ModelFormatError(
            "onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu for CUDA)"
        ) from e

    available = list(ort.get_available_providers())
    if device.kind == "auto" and CUDA not in available and backends.auto_candidates():
        loaded = backends.autoselect(files, threads, lambda kind: create_session(files, Device(kind), threads, labels))
        installed = installed_runtimes()
        if any(i.startswith("onnxruntime-gpu ") for i in installed):  # a GPU build that offers no CUDA
            loaded.device_note = cuda_diagnosis(available, installed, None)
            log.warning("%s", loaded.device_note)
        return loaded
    wants_cuda = device.wants_cuda or (device.kind == "auto" and CUDA in available)
    providers: list[Any] = [CPU]
    preloaded = ""
    if wants_cuda and CUDA in available:
        preloaded = _preload_cuda_libraries()
        providers = [(CUDA, {"device_id": device.index}), CPU]
    try:
        session = ort.InferenceSession(str(files.model_path), _session_options(threads), providers=providers)
    except Exception as e:  # onnxruntime raises its own types (Fail, InvalidGraph, NoSuchFile...)
        raise ModelFormatError(_explain_load_error(files, e, ort.__version__)) from e

    active = list(session.get_providers())
    note = ""
    if device.kind != "cpu" and (not active or active[0] != CUDA):
        # ``auto`` is quiet only when nothing CUDA is there at all (the CPU build alone): a CUDA provider that
        # is offered and did not start, or an installed onnxruntime-gpu that offers none, is a GPU failing.
        installed = installed_runtimes()
        if wants_cuda or any(i.startswith("onnxruntime-gpu ") for i in installed):
            note = cuda_diagnosis(available, installed, active)
            if preloaded:
                note += f" Loading the CUDA libraries said: {preloaded[:400]}"
            log.warning("%s", note)
    return _loaded(files, desc, labels, session, active[0] if active else CPU, note, threads, "fp32")


def auto_precision(files: ModelFiles, threads: int | None = None) -> str | None:
    """What ``auto`` computes the model of ``files`` in here: fp32 on CUDA or ONNX Runtime's CPU, bf16 where
    auto's check chose OpenVINO bf16; None when that check has not run yet (``backends.auto_precision``)."""
    try:
        import onnxruntime as ort

        if CUDA in ort.get_available_providers():
            return "fp32"
    except ImportError:
        pass
    return backends.auto_precision(files, threads or available_cpus())


def _loaded(files: ModelFiles, desc: ModelDescription, labels: Labels, session: Any, provider: str, note: str,
            threads: int, precision: str) -> LoadedModel:  # fmt: skip
    """The LoadedModel of a new session, its input and outputs checked against the model's description."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size, fixed = _input_size(files, desc, inputs)
    output, embedding = _outputs(files, desc, outputs, labels)
    return LoadedModel(
        files=files,
        session=session,
        labels=labels,
        input_name=inputs[0].name,
        size=size,
        fixed_batch=fixed,
        provider=provider,
        device_note=note,
        threads=threads,
        description=desc,
        output_name=output,
        embedding_name=embedding,
        prepare=make_preparer(desc, size),
        precision=precision,
    )


def _input_size(files: ModelFiles, desc: ModelDescription, inputs: list[Any]) -> tuple[int, int | None]:
    """The square side and the fixed batch size (None: dynamic) of the model's one image input, checked
    against the description's layout."""
    shape = list(inputs[0].shape) if inputs else []
    nhwc = desc.input.layout == "NHWC"
    want = "[N, S, S, 3]" if nhwc else "[N, 3, S, S]"
    ok = len(inputs) == 1 and len(shape) == 4 and (shape[3] if nhwc else shape[1]) == 3
    sides = shape[1:3] if nhwc else shape[2:4]
    if ok:
        fixed_sides = [d for d in sides if isinstance(d, int) and d > 0]
        ok = len(set(fixed_sides)) <= 1 and (len(fixed_sides) == 2 or desc.input.size is not None)
    if not ok:
        what = "a WD14 tagger" if desc.family == "wd14" else f"a {desc.family} tagger as described"
        raise ModelFormatError(
            f"{files.model_path} is not {what}: expected one {desc.input.layout} input {want}, got "
            f"{[(i.name, i.shape) for i in inputs]}"
            + ("" if desc.family != "wd14" else ". Another kind of tagger needs a tagger.json beside it (see README).")
        )
    fixed_sides = [d for d in sides if isinstance(d, int) and d > 0]
    if fixed_sides and desc.input.size is not None and fixed_sides[0] != desc.input.size:
        log.info(
            "%s: the model takes %d px; the description says %d: the model wins",
            files.name,
            fixed_sides[0],
            desc.input.size,
        )
    size = int(fixed_sides[0]) if fixed_sides else int(desc.input.size)  # type: ignore[arg-type]
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return size, fixed


def _outputs(files: ModelFiles, desc: ModelDescription, outputs: list[Any], labels: Labels) -> tuple[str, str | None]:
    """The names of the prediction output (checked against the tag list) and the embedding output."""
    names = [o.name for o in outputs]
    if isinstance(desc.output.prediction, int):
        if desc.output.prediction >= len(names):
            raise ModelFormatError(
                f"{files.model_path}: no output number {desc.output.prediction} (counting from 0; the model has {names})"
            )
        pred = names[desc.output.prediction]
    elif desc.output.prediction is not None:
        if desc.output.prediction not in names:
            raise ModelFormatError(
                f"{files.model_path}: no output named {desc.output.prediction!r} (the model has {names})"
            )
        pred = desc.output.prediction
    else:  # deepghs' exports name it "prediction" or "output"; otherwise the first output
        pred = next((n for n in ("prediction", "output") if n in names), names[0] if names else "")
    out_shape = list(next((o.shape for o in outputs if o.name == pred), []))
    if len(out_shape) != 2:
        kind = "a WD14 tagger" if desc.family == "wd14" else "a tagger"
        raise ModelFormatError(f"{files.model_path} is not {kind}: output shape {out_shape}, expected [N, T]")
    if isinstance(out_shape[1], int) and out_shape[1] != len(labels):
        raise ModelFormatError(
            f"{files.name}: the model outputs {out_shape[1]} tags but {files.tags_path.name} has {len(labels)} "
            "rows. The tag list does not belong to this model: fetch both files from the same repository."
        )
    emb = desc.output.embedding
    if emb is not None and emb not in names:
        raise ModelFormatError(f"{files.model_path}: no embedding output named {emb!r} (the model has {names})")
    if emb is None and "embedding" in names and desc.output.prediction is None:
        emb = "embedding"
    return pred, emb


def _explain_load_error(files: ModelFiles, err: Exception, ort_version: str) -> str:
    text = str(err)
    if re.search(r"opset|Opset|ai\.onnx\.ml", text):
        return (
            f"{files.name}: this onnxruntime ({ort_version}) is too old for the model's operator set. "
            f"WD14 v3 models need onnxruntime >= 1.17: pip install -U 'onnxruntime>=1.17' "
            f"(or onnxruntime-gpu). Details: {text.splitlines()[0] if text else err!r}"
        )
    first = text.strip().splitlines()[0] if text.strip() else repr(err)
    return f"{files.name}: {files.model_path} could not be loaded as an ONNX model ({first}). Delete the file to re-download it."


class ModelRegistry:
    """Loaded sessions by model name. Thread-safe.

    Callers hold a model while they use it (``acquire``/``release``). ``unload`` takes it out of the
    registry at once and closes its session when the last holder lets go (at once when nobody holds it):
    the session is dropped explicitly, so its memory goes back even if something still references the
    ``LoadedModel`` object, and it never goes back while a run still needs it.
    """

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> LoadedModel | None:
        """The model under ``key``, held by the caller (``release`` it), or None when it is not loaded."""
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                model.holders += 1
            return model

    def release(self, model: LoadedModel) -> None:
        with self._lock:
            model.holders -= 1
            close = model.retired and model.holders == 0
        if close:
            _close(model)

    def has(self, key: str) -> bool:
        with self._lock:
            return key in self._models

    def add(self, key: str, model: LoadedModel) -> None:
        with self._lock:
            old = self._models.get(key)
            self._models[key] = model
        if old is not None and old is not model:
            self._retire([old])

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def unload(self, key: str) -> bool:
        with self._lock:
            model = self._models.pop(key, None)
        if model is None:
            return False
        self._retire([model])
        return True

    def unload_all(self) -> int:
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        self._retire(models)
        return len(models)

    def _retire(self, models: list[LoadedModel]) -> None:
        idle = []
        with self._lock:
            for model in models:
                model.retired = True
                if model.holders == 0:
                    idle.append(model)
        if idle:
            _close(*idle)


def _close(*models: LoadedModel) -> None:
    """Drop the sessions and hand their memory back to the operating system."""
    for model in models:
        model.session = None
    gc.collect()
    release_free_memory()
