"""With the default device ``auto``, a GPU that fails is said, never silently replaced by the CPU.

The failure is the field's most common one: onnxruntime-gpu offers its CUDA provider, and the session starts
on the CPU because CUDA or cuDNN cannot be loaded. No GPU exists here, so ``cuda_offered`` stands in for the
GPU build's list of providers; the session itself is real (this machine's CPU build of onnxruntime leaves
CUDA out of it), so what ``create_session`` reads back is what a user with a broken CUDA setup gets.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime
import pytest

import tagger.runtime
from tagger.cli import main
from tagger.engine import Tagger
from tagger.runtime import CPU, CUDA


@pytest.fixture
def cuda_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake: onnxruntime lists CUDAExecutionProvider as available, as onnxruntime-gpu does on any machine."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    tagger.runtime._preload_cuda_libraries.cache_clear()
    yield
    tagger.runtime._preload_cuda_libraries.cache_clear()


@pytest.fixture
def cudnn_missing(monkeypatch: pytest.MonkeyPatch, cuda_offered: None) -> None:
    """Fake: onnxruntime-gpu's ``preload_dlls`` (1.21+) printing what it prints when cuDNN is not there (its
    own words, from onnxruntime 1.32's source), colour codes included."""

    def preload_dlls() -> None:
        print("Failed to load libcudnn.so.9: libcudnn.so.9: cannot open shared object file: No such file")
        print("\033[33mPlease follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.\033[0m")

    monkeypatch.setattr(onnxruntime, "preload_dlls", preload_dlls)


def test_auto_says_why_an_offered_cuda_did_not_start(model_root: Path, cuda_offered: None) -> None:
    loaded = Tagger(model_root, "auto", download=False).load("test-model")
    assert loaded.provider == CPU
    assert loaded.device_note.startswith("CUDA is not used:") and "cuDNN" in loaded.device_note


def test_auto_says_so_when_onnxruntime_gpu_is_installed_but_hidden(model_root: Path, monkeypatch) -> None:
    """Both builds installed: the CPU one hides the GPU one, so CUDA is not even offered (fake: the list of
    installed distributions; this machine has only the CPU build)."""
    monkeypatch.setattr(tagger.runtime, "installed_runtimes", lambda: ["onnxruntime 1.20.1", "onnxruntime-gpu 1.20.1"])
    loaded = Tagger(model_root, "auto", download=False).load("test-model")
    assert "both onnxruntime-gpu and onnxruntime are installed" in loaded.device_note


def test_device_cpu_is_a_choice_not_a_failure(model_root: Path, cuda_offered: None) -> None:
    assert Tagger(model_root, "cpu", download=False).load("test-model").device_note == ""


def test_what_loading_the_cuda_libraries_said_is_in_the_note(model_root: Path, cudnn_missing: None) -> None:
    note = Tagger(model_root, "auto", download=False).load("test-model").device_note
    assert "Loading the CUDA libraries said: Failed to load libcudnn.so.9" in note
    assert "\033" not in note


def test_cli_prints_the_note_in_auto_and_keeps_stdout_for_results(
    model_root: Path, solid_image, cudnn_missing: None, capsys
) -> None:
    image = solid_image((255, 0, 0), "red.png")
    assert main(["tag", str(image), "--models-dir", str(model_root), "--model", "test-model", "--no-cache"]) == 0
    out, err = capsys.readouterr()
    assert "model test-model on CPU" in err and "CUDA is not used:" in err and "libcudnn.so.9" in err
    assert len(out.splitlines()) == 1 and out.startswith(f"{image}: red theme, solo")  # the result alone
