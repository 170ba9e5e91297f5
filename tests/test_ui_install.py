"""install.py (run by the WebUI on every launch): its decisions are pure functions, tested here case by case."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
inst: dict[str, Any] = runpy.run_path(str(ROOT / "install.py"), run_name="tagger_install")
TorchInfo = inst["TorchInfo"]
decide = inst["decide"]
choose_runtime = inst["choose_runtime"]

DEPS = ["onnxruntime>=1.17", "huggingface_hub>=0.20", "Pillow>=9.5", "numpy>=1.23"]
BASE = {"huggingface-hub": "0.23.0", "pillow": "9.5.0", "numpy": "1.26.2"}
A1111_TORCH = TorchInfo("2.1.2+cu121", True, "12.1", 8902)  # AUTOMATIC1111 1.10's default
NEW_TORCH = TorchInfo("2.4.1+cu124", True, "12.4", 90100)
CU118_TORCH = TorchInfo("2.1.2+cu118", True, "11.8", 8700)
CPU_TORCH = TorchInfo("2.1.2+cpu", False, None, None)
CU128_TORCH = TorchInfo("2.7.1+cu128", True, "12.8", 90701)  # what owners of RTX 50 GPUs install
CU130_TORCH = TorchInfo("2.9.1+cu130", True, "13.0", 91300)
PY310, PY311 = (3, 10), (3, 11)  # A1111 recommends 3.10; onnxruntime 1.24.4 and newer need 3.11


def kinds(actions: list[Any]) -> list[tuple[str, tuple[str, ...]]]:
    return [(a.kind, a.packages) for a in actions]


# -- the dependency list ---------------------------------------------------------------------------------------


def test_dependencies_come_from_pyproject_and_match_a_real_toml_reader() -> None:
    tomllib = pytest.importorskip("tomllib")
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert inst["parse_dependencies"](text) == tomllib.loads(text)["project"]["dependencies"]


@pytest.mark.parametrize(
    "text",
    [
        '[project]\nname = "x"\ndependencies = ["a>=1", \'b[extra]>=2\'] # trailing\n[tool.x]\ndependencies = ["no"]\n',
        '[build-system]\nrequires = ["setuptools"]\n[project]\ndependencies = [\n  # comment ]\n  "a>=1",  # why\n'
        '  "b[extra]>=2",\n]\n',
    ],
)
def test_minimal_toml_reader_handles_comments_extras_and_other_tables(text: str) -> None:
    assert inst["parse_dependencies"](text) == ["a>=1", "b[extra]>=2"]


def test_minimal_toml_reader_refuses_a_missing_list() -> None:
    with pytest.raises(ValueError, match="no \\[project\\] dependencies"):
        inst["parse_dependencies"]('[tool.x]\ndependencies = ["a"]\n')


# -- which ONNX Runtime ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("torch", "python", "package", "requirement", "feed"),
    [
        (A1111_TORCH, PY310, "onnxruntime-gpu", "onnxruntime-gpu==1.18.0", True),  # CUDA 12 + cuDNN 8: feed build
        (NEW_TORCH, PY310, "onnxruntime-gpu", "onnxruntime-gpu>=1.19,<1.27", False),
        (CU128_TORCH, PY310, "onnxruntime-gpu", "onnxruntime-gpu>=1.19,<1.27", False),  # 12.8 is CUDA 12
        (CU128_TORCH, PY311, "onnxruntime-gpu", "onnxruntime-gpu>=1.19,<1.27", False),
        (CU130_TORCH, PY311, "onnxruntime-gpu", "onnxruntime-gpu>=1.27", False),  # PyPI's CUDA 13 builds
        (CU130_TORCH, PY310, "onnxruntime", "onnxruntime>=1.17", False),  # none of them for Python 3.10
        (CU118_TORCH, PY310, "onnxruntime-gpu", "onnxruntime-gpu>=1.17,<1.19", False),
        (TorchInfo("2.3.1+cu121", True, "12.1", None), PY310, "onnxruntime-gpu", "onnxruntime-gpu==1.18.0", True),
        (TorchInfo("2.4.0+cu118", True, "11.8", 90100), PY310, "onnxruntime", "onnxruntime>=1.17", False),
        (TorchInfo("3.2.0+cu140", True, "14.0", 100000), PY311, "onnxruntime", "onnxruntime>=1.17", False),
        (TorchInfo("2.3.0+rocm6.0", True, None, None), PY310, "onnxruntime", "onnxruntime>=1.17", False),
        (CPU_TORCH, PY310, "onnxruntime", "onnxruntime>=1.17", False),
        (None, PY310, "onnxruntime", "onnxruntime>=1.17", False),
    ],
)
def test_runtime_matches_torchs_cuda_and_cudnn_majors(
    torch: Any, python: tuple[int, int], package: str, requirement: str, feed: bool
) -> None:
    choice = choose_runtime(torch, python)
    assert (choice.package, choice.requirement, choice.index_url is not None) == (package, requirement, feed)
    if feed:
        assert "CUDA 11.8" in choice.reason  # says why PyPI's build of that version will not do


@pytest.mark.parametrize(
    ("torch", "python", "installed", "says"),
    [
        (CU130_TORCH, PY310, {}, "need Python 3.11 or newer and this is Python 3.10"),
        (CU130_TORCH, PY310, {"onnxruntime": "1.23.2"}, "cu128"),  # and what would give the GPU build
        (CU130_TORCH, PY310, {"onnxruntime": "1.23.2", "onnxruntime-gpu": "1.23.2"}, "Python 3.10"),
        (TorchInfo("3.2.0+cu140", True, "14.0", 100000), PY311, {}, "no onnxruntime-gpu build on PyPI"),
        (TorchInfo("2.3.0+rocm6.0", True, None, None), PY310, {"onnxruntime": "1.20.1"}, "not a CUDA build"),
    ],
)
def test_a_cuda_machine_left_on_the_cpu_build_is_told_why(
    torch: Any, python: tuple[int, int], installed: dict[str, str], says: str
) -> None:
    notice = inst["cpu_on_cuda_notice"](installed, torch, choose_runtime(torch, python))
    assert notice.startswith("Tagger: ONNX Runtime's CPU build (onnxruntime) is used although torch sees a GPU")
    assert says in notice


@pytest.mark.parametrize(
    ("torch", "python", "installed"),
    [
        (CU130_TORCH, PY311, {"onnxruntime": "1.31.1"}),  # the GPU build is chosen: the swap says it
        (CU128_TORCH, PY310, {}),
        (CPU_TORCH, PY310, {"onnxruntime": "1.20.1"}),  # no GPU: nothing to say
        (None, PY310, {}),
        (CU130_TORCH, PY310, {"onnxruntime-gpu": "1.26.0"}),  # an onnxruntime-gpu the user put there is kept
    ],
)
def test_no_notice_when_the_gpu_build_is_chosen_kept_or_there_is_no_gpu(
    torch: Any, python: tuple[int, int], installed: dict[str, str]
) -> None:
    assert inst["cpu_on_cuda_notice"](installed, torch, choose_runtime(torch, python)) is None


# -- one step under the host's protobuf pin (A1111 v1.10.1 and Forge: protobuf==3.20.0) ---------------------------


@pytest.mark.parametrize(
    ("torch", "python", "protobuf", "requirement"),
    [
        (None, PY311, "3.20.0", "onnxruntime>=1.17,<1.27"),  # 1.27+ require protobuf>=4.25.8
        (CPU_TORCH, PY311, "3.20.0", "onnxruntime>=1.17,<1.27"),
        (CPU_TORCH, PY310, "4.25.7", "onnxruntime>=1.17,<1.27"),
        (CPU_TORCH, PY311, "4.25.8", "onnxruntime>=1.17"),
        (CPU_TORCH, PY311, "6.33.0", "onnxruntime>=1.17"),
        (CPU_TORCH, PY311, None, "onnxruntime>=1.17"),  # pip brings a new enough protobuf
        (CU128_TORCH, PY311, "3.20.0", "onnxruntime-gpu>=1.19,<1.27"),  # the CUDA 12 builds take any protobuf
        (CU130_TORCH, PY311, "3.20.0", "onnxruntime>=1.17,<1.27"),  # the CUDA 13 builds cannot: CPU, said
        (CU130_TORCH, PY311, "5.29.3", "onnxruntime-gpu>=1.27"),
    ],
)
def test_runtime_range_fits_the_installed_protobuf(
    torch: Any, python: tuple[int, int], protobuf: str | None, requirement: str
) -> None:
    assert choose_runtime(torch, python, protobuf).requirement == requirement


def test_webui_install_is_one_pip_call_that_cannot_touch_the_pinned_protobuf() -> None:
    installed = {**BASE, "protobuf": "3.20.0"}
    actions = decide(DEPS, installed, CPU_TORCH, PY311)
    assert kinds(actions) == [("install", ("onnxruntime>=1.17,<1.27",))]
    assert "protobuf==3.20.0" in inst["constraints_for"](installed, {"onnxruntime", "onnxruntime-gpu"}).splitlines()


def test_cuda13_under_the_protobuf_pin_says_why_and_what_would_work() -> None:
    choice = choose_runtime(CU130_TORCH, PY311, "3.20.0")
    notice = inst["cpu_on_cuda_notice"]({"protobuf": "3.20.0"}, CU130_TORCH, choice)
    assert "require protobuf >= 4.25.8, and protobuf 3.20.0 is installed" in notice and "cu128" in notice


def test_protobuf_fact_agrees_with_the_installed_onnxruntimes_own_metadata() -> None:
    """The ceiling is read from PyPI's metadata; the onnxruntime installed here must tell the same story."""
    from importlib import metadata

    version = inst["version_tuple"](metadata.version("onnxruntime"))
    wanted = [r.replace(" ", "") for r in metadata.requires("onnxruntime") or [] if r.startswith("protobuf")]
    assert wanted == (["protobuf>=4.25.8"] if version[:2] >= inst["PROTOBUF4_FIRST"] else ["protobuf"])


def test_cudnn_version_numbers_are_read_in_both_encodings() -> None:
    assert TorchInfo("2.1.2", True, "12.1", 8902).cudnn_major == 8
    assert TorchInfo("2.4.1", True, "12.4", 90100).cudnn_major == 9


# -- decisions -------------------------------------------------------------------------------------------------


def test_nothing_to_do_when_all_is_in_place() -> None:
    assert decide(DEPS, {**BASE, "onnxruntime": "1.20.1"}, CPU_TORCH, PY310) == []
    assert decide(DEPS, {**BASE, "onnxruntime-gpu": "1.18.0"}, A1111_TORCH, PY310, "12.2") == []
    assert decide(DEPS, {**BASE, "onnxruntime-gpu": "1.20.1"}, NEW_TORCH, PY310, "12.2") == []
    assert decide(DEPS, {**BASE, "onnxruntime-gpu": "1.17.3"}, CU118_TORCH, PY310, "11.8") == []


def test_installed_packages_are_never_changed_even_outside_our_range() -> None:
    installed = {"huggingface-hub": "0.10.0", "pillow": "8.0.0", "numpy": "1.20.0", "onnxruntime": "1.20.1"}
    assert decide(DEPS, installed, CPU_TORCH, PY310) == []


def test_missing_dependencies_are_installed() -> None:
    actions = decide(DEPS, {"pillow": "9.5.0", "numpy": "1.26.2"}, CPU_TORCH, PY310)
    assert kinds(actions) == [("install", ("huggingface_hub>=0.20",)), ("install", ("onnxruntime>=1.17",))]


def test_gpu_runtime_for_a1111_comes_from_the_cuda12_feed_without_dependencies_then_its_dependencies() -> None:
    actions = decide(DEPS, dict(BASE), A1111_TORCH, PY310)
    assert kinds(actions) == [
        ("install", ("onnxruntime-gpu==1.18.0",)),
        ("install", ("coloredlogs", "flatbuffers", "packaging", "protobuf", "sympy")),
    ]
    assert actions[0].no_deps and "onnxruntime-cuda-12" in actions[0].index_url
    cmds = inst["pip_commands"](actions, "py", "/c.txt")
    assert cmds[0] == [
        "py", "-m", "pip", "install", "--prefer-binary", "--index-url", actions[0].index_url, "--no-deps",
        "-c", "/c.txt", "onnxruntime-gpu==1.18.0",
    ]  # fmt: skip
    assert "--index-url" not in cmds[1] and cmds[1][-5:] == [
        "coloredlogs",
        "flatbuffers",
        "packaging",
        "protobuf",
        "sympy",
    ]


def test_both_runtimes_are_replaced_by_one_and_the_reason_is_said() -> None:
    actions = decide(DEPS, {**BASE, "onnxruntime": "1.20.1", "onnxruntime-gpu": "1.20.1"}, NEW_TORCH, PY310)
    assert kinds(actions) == [
        ("uninstall", ("onnxruntime", "onnxruntime-gpu")),
        ("install", ("onnxruntime-gpu>=1.19,<1.27",)),
    ]
    assert "CPU build hides the GPU one" in actions[0].describe()
    cpu = decide(DEPS, {**BASE, "onnxruntime": "1.20.1", "onnxruntime-gpu": "1.20.1"}, CPU_TORCH, PY310)
    assert kinds(cpu) == [("uninstall", ("onnxruntime", "onnxruntime-gpu")), ("install", ("onnxruntime>=1.17",))]


def test_cpu_runtime_is_swapped_for_the_gpu_one_when_torch_sees_cuda() -> None:
    actions = decide(DEPS, {**BASE, "onnxruntime": "1.20.1"}, NEW_TORCH, PY310)
    assert kinds(actions) == [("uninstall", ("onnxruntime",)), ("install", ("onnxruntime-gpu>=1.19,<1.27",))]
    cu130 = decide(DEPS, {**BASE, "onnxruntime": "1.31.1"}, CU130_TORCH, PY311)
    assert kinds(cu130) == [("uninstall", ("onnxruntime",)), ("install", ("onnxruntime-gpu>=1.27",))]


@pytest.mark.parametrize(
    ("version", "build", "torch"),
    [
        ("1.20.1", "12.2", A1111_TORCH),  # cuDNN 9 build next to torch's cuDNN 8
        ("1.18.0", "11.8", A1111_TORCH),  # PyPI's 1.18.0 is a CUDA 11.8 build
        ("1.18.0", "11.8", NEW_TORCH),
        ("1.20.1", "12.2", CU118_TORCH),
        ("1.27.0", "13.0", CU128_TORCH),  # PyPI's 1.27 and newer are CUDA 13 builds
        ("1.27.0", None, CU128_TORCH),  # ... also when the build's CUDA version cannot be read
        ("1.26.0", "12.8", CU130_TORCH),
        ("1.26.0", None, CU130_TORCH),
    ],
)
def test_mismatched_gpu_runtime_is_replaced(version: str, build: str | None, torch: Any) -> None:
    actions = decide(DEPS, {**BASE, "onnxruntime-gpu": version}, torch, PY311, build)
    assert kinds(actions)[0] == ("uninstall", ("onnxruntime-gpu",))
    assert actions[1].packages[0] == choose_runtime(torch, PY311).requirement
    assert f"onnxruntime-gpu {version}" in actions[0].reason
    if build:
        assert f"built for CUDA {build}" in actions[0].reason


def test_fitting_gpu_builds_for_new_cuda_are_kept() -> None:
    assert decide(DEPS, {**BASE, "onnxruntime-gpu": "1.26.0"}, CU128_TORCH, PY311, "12.8") == []
    assert decide(DEPS, {**BASE, "onnxruntime-gpu": "1.31.1"}, CU130_TORCH, PY311, "13.0") == []
    assert decide(DEPS, {**BASE, "onnxruntime-gpu": "1.25.0"}, CU130_TORCH, PY311, "13.0") == []  # a feed build


def test_gpu_runtime_stays_on_a_machine_without_cuda_and_other_builds_are_respected() -> None:
    assert decide(DEPS, {**BASE, "onnxruntime-gpu": "1.20.1"}, CPU_TORCH, PY310) == []
    assert decide(DEPS, {**BASE, "onnxruntime-directml": "1.20.1"}, CPU_TORCH, PY310) == []


def test_too_old_cpu_runtime_is_upgraded() -> None:
    assert kinds(decide(DEPS, {**BASE, "onnxruntime": "1.16.3"}, CPU_TORCH, PY310)) == [
        ("install", ("onnxruntime>=1.17",))
    ]


def test_constraints_pin_everything_installed_except_what_is_replaced() -> None:
    text = inst["constraints_for"](
        {"numpy": "1.26.2", "torch": "2.1.2+cu121", "onnxruntime": "1.20.1"}, {"onnxruntime"}
    )
    assert text.splitlines() == ["numpy==1.26.2", "torch==2.1.2+cu121"]


@pytest.mark.parametrize(
    ("env", "skip"),
    [
        ({}, False),
        ({"COMMANDLINE_ARGS": "--xformers --skip-install"}, True),
        ({"COMMANDLINE_ARGS": "--skip-prepare-environment"}, True),
        ({"COMMANDLINE_ARGS": "--api"}, False),
        ({"TAGGER_SKIP_INSTALL": "1"}, True),
    ],
)
def test_skip_install_is_respected(env: dict[str, str], skip: bool) -> None:
    assert inst["skip_requested"](env) is skip


def test_torch_is_asked_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"torch": {"version": "9.9.9", "cuda_available": true, "cuda": "12.4", "cudnn": 90100}}')
    fn = inst["torch_info"]
    monkeypatch.setitem(fn.__globals__["metadata"].__dict__, "version", lambda name: "9.9.9")
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch would fail: the cache must answer
    assert fn(state) == TorchInfo("9.9.9", True, "12.4", 90100)


def test_main_is_a_quick_no_op_when_everything_is_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this test environment (CPU onnxruntime, every dependency installed) main runs no pip at all."""
    ran: list[Any] = []
    g = inst["main"].__globals__
    monkeypatch.setitem(g, "subprocess", type("S", (), {"run": staticmethod(lambda *a, **k: ran.append(a))}))
    monkeypatch.setitem(g, "torch_info", lambda path: None)
    monkeypatch.delenv("COMMANDLINE_ARGS", raising=False)
    monkeypatch.delenv("TAGGER_SKIP_INSTALL", raising=False)
    start = time.perf_counter()
    assert inst["main"]() == 0
    assert ran == [] and time.perf_counter() - start < 2.0


def test_main_says_on_every_launch_why_a_cuda_machine_runs_the_cpu_build(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """This environment has the CPU build; torch (a stand-in answer) uses a CUDA no onnxruntime-gpu is built for."""
    ran: list[Any] = []
    g = inst["main"].__globals__
    monkeypatch.setitem(g, "subprocess", type("S", (), {"run": staticmethod(lambda *a, **k: ran.append(a))}))
    monkeypatch.setitem(g, "torch_info", lambda path: TorchInfo("3.2.0+cu140", True, "14.0", 100000))
    monkeypatch.delenv("COMMANDLINE_ARGS", raising=False)
    monkeypatch.delenv("TAGGER_SKIP_INSTALL", raising=False)
    for _ in range(2):
        assert inst["main"]() == 0
        out = capsys.readouterr().out
        assert "CPU build (onnxruntime) is used although torch sees a GPU" in out and "CUDA 14.0" in out
    assert ran == []


# -- OpenVINO, only on request -----------------------------------------------------------------------------------

OPENVINO_EXTRA = ["openvino>=2024.1"]
WITH_RUNTIME = {**BASE, "onnxruntime": "1.20.1"}


def test_openvino_extra_comes_from_pyproject_and_matches_a_real_toml_reader() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    extra = inst["parse_dependencies"](text, "openvino")
    assert [inst["dist_name"](r) for r in extra] == ["openvino"]
    tomllib = pytest.importorskip("tomllib")
    assert extra == tomllib.loads(text)["project"]["optional-dependencies"]["openvino"]


@pytest.mark.parametrize(
    ("device", "wanted"),
    [("auto", False), ("cpu", False), ("cuda", False), ("cuda:1", False), ("cpu-bf16", True), ("openvino", True),
     ("intel-gpu", True), ("intel-gpu:1", True), (" CPU-BF16 ", True)],
)  # fmt: skip
def test_openvino_is_installed_only_for_its_devices(device: str, wanted: bool) -> None:
    actions = decide(DEPS, WITH_RUNTIME, CPU_TORCH, PY310, device=device, openvino=OPENVINO_EXTRA)
    if not wanted:
        assert actions == []
        return
    (action,) = actions
    assert (action.kind, action.packages) == ("install", ("openvino>=2024.1",))
    assert f"the tagger's device is {device}, which runs on OpenVINO" in action.describe()
    assert "cpu and auto work without it" in action.if_failed


def test_an_installed_openvino_is_left_as_it_is() -> None:
    installed = {**WITH_RUNTIME, "openvino": "2024.0.0"}
    assert decide(DEPS, installed, CPU_TORCH, PY310, device="cpu-bf16", openvino=OPENVINO_EXTRA) == []


def test_the_installers_openvino_devices_are_the_runtimes() -> None:
    """install.py imports nothing of the extension, so it names the devices itself: the same ones."""
    from tagger.runtime import DEVICES, Device

    for name in (d.strip().replace(":N", ":1") for d in DEVICES.split(",")):
        assert inst["runs_on_openvino"](name) is Device.parse(name).openvino, name


@pytest.mark.parametrize(
    ("args", "settings", "device"),
    [
        ([], {}, "auto"),
        ([], {"tagger_device": "cpu-bf16"}, "cpu-bf16"),
        (["--api", "--tagger-device", "openvino"], {"tagger_device": "cpu"}, "openvino"),  # the flag wins
        (["--tagger-device=intel-gpu:1"], {}, "intel-gpu:1"),
        ([], {"tagger_device": None}, "auto"),
        ([], {"tagger_device": ""}, "auto"),
    ],
)
def test_the_device_is_read_as_the_webui_reads_it(args: list[str], settings: dict, device: str) -> None:
    assert inst["wanted_device"](args, settings) == device


def test_the_settings_file_is_the_webuis(tmp_path: Path) -> None:
    ext = tmp_path / "webui" / "extensions" / "tagger"
    assert inst["settings_file"]([], ext) == tmp_path / "webui" / "config.json"
    assert inst["settings_file"](["--ui-settings-file", "/etc/webui.json"], ext) == Path("/etc/webui.json")
    assert inst["settings_file"](["--ui-settings-file=my.json"], ext) == Path("my.json")
    (tmp_path / "broken.json").write_text("{not json")
    assert inst["read_settings"](tmp_path / "broken.json") == {} == inst["read_settings"](tmp_path / "missing.json")


def _webui_with_the_extension(tmp_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """A WebUI folder as the host lays it out (config.json beside extensions/), with this install.py and
    pyproject.toml in extensions/tagger; returns the install.py loaded from there."""
    ext = tmp_path / "webui" / "extensions" / "tagger"
    ext.mkdir(parents=True)
    for name in ("install.py", "pyproject.toml"):
        shutil.copy(ROOT / name, ext / name)
    (tmp_path / "webui" / "config.json").write_text(json.dumps(settings), encoding="utf-8")
    return runpy.run_path(str(ext / "install.py"), run_name="tagger_install")


def test_main_installs_openvino_when_the_webuis_setting_asks_and_pins_everything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Stand-ins: pip (each command and its constraints file are recorded, nothing is installed), torch's answer
    (none), and this environment's package list without openvino (installed here for the tests)."""
    mod = _webui_with_the_extension(tmp_path, {"tagger_device": "cpu-bf16"})
    g = mod["main"].__globals__
    ran: list[tuple[list[str], list[str]]] = []

    def pip(cmd: list[str], check: bool) -> subprocess.CompletedProcess:
        ran.append((cmd, Path(cmd[cmd.index("-c") + 1]).read_text(encoding="utf-8").splitlines()))
        return subprocess.CompletedProcess(cmd, 0)

    without = {k: v for k, v in g["installed_distributions"]().items() if not k.startswith("openvino")}
    monkeypatch.setitem(g, "subprocess", type("S", (), {"run": staticmethod(pip)}))
    monkeypatch.setitem(g, "torch_info", lambda path: None)
    monkeypatch.setitem(g, "installed_distributions", lambda: without)
    monkeypatch.delenv("COMMANDLINE_ARGS", raising=False)
    monkeypatch.delenv("TAGGER_SKIP_INSTALL", raising=False)
    assert mod["main"]() == 0
    ((cmd, constraints),) = ran
    assert cmd[-1] == inst["parse_dependencies"]((ROOT / "pyproject.toml").read_text(), "openvino")[0]
    assert f"numpy=={metadata.version('numpy')}" in constraints  # the host's numpy cannot move
    assert not any(c.startswith("openvino") for c in constraints)
    assert "the tagger's device is cpu-bf16, which runs on OpenVINO" in capsys.readouterr().out

    monkeypatch.setenv("COMMANDLINE_ARGS", "--tagger-device cpu")  # the flag wins over the setting
    assert mod["main"]() == 0 and len(ran) == 1
