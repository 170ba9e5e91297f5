"""OpenVINO, the optional second backend: the CPU's bf16 units, and Intel GPUs; and ``auto``'s check of it.

ONNX Runtime's CPU provider runs an fp32 model in fp32 on x86. OpenVINO compiles the same ONNX file and, with
its bf16 precision hint, runs the matrix work on the CPU's bf16 units (AVX512-BF16, AMX): on the ViT-B stand-in
of ``bench/`` (2 cores with AMX) 0.18 s per image against ONNX Runtime's 0.69 s, with probabilities within 0.002.

Devices (``runtime.Device``):

- ``cpu-bf16``: OpenVINO on the CPU at bf16 (on a CPU without bf16 units it runs fp32, and says so);
- ``openvino``: OpenVINO on the CPU at fp32 (OpenVINO's own default is bf16 where the CPU has it);
- ``intel-gpu`` / ``intel-gpu:N``: OpenVINO's ``GPU`` device (Intel Arc, integrated graphics) at fp16.

``auto`` uses CUDA when ONNX Runtime offers it. Otherwise, where OpenVINO is installed and the CPU has bf16
units, it checks a model once per machine at its first load (``autoselect``): the time per image of ONNX
Runtime fp32 and OpenVINO bf16 on two generated images, and whether their probabilities agree. bf16 is used
only when it is clearly faster and agrees; the verdict is stored beside the model (``CHOICE_FILE``) and the
next load reads it. Nothing changes for users without OpenVINO: it is never installed unless asked for
(``pip install openvino``, or the ``openvino`` extra).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagger.errors import ModelFormatError, OptionsError
from tagger.files import write_atomic
from tagger.images import prepare

if TYPE_CHECKING:
    from tagger.hub import ModelFiles
    from tagger.runtime import Device, LoadedModel

log = logging.getLogger(__name__)

OPENVINO = "OpenVINO"
INSTALL = (
    "pip install openvino (the WebUI installs it at its next start once the tagger's device setting names one of "
    "OpenVINO's devices; standalone: the project's openvino extra)"
)
CHOICE_FILE = ".tagger-backend.json"  # auto's verdicts, beside the model: one per machine and model file
# auto's check: bf16 is used when it is at least this much faster than ONNX Runtime fp32...
MIN_SPEEDUP = 1.25
# ...its probabilities differ by at most this much, and its tags at TAG_THRESHOLD are the same;
MAX_DIFF = 0.01
TAG_THRESHOLD = 0.35
# a model that ONNX Runtime runs faster than this per image has nothing to gain: not checked at all.
MIN_SECONDS = 0.05
PRECISIONS = {"bf16": "bf16", "f32": "fp32", "f16": "fp16"}  # OpenVINO's names -> ours


@functools.cache
def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed (or cannot load)."""
    try:
        import openvino
    except Exception:  # ImportError, or a broken install: either way not usable
        return None
    return str(getattr(openvino, "__version__", "?")).split("-")[0]


@functools.cache
def _core() -> Any:
    import openvino

    return openvino.Core()


@functools.cache
def _cpuinfo(field: str) -> str:
    """The first ``field`` line's value in /proc/cpuinfo (Linux), read once; empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    return frozenset(_cpuinfo("flags").split())


@functools.cache
def cpu_bf16_units() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16): from /proc/cpuinfo on Linux, else
    from OpenVINO's CPU capabilities when it is installed."""
    flags = cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    if openvino_version() is None:
        return False
    try:
        return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what the platform module says)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def gpu_devices() -> list[str]:
    """OpenVINO's GPU device names here (``GPU``, or ``GPU.0``, ``GPU.1``...); empty without OpenVINO or GPU."""
    if openvino_version() is None:
        return []
    try:
        return [d for d in _core().available_devices if d.startswith("GPU")]
    except Exception:
        return []


def planned_precision(device: Device) -> str:
    """The precision ``device`` computes in, known before any model is loaded (``auto``: fp32 here; see
    ``auto_precision`` for what a checked model uses)."""
    if device.kind == "cpu-bf16":
        return "bf16" if cpu_bf16_units() else "fp32"
    if device.kind == "intel-gpu":
        return "fp16"
    return "fp32"


def require_openvino(device: Device) -> None:
    """OptionsError naming the device and the fix when OpenVINO is not installed."""
    if openvino_version() is None:
        raise OptionsError(
            "device", f"{device} runs on OpenVINO, which is not installed: {INSTALL}; or choose cpu or auto"
        )


# -- the session --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arg:
    name: str
    shape: list[Any]  # ints, or a string for a dynamic dimension (as onnxruntime's NodeArg)


class OpenVINOSession:
    """A model compiled by OpenVINO, behind the part of onnxruntime's ``InferenceSession`` that ``LoadedModel``
    uses (``get_inputs``, ``get_outputs``, ``get_providers``, ``run``), so every caller runs it the same way."""

    def __init__(self, compiled: Any, device: str, precision: str) -> None:
        self.compiled = compiled
        self.device = device  # OpenVINO's device name: CPU, GPU, GPU.1
        self.precision = precision  # bf16 | fp32 | fp16: what it really computes in
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self._names = [port.get_any_name() for port in compiled.outputs]

    @staticmethod
    def _args(ports: Sequence[Any]) -> list[_Arg]:
        out = []
        for port in ports:
            dims = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
            out.append(_Arg(port.get_any_name(), dims))
        return out

    def get_inputs(self) -> list[_Arg]:
        return self._args(self.compiled.inputs)

    def get_outputs(self) -> list[_Arg]:
        return self._args(self.compiled.outputs)

    def get_providers(self) -> list[str]:
        return [f"{OPENVINO} {self.device.split('.')[0]}"]

    def run(self, names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (value,) = feeds.values()
        with _MEMO_LOCK:  # one request, reused: its output buffers are overwritten by the next run, so copy
            self._request.infer({0: np.ascontiguousarray(value, dtype=np.float32)})
            wanted = range(len(self._names)) if names is None else [self._names.index(n) for n in names]
            return [np.array(self._request.get_output_tensor(i).data, copy=True) for i in wanted]


def open_session(model_path: Path, device: Device, threads: int) -> tuple[OpenVINOSession, str]:
    """Compile ``model_path`` for ``device`` (one of OpenVINO's); returns the session and a note for the user
    (empty unless something they asked for is not what runs)."""
    require_openvino(device)
    note = ""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if device.kind == "intel-gpu":
        gpus = gpu_devices()
        name = "GPU" if device.index == 0 and "GPU" in gpus else f"GPU.{device.index}"
        if name not in gpus and not (name == "GPU.0" and "GPU" in gpus):
            raise OptionsError(
                "device",
                f"{device}: OpenVINO sees no Intel GPU {name} here (its devices: {', '.join(_devices()) or 'none'}). "
                "It needs the Intel GPU driver with its compute runtime (Linux: intel-opencl-icd / "
                "intel-level-zero-gpu; Windows: the Arc or Iris Xe driver); or choose cpu-bf16, cpu or auto.",
            )
        config["INFERENCE_PRECISION_HINT"] = "f16"
    else:
        name = "CPU"
        config["INFERENCE_NUM_THREADS"] = threads
        bf16 = device.kind == "cpu-bf16" and cpu_bf16_units()
        config["INFERENCE_PRECISION_HINT"] = "bf16" if bf16 else "f32"
        if device.kind == "cpu-bf16" and not bf16:
            note = (
                f"cpu-bf16: this CPU ({cpu_name()}) has no bf16 units (AVX512-BF16 or AMX), so OpenVINO runs "
                "fp32. Compare it with cpu (ONNX Runtime) on your images: python -m tagger backend MODEL "
                "--device openvino --validate FOLDER"
            )
    core = _core()
    try:
        compiled = core.compile_model(core.read_model(str(model_path)), name, config)
    except Exception as e:  # OpenVINO raises RuntimeError subclasses with long texts
        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise ModelFormatError(
            f"{model_path}: OpenVINO {openvino_version()} could not compile it for {name} ({first})"
        ) from e
    try:
        got = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    except Exception:
        got = config["INFERENCE_PRECISION_HINT"]
    return OpenVINOSession(compiled, name, PRECISIONS.get(got, got)), note


def _devices() -> list[str]:
    try:
        return list(_core().available_devices)
    except Exception:
        return []


def describe_machine(installed: list[str]) -> list[str]:
    """What can run models here, for a person (``python -m tagger devices``)."""
    lines = []
    try:
        import onnxruntime

        providers = ", ".join(p.replace("ExecutionProvider", "") for p in onnxruntime.get_available_providers())
        lines.append(f"ONNX Runtime {onnxruntime.__version__} ({', '.join(installed) or 'onnxruntime'}): {providers}")
    except ImportError:
        lines.append("ONNX Runtime: not installed (pip install onnxruntime, or onnxruntime-gpu)")
    bf16 = cpu_bf16_units()
    lines.append(f"CPU: {cpu_name()}; bf16 units (AVX512-BF16 / AMX): {'yes' if bf16 else 'no'}")
    version = openvino_version()
    if version is None:
        lines.append(f"OpenVINO: not installed (needed for cpu-bf16, openvino, intel-gpu: {INSTALL})")
    else:
        gpus = gpu_devices()
        lines.append(f"OpenVINO {version}: devices {', '.join(_devices()) or 'none'}"
                     + ("" if gpus else " (no Intel GPU: intel-gpu is not available)"))  # fmt: skip
    lines.append(
        "auto: CUDA where ONNX Runtime offers it; else "
        + ("OpenVINO bf16 for each model where a one-time check finds it faster and in agreement, else " if
           version is not None and bf16 else "")
        + "ONNX Runtime on the CPU"
    )  # fmt: skip
    return lines


# -- auto's check ---------------------------------------------------------------------------------------------


def auto_candidates() -> bool:
    """Whether ``auto`` has anything to check on this machine: OpenVINO installed and bf16 units in the CPU."""
    return openvino_version() is not None and cpu_bf16_units()


def machine_key(threads: int) -> str:
    import onnxruntime

    return f"{cpu_name()}|{threads} threads|onnxruntime {onnxruntime.__version__}|openvino {openvino_version()}"


@dataclass(frozen=True)
class Verdict:
    """auto's choice for one model on one machine, with what it measured."""

    device: str  # "cpu-bf16" or "cpu"
    reason: str
    fp32_s: float  # ONNX Runtime fp32, seconds per image
    bf16_s: float | None = None  # OpenVINO bf16, seconds per image (None: not measured)
    max_diff: float | None = None
    same_tags: bool | None = None

    @property
    def precision(self) -> str:
        return "bf16" if self.device == "cpu-bf16" else "fp32"


_MEMO: dict[tuple[str, str], Verdict] = {}  # verdicts of this process, by (file, key)
_MEMO_LOCK = threading.Lock()


class Choices:
    """auto's verdicts, in ``CHOICE_FILE`` beside the model (keyed by machine and model file): the check runs
    once. A folder that cannot be written keeps the verdict for this process only."""

    def __init__(self, files: ModelFiles, threads: int) -> None:
        self.path = files.model_path.parent / CHOICE_FILE
        self.key = f"{machine_key(threads)}|{files.file_key}"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self) -> Verdict | None:
        with _MEMO_LOCK:
            memo = _MEMO.get((str(self.path), self.key))
        if memo is not None:
            return memo
        entry = self._read().get(self.key)
        if not isinstance(entry, dict) or entry.get("device") not in ("cpu", "cpu-bf16"):
            return None
        fields = Verdict.__dataclass_fields__
        try:
            verdict = Verdict(**{k: v for k, v in entry.items() if k in fields})
        except TypeError:
            return None
        with _MEMO_LOCK:  # read once: every tagging call under auto asks (for its cache key)
            _MEMO[(str(self.path), self.key)] = verdict
        return verdict

    def put(self, verdict: Verdict) -> None:
        with _MEMO_LOCK:
            _MEMO[(str(self.path), self.key)] = verdict
            data = self._read()
            data[self.key] = {**verdict.__dict__, "checked": dt.datetime.now().isoformat(timespec="seconds")}
            try:
                write_atomic(self.path, json.dumps(data, indent=1) + "\n")
            except OSError as e:
                log.warning("%s: could not store auto's verdict (%s): the check runs again next time", self.path, e)


def check_images(size: int = 512) -> list[Any]:
    """Two generated pictures (shapes and gradients, one with transparency) for auto's check: what a tagger
    sees is closer to these than to noise, and they need no file."""
    from PIL import Image, ImageDraw

    out = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:size, 0:size]
        base = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1).astype(np.uint8)
        img = Image.fromarray(base, "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = (int(v) for v in rng.integers(0, size - 64, 2))
            w, h = (int(v) for v in rng.integers(32, size // 2, 2))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=color)
        if seed == 1:
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(((x > size // 8) * 255).astype(np.uint8), "L"))
        out.append(img)
    return out


def _timed_runs(model: LoadedModel, tensors: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """Probabilities of each tensor (batch 1) and the fastest run's seconds, after two warm-up runs (a new
    session's first runs are slow: memory arenas, OpenVINO's first-run kernel choices)."""
    for _ in range(2):
        model.run(tensors[0][None])
    best, probs = float("inf"), []
    for tensor in tensors:
        start = time.perf_counter()
        probs.append(model.run(tensor[None])[0])
        best = min(best, time.perf_counter() - start)
    return best, probs


def _tags(probs: np.ndarray, model: LoadedModel) -> set[int]:
    return {int(i) for i in np.flatnonzero(probs >= TAG_THRESHOLD)} - {int(i) for i in model.labels.rating}


def autoselect(files: ModelFiles, threads: int, make: Callable[[str], LoadedModel]) -> LoadedModel:
    """The model loaded where ``auto`` runs it best on this CPU: OpenVINO bf16 when the check (run once per
    machine and model file, see the module docstring) found it faster and in agreement, else ONNX Runtime fp32.
    ``make(device)`` loads the model on a device ("cpu" or "cpu-bf16")."""
    choices = Choices(files, threads)
    verdict = choices.get()
    if verdict is not None:
        return make(verdict.device)
    fp32 = make("cpu")
    tensors = [fp32.prepare(img) if fp32.prepare else prepare(img, fp32.size) for img in check_images()]
    fp32_s, fp32_probs = _timed_runs(fp32, tensors)
    if fp32_s < MIN_SECONDS:
        verdict = Verdict("cpu", f"ONNX Runtime takes {fp32_s * 1000:.0f} ms per image: nothing to gain", fp32_s)
        choices.put(verdict)
        return fp32
    started = time.perf_counter()
    try:
        bf16 = make("cpu-bf16")
    except Exception as e:  # OpenVINO cannot compile this model: auto stays with ONNX Runtime
        verdict = Verdict("cpu", f"OpenVINO could not load it ({e})", fp32_s)
        choices.put(verdict)
        log.warning("auto: %s: %s", files.name, verdict.reason)
        return fp32
    bf16_s, bf16_probs = _timed_runs(bf16, tensors)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(fp32_probs, bf16_probs, strict=True))
    same = all(_tags(a, fp32) == _tags(b, fp32) for a, b in zip(fp32_probs, bf16_probs, strict=True))
    speedup = fp32_s / bf16_s if bf16_s > 0 else float("inf")
    if diff > MAX_DIFF or not same:
        why = f"OpenVINO bf16 disagrees with fp32 (largest difference {diff:.4f}{'' if same else ', other tags'})"
        choice = "cpu"
    elif speedup < MIN_SPEEDUP:
        why = f"OpenVINO bf16 is only {speedup:.2f}x as fast as ONNX Runtime fp32 here"
        choice = "cpu"
    else:
        why = f"OpenVINO bf16 is {speedup:.1f}x as fast as ONNX Runtime fp32 here and agrees (largest difference {diff:.4f})"
        choice = "cpu-bf16"
    verdict = Verdict(choice, why, fp32_s, bf16_s, diff, same)
    choices.put(verdict)
    log.warning(
        "auto: %s: %s: using %s (checked in %.1f s, once; stored in %s)",
        files.name, why, "cpu-bf16" if choice == "cpu-bf16" else "ONNX Runtime fp32 (cpu)",
        time.perf_counter() - started, choices.path,
    )  # fmt: skip
    keep, drop = (bf16, fp32) if choice == "cpu-bf16" else (fp32, bf16)
    with contextlib.suppress(Exception):
        drop.session = None
    return keep


def auto_precision(files: ModelFiles, threads: int) -> str | None:
    """The precision ``auto`` computes ``files`` in on this machine: fp32 unless a stored verdict says bf16;
    None when the check has not run yet (it runs at the model's first load)."""
    if not auto_candidates():
        return "fp32"
    verdict = Choices(files, threads).get()
    return None if verdict is None else verdict.precision
