"""Installs what the Tagger extension needs into the WebUI's Python. Run by the WebUI on every launch.

- Fast and silent when everything is in place: no pip, and torch is imported once per torch version (what it
  reports is cached in the virtual environment's folder).
- Skipped when the WebUI runs with ``--skip-install`` / ``--skip-prepare-environment`` (it then does not
  run this file at all; for the Extensions tab's install the flags are read from ``COMMANDLINE_ARGS``) or when
  ``TAGGER_SKIP_INSTALL=1``.
- The dependency list is read from ``pyproject.toml`` (there is no second list). A dependency that is
  already installed is left as it is, whatever its version: the WebUI pins Pillow, numpy, protobuf and more,
  and pip runs with every installed package pinned (a constraints file), so nothing the host installed can be
  up- or downgraded as a side effect.
- ONNX Runtime: ``onnxruntime-gpu`` when torch sees CUDA, in a build whose CUDA and cuDNN major versions
  match torch's (builds for cuDNN 8 and 9 cannot load each other's libraries; a build for CUDA 12.x runs with
  any CUDA 12.x), else ``onnxruntime``. Never both: the CPU package hides the GPU one, so when both are found
  they are replaced, and this says so. Whenever torch sees CUDA and the CPU build is chosen, the console says
  why on every launch, and what would give the GPU build.
- OpenVINO (the ``openvino`` extra of ``pyproject.toml``) only on request: when the tagger's device is cpu-bf16,
  openvino or intel-gpu (``--tagger-device`` in ``COMMANDLINE_ARGS``, else the ``tagger_device`` setting in the
  WebUI's ``config.json``, the folder above ``extensions/``, or ``--ui-settings-file``) and it is not installed.
  Like everything here it is installed with every installed package pinned: openvino 2026.4 needs numpy >=1.16.6,
  <2.6 (both WebUIs pin 1.26.2) and openvino-telemetry, nothing the WebUIs pin.

Facts, with their sources:
- onnxruntime.ai, CUDA execution provider requirements: onnxruntime-gpu 1.19 and newer on PyPI are built for
  CUDA 12 with cuDNN 9; 1.18.x and older on PyPI for CUDA 11.8 with cuDNN 8; CUDA 12 builds with cuDNN 8
  (1.17.x, 1.18.0) are only on Microsoft's onnxruntime-cuda-12 package feed.
  https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html
- PyPI's own metadata of every onnxruntime-gpu release (read 2026-12-01 with ``pip install --dry-run --report``):
  1.21.0 to 1.26.0 name ``nvidia-cuda-runtime-cu12`` / ``nvidia-cudnn-cu12~=9.0`` as their CUDA extras, so
  CUDA 12 + cuDNN 9; 1.27.0 and newer name CUDA 13 (``nvidia-cuda-runtime~=13.0``, ``nvidia-cudnn-cu13``).
  The 1.27.0 release candidate says "CUDA 12 packages are deprecated" and ships Python packages for the CPU
  and CUDA 13 only (https://github.com/microsoft/onnxruntime/issues/29032); before 1.27 the CUDA 13 builds
  were only on Microsoft's onnxruntime-cuda-13 feed (https://github.com/microsoft/onnxruntime/issues/27944).
  Wheels for Python 3.10 end with 1.23.2 (1.24.4 and newer require Python >= 3.11), so a CUDA 13 build of
  onnxruntime-gpu does not exist on PyPI for Python 3.10.
- The same metadata: onnxruntime and onnxruntime-gpu 1.27.0 and newer require ``protobuf>=4.25.8``; 1.26.0
  and older name protobuf without a version. AUTOMATIC1111 v1.10.1 and Forge pin ``protobuf==3.20.0``
  (their ``requirements_versions.txt``). Asked for ``onnxruntime>=1.17`` under that pin, pip downloaded
  1.32.0, 1.31.1, 1.31.0, 1.30.0, 1.29.0, 1.28.0, 1.27.0 and 1.26.0 (Python 3.11, pip 23.2) before it found
  one that fits; so with a protobuf older than 4.25.8 installed the requirement says ``<1.27`` and pip takes
  the first candidate. (Python 3.10 escapes this by accident: its newest wheels are 1.23.2.)
- AUTOMATIC1111 1.10 ships torch 2.1.2+cu121 (CUDA 12, cuDNN 8); Forge torch 2.3.1+cu121 (cuDNN 8); torch 2.4
  and newer bring cuDNN 9; owners of new GPUs install torch for CUDA 12.8 (cu128) or 13.0 (cu130).

The decisions are pure functions (``decide``, ``choose_runtime``, ``parse_dependencies``) that the tests
cover; ``main`` only gathers facts and runs pip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CPU, GPU = "onnxruntime", "onnxruntime-gpu"
OTHER_RUNTIMES = ("onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-silicon", "onnxruntime-rocm")
MIN_RUNTIME = (1, 17)  # WD14 v3 models need opset support added in 1.17
CUDA13_FIRST = (1, 27)  # onnxruntime-gpu on PyPI: 1.19-1.26 for CUDA 12, 1.27 and newer for CUDA 13 (see above)
PROTOBUF4_FIRST = (1, 27)  # onnxruntime(-gpu) 1.27 and newer require protobuf>=4.25.8 (see above)
PROTOBUF_NEEDED = (4, 25, 8)
CUDA12_CUDNN8_INDEX = "https://aiinfra.pkgs.visualstudio.com/PublicPackages/_packaging/onnxruntime-cuda-12/pypi/simple/"
CUDA12_CUDNN8_VERSION = "1.18.0"
# What onnxruntime(-gpu) itself requires; installed from PyPI after a --no-deps install from the feed.
RUNTIME_DEPENDENCIES = ("coloredlogs", "flatbuffers", "numpy", "packaging", "protobuf", "sympy")
STATE_FILE = ".tagger-install-state.json"
# The devices that run on OpenVINO (tagger.runtime.Device.openvino; this file imports nothing of the extension) and
# the setting that chooses the device in the WebUI (tagger/webui.py).
OPENVINO_DEVICES = ("cpu-bf16", "openvino", "intel-gpu")
DEVICE_SETTING, DEVICE_FLAG = "tagger_device", "--tagger-device"


# -- pure functions ------------------------------------------------------------------------------------------


def parse_dependencies(pyproject_text: str, extra: str | None = None) -> list[str]:
    """The ``[project] dependencies`` array of a pyproject.toml, or with ``extra`` that array of
    ``[project.optional-dependencies]`` (a minimal reader: Python 3.10 has no tomllib)."""
    table, key = ("[project.optional-dependencies]", extra) if extra else ("[project]", "dependencies")
    where = f"{table} {key}"
    in_table = False
    collected: str | None = None  # the array's text so far, once its opening line was seen
    for raw in pyproject_text.splitlines():
        line = _strip_comment(raw).strip()
        if collected is None:
            if line.startswith("["):
                in_table = line == table
                continue
            m = re.match(rf"{re.escape(key)}\s*=\s*\[(.*)$", line) if in_table else None
            if m is None:
                continue
            collected, line = "", m.group(1)
        end = _unquoted(line, "]")  # the array's closing bracket
        collected += " " + (line if end is None else line[:end])
        if end is not None:
            return [a or b for a, b in re.findall(r"\"([^\"]*)\"|'([^']*)'", collected)]
    if collected is not None:
        raise ValueError(f"pyproject.toml: the {where} array is not closed")
    raise ValueError(f"pyproject.toml: no {where} array")


def _unquoted(line: str, char: str) -> int | None:
    """Index of the first ``char`` in ``line`` outside quotes, or None."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == char:
            return i
    return None


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    end = _unquoted(line, "#")
    return line if end is None else line[:end]


def dist_name(requirement: str) -> str:
    """The normalised distribution name of a requirement (``Pillow>=9.5`` -> ``pillow``)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not m:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.18.0"`` -> ``(1, 18, 0)``; a local or pre-release part is ignored."""
    parts = []
    for p in re.split(r"[.+]", version):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


@dataclass(frozen=True)
class TorchInfo:
    """What torch reports: its version, whether it sees a CUDA device, and the CUDA/cuDNN it was built with."""

    version: str
    cuda_available: bool
    cuda: str | None = None  # torch.version.cuda, e.g. "12.1"; None for CPU and ROCm builds
    cudnn: int | None = None  # torch.backends.cudnn.version(), e.g. 8902 or 90100

    @property
    def cuda_major(self) -> int | None:
        return version_tuple(self.cuda)[0] if self.cuda else None

    @property
    def cudnn_major(self) -> int | None:
        if self.cudnn:
            return self.cudnn // 10000 if self.cudnn >= 10000 else self.cudnn // 1000  # 8902 -> 8, 90100 -> 9
        if self.cuda_major:  # unknown: torch 2.4 and newer bring cuDNN 9, older ones cuDNN 8
            return 9 if version_tuple(self.version)[:2] >= (2, 4) else 8
        return None


@dataclass(frozen=True)
class RuntimeChoice:
    package: str  # CPU or GPU
    requirement: str
    index_url: str | None  # a package feed to install from instead of PyPI
    reason: str


def choose_runtime(torch: TorchInfo | None, python: tuple[int, int], protobuf: str | None = None) -> RuntimeChoice:
    """Which ONNX Runtime build fits the torch next to it, under Python ``python`` and the installed ``protobuf``
    version (None: not installed), which is never changed: a version range that rules out every release the
    protobuf cannot take lets pip install in one step instead of downloading release after release."""
    old_protobuf = protobuf is not None and version_tuple(protobuf)[:3] < PROTOBUF_NEEDED
    cpu = f"{CPU}>={_v(MIN_RUNTIME)}" + (f",<{_v(PROTOBUF4_FIRST)}" if old_protobuf else "")
    if torch is None or not torch.cuda_available:
        return RuntimeChoice(CPU, cpu, None, "torch is not installed" if torch is None else "torch sees no CUDA device")
    if not torch.cuda_major:
        return RuntimeChoice(CPU, cpu, None, f"torch {torch.version} sees a GPU but is not a CUDA build (ROCm?)")
    cuda, cudnn = torch.cuda_major, torch.cudnn_major
    seen = f"torch {torch.version} uses CUDA {torch.cuda} with cuDNN {cudnn}"
    if cuda == 13 and cudnn == 9:
        if python < (3, 11):
            return RuntimeChoice(
                CPU,
                cpu,
                None,
                f"{seen}; onnxruntime-gpu's CUDA 13 builds ({GPU} {_v(CUDA13_FIRST)} and newer) need Python 3.11 "
                f"or newer and this is Python {python[0]}.{python[1]}. For the GPU: run the WebUI on Python 3.11+, "
                "or use torch for CUDA 12.8 (cu128), which gets onnxruntime-gpu's CUDA 12 build",
            )
        if old_protobuf:
            return RuntimeChoice(
                CPU,
                cpu,
                None,
                f"{seen}; onnxruntime-gpu's CUDA 13 builds ({GPU} {_v(CUDA13_FIRST)} and newer) require protobuf "
                f">= {_v(PROTOBUF_NEEDED)}, and protobuf {protobuf} is installed (the WebUI pins it; upgrading it may "
                "break the WebUI). For the GPU: use torch for CUDA 12.8 (cu128), which gets onnxruntime-gpu's "
                "CUDA 12 build",
            )
        return RuntimeChoice(GPU, f"{GPU}>={_v(CUDA13_FIRST)}", None, seen)
    if cuda == 12 and cudnn == 9:  # any CUDA 12.x, 12.8 included: a CUDA 12 build runs on every 12.x
        return RuntimeChoice(GPU, f"{GPU}>=1.19,<{_v(CUDA13_FIRST)}", None, seen)
    if cuda == 12 and cudnn == 8:
        return RuntimeChoice(
            GPU,
            f"{GPU}=={CUDA12_CUDNN8_VERSION}",
            CUDA12_CUDNN8_INDEX,
            f"{seen}; the CUDA 12 + cuDNN 8 build of {GPU} {CUDA12_CUDNN8_VERSION} comes from Microsoft's "
            f"onnxruntime-cuda-12 feed (the PyPI build of that version is for CUDA 11.8)",
        )
    if cuda == 11 and cudnn == 8:
        return RuntimeChoice(GPU, f"{GPU}>=1.17,<1.19", None, seen)
    return RuntimeChoice(
        CPU,
        cpu,
        None,
        f"{seen}, and no onnxruntime-gpu build on PyPI is made for that (known: CUDA 11.8 + cuDNN 8, CUDA 12 + "
        "cuDNN 8 or 9, CUDA 13 + cuDNN 9). If one exists now, install it yourself: an installed onnxruntime-gpu "
        "is kept",
    )


def _v(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def gpu_build_fits(version: str, build_cuda: str | None, torch: TorchInfo) -> bool:
    """Whether an installed onnxruntime-gpu ``version`` (built for CUDA ``build_cuda``) fits ``torch``."""
    v = version_tuple(version)[:3]
    cuda_major = version_tuple(build_cuda)[0] if build_cuda else None
    if cuda_major is not None and cuda_major != torch.cuda_major:
        return False
    if torch.cuda_major == 13 and torch.cudnn_major == 9:  # feed builds for CUDA 13 exist from 1.24 on
        return v[:2] >= (1, 24) if cuda_major == 13 else v[:2] >= CUDA13_FIRST
    if torch.cuda_major == 12 and torch.cudnn_major == 9:
        if cuda_major == 12:  # PyPI's 1.19-1.26, or a feed build of any version
            return v[:2] >= (1, 19) or v == (1, 18, 1)
        return (1, 19) <= v[:2] < CUDA13_FIRST
    if torch.cuda_major == 12 and torch.cudnn_major == 8:
        return v[:2] >= (1, 17) and v[:3] <= (1, 18, 0) and cuda_major == 12
    if torch.cuda_major == 11 and torch.cudnn_major == 8:
        return (1, 17) <= v[:2] < (1, 19)
    return False


def cpu_on_cuda_notice(installed: dict[str, str], torch: TorchInfo | None, choice: RuntimeChoice) -> str | None:
    """The console line for a CUDA machine that gets (or keeps) the CPU build; None otherwise.

    An onnxruntime-gpu installed alone is kept whatever was chosen, so then there is nothing to say here (the
    tagger itself says so if CUDA does not start)."""
    if torch is None or not torch.cuda_available or choice.package != CPU:
        return None
    if GPU in installed and CPU not in installed:
        return None
    return f"Tagger: ONNX Runtime's CPU build ({CPU}) is used although torch sees a GPU: {choice.reason}."


@dataclass(frozen=True)
class Action:
    kind: str  # "uninstall" | "install"
    packages: tuple[str, ...]
    reason: str
    index_url: str | None = None
    no_deps: bool = False
    if_failed: str = "the tab may not work until this is fixed"

    def describe(self) -> str:
        where = f" from {self.index_url}" if self.index_url else ""
        return f"{self.kind} {' '.join(self.packages)}{where}: {self.reason}"


def _install_runtime(choice: RuntimeChoice, installed: dict[str, str], reason: str) -> list[Action]:
    if choice.index_url is None:
        return [Action("install", (choice.requirement,), reason)]
    missing = tuple(d for d in RUNTIME_DEPENDENCIES if d not in installed)
    actions = [Action("install", (choice.requirement,), reason, choice.index_url, no_deps=True)]
    if missing:
        actions.append(Action("install", missing, f"what {choice.package} needs"))
    return actions


def decide(
    dependencies: list[str],
    installed: dict[str, str],
    torch: TorchInfo | None,
    python: tuple[int, int],
    gpu_build_cuda: str | None = None,
    device: str = "auto",
    openvino: list[str] | None = None,
) -> list[Action]:
    """What to do, given the dependency list, the installed distributions (normalised name -> version), what
    torch reports, the Python version, the CUDA version the installed onnxruntime-gpu was built for (if
    known), the tagger's device (``wanted_device``) and the ``openvino`` extra's requirements."""
    actions: list[Action] = []
    for req in dependencies:
        name = dist_name(req)
        if name in (CPU, GPU) or name in installed:
            continue  # ONNX Runtime is decided below; an installed package is never changed
        actions.append(Action("install", (req,), "not installed"))

    choice = choose_runtime(torch, python, installed.get("protobuf"))
    actions += _runtime_actions(installed, torch, choice, gpu_build_cuda)
    if runs_on_openvino(device):
        missing = tuple(r for r in openvino or () if dist_name(r) not in installed)
        if missing:
            why = f"the tagger's device is {device}, which runs on OpenVINO"
            failed = f"the device {device} cannot load until OpenVINO is installed (cpu and auto work without it)"
            actions.append(Action("install", missing, why, if_failed=failed))
    return actions


def runs_on_openvino(device: str) -> bool:
    """Whether the tagger device ``device`` (``cpu-bf16``, ``intel-gpu:1``...) runs on OpenVINO."""
    return device.strip().lower().split(":")[0] in OPENVINO_DEVICES


def wanted_device(args: list[str], settings: dict[str, object]) -> str:
    """The tagger's device as the WebUI will see it: ``--tagger-device`` among the WebUI's arguments wins over the
    ``tagger_device`` setting (as in tagger/webui.py); ``auto`` when neither says."""
    for i, arg in enumerate(args):
        if arg == DEVICE_FLAG and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(DEVICE_FLAG + "="):
            return arg.split("=", 1)[1]
    value = settings.get(DEVICE_SETTING)
    return value if isinstance(value, str) and value.strip() else "auto"


def webui_args(environ: dict[str, str]) -> list[str]:
    """The WebUI's arguments this process can see: ``COMMANDLINE_ARGS`` (webui-user.sh / .bat)."""
    try:
        return shlex.split(environ.get("COMMANDLINE_ARGS", ""))
    except ValueError:
        return environ.get("COMMANDLINE_ARGS", "").split()


def settings_file(args: list[str], extension_root: Path) -> Path:
    """The WebUI's settings: ``--ui-settings-file``, else ``config.json`` in its data folder, which holds the
    ``extensions`` folder this extension is in (the WebUI's ``data_path``)."""
    for i, arg in enumerate(args):
        if arg == "--ui-settings-file" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--ui-settings-file="):
            return Path(arg.split("=", 1)[1])
    return extension_root.parent.parent / "config.json"


def read_settings(path: Path) -> dict[str, object]:
    """The WebUI's settings, or empty when the file is missing or not a JSON object (the WebUI says why)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _runtime_actions(
    installed: dict[str, str], torch: TorchInfo | None, choice: RuntimeChoice, gpu_build_cuda: str | None
) -> list[Action]:
    have = [n for n in (CPU, GPU) if n in installed]
    if not have:
        if any(n in installed for n in OTHER_RUNTIMES):
            return []  # the user chose another build (DirectML, OpenVINO...): keep it
        return _install_runtime(choice, installed, f"no ONNX Runtime installed; {choice.reason}")
    if len(have) == 2:
        both = Action(
            "uninstall",
            (CPU, GPU),
            f"both {CPU} {installed[CPU]} and {GPU} {installed[GPU]} are installed; they share one module and "
            "the CPU build hides the GPU one",
        )
        return [both, *_install_runtime(choice, {}, f"reinstalling one ONNX Runtime: {choice.reason}")]
    if have[0] == CPU:
        if choice.package == GPU:
            cpu_only = Action("uninstall", (CPU,), f"{CPU} is the CPU-only build and {choice.reason}")
            return [cpu_only, *_install_runtime(choice, installed, choice.reason)]
        if version_tuple(installed[CPU])[:2] < MIN_RUNTIME:
            return [Action("install", (choice.requirement,), f"{CPU} {installed[CPU]} is too old")]
        return []
    # only onnxruntime-gpu: it runs on the CPU too, so it stays unless torch's CUDA needs another build
    if torch is None or choice.package != GPU or gpu_build_fits(installed[GPU], gpu_build_cuda, torch):
        return []
    built = f" (built for CUDA {gpu_build_cuda})" if gpu_build_cuda else ""
    mismatch = Action("uninstall", (GPU,), f"{GPU} {installed[GPU]}{built} does not match: {choice.reason}")
    return [mismatch, *_install_runtime(choice, installed, choice.reason)]


def skip_requested(environ: dict[str, str]) -> bool:
    if environ.get("TAGGER_SKIP_INSTALL", "").strip().lower() in ("1", "true", "yes"):
        return True
    return any(a in ("--skip-install", "--skip-prepare-environment") for a in webui_args(environ))


def constraints_for(installed: dict[str, str], replace: set[str]) -> str:
    """A pip constraints file pinning every installed distribution except those being replaced."""
    lines = []
    for name, version in sorted(installed.items()):
        if name in replace or not re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]*", version):
            continue
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def pip_commands(actions: list[Action], python: str, constraints: str | None) -> list[list[str]]:
    cmds = []
    for a in actions:
        if a.kind == "uninstall":
            cmds.append([python, "-m", "pip", "uninstall", "-y", *a.packages])
            continue
        cmd = [python, "-m", "pip", "install", "--prefer-binary"]
        if a.index_url:
            cmd += ["--index-url", a.index_url]
        if a.no_deps:
            cmd.append("--no-deps")
        if constraints:
            cmd += ["-c", constraints]
        cmds.append(cmd + list(a.packages))
    return cmds


# -- facts about this environment ----------------------------------------------------------------------------


def installed_distributions() -> dict[str, str]:
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name") if dist.metadata else None
        if name:
            out[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    return out


def gpu_build_cuda() -> str | None:
    """The CUDA version the installed onnxruntime-gpu was built for (read from its files, not imported)."""
    try:
        files = metadata.distribution(GPU).files or []
    except metadata.PackageNotFoundError:
        return None
    info = next((f for f in files if str(f).replace("\\", "/").endswith("capi/build_and_package_info.py")), None)
    if info is None:
        return None
    try:
        text = Path(info.locate()).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"cuda_version\s*=\s*['\"]([\d.]+)['\"]", text)
    return m.group(1) if m else None


def torch_info(state_path: Path) -> TorchInfo | None:
    """What torch reports; cached per torch version so that a launch does not import torch every time."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    try:
        cached = json.loads(state_path.read_text(encoding="utf-8"))
        if cached.get("torch", {}).get("version") == version:
            return TorchInfo(**cached["torch"])
    except (OSError, ValueError, TypeError):
        pass
    try:
        import torch  # slow: only when torch changed since the last run

        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info = TorchInfo(version, bool(torch.cuda.is_available()), torch.version.cuda, cudnn)
    except Exception as e:  # a broken torch must not stop the WebUI from starting
        print(f"Tagger: could not ask torch about CUDA ({e}); assuming none")  # noqa: T201
        return TorchInfo(version, False)
    with contextlib.suppress(OSError):  # a read-only environment only costs the cache
        state_path.write_text(json.dumps({"torch": asdict(info)}), encoding="utf-8")
    return info


def main() -> int:
    if skip_requested(dict(os.environ)):
        return 0
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    deps, openvino = parse_dependencies(pyproject), parse_dependencies(pyproject, "openvino")
    args = webui_args(dict(os.environ))
    device = wanted_device(args, read_settings(settings_file(args, ROOT)))
    installed = installed_distributions()
    torch = torch_info(Path(sys.prefix) / STATE_FILE)
    python = (sys.version_info.major, sys.version_info.minor)
    notice = cpu_on_cuda_notice(installed, torch, choose_runtime(torch, python, installed.get("protobuf")))
    if notice:
        print(notice)  # noqa: T201 - every launch: a GPU left unused must never be silent
    actions = decide(deps, installed, torch, python, gpu_build_cuda() if GPU in installed else None, device, openvino)
    if not actions:
        return 0
    replaced = {p for a in actions if a.kind == "uninstall" for p in a.packages} | {CPU, GPU}
    with tempfile.TemporaryDirectory(prefix="tagger-install-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(constraints_for(installed, replaced), encoding="utf-8")
        for action, cmd in zip(actions, pip_commands(actions, sys.executable, str(constraints)), strict=True):
            print(f"Tagger: {action.describe()}")  # noqa: T201
            result = subprocess.run(cmd, check=False)
            if result.returncode != 0:
                print(f"Tagger: pip failed ({' '.join(cmd)}); {action.if_failed}")  # noqa: T201
                return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
