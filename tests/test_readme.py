"""README's int8 commands, run as written: the test model stands in for the catalog model (a folder named
like a catalog model is used instead of downloading it), and the folders are this test's own."""

from __future__ import annotations

import io
import re
import shlex
import shutil
from pathlib import Path

from PIL import Image

from tagger import cli

ROOT = Path(__file__).resolve().parent.parent


def bash_block_after(heading: str) -> list[list[str]]:
    """The commands of the first ```bash block after ``heading`` in README.md, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text[text.index(heading) :], re.S)
    assert block, f"no bash block after {heading!r}"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def test_the_int8_section_runs_as_written(model_root: Path, tmp_path: Path) -> None:
    install, *commands = bash_block_after("### The int8 fast path")
    assert install[:3] == ["pip", "install", "-e"]
    extras = re.fullmatch(r"\.\[(.*)\]", install[3]).group(1).split(",")  # type: ignore[union-attr]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = {e: re.search(rf"^{e} = \[(.*)\]", pyproject, re.M) for e in extras}
    assert all(declared.values()), f"extras not in pyproject.toml: {declared}"
    assert any('"onnx' in m.group(1) for m in declared.values() if m), "quantize needs onnx; the line must install it"

    models = tmp_path / "models"
    shutil.copytree(model_root / "test-model", models / "wd-vit-tagger-v3")
    my_images, dataset = tmp_path / "my_images", tmp_path / "dataset"
    for folder in (my_images, dataset):
        folder.mkdir()
        for name, rgb in {"red": (255, 0, 0), "green": (0, 255, 0)}.items():
            Image.new("RGB", (40, 40), rgb).save(folder / f"{name}.png")
    (dataset / "red.txt").write_text("caption from an earlier run", encoding="utf-8")
    paths = {"my_images/": str(my_images), "dataset/": str(dataset)}
    for argv in commands:
        assert argv[:3] == ["python", "-m", "tagger"], argv
        args = [paths.get(a, a) for a in argv[3:]] + ["--models-dir", str(models)]
        out = io.StringIO()
        assert cli.main(args, out=out) == 0, (argv, out.getvalue())
    assert (models / "wd-vit-tagger-v3-int8" / "model.onnx").is_file()
    # The last command captioned the dataset with the int8 model, the image captioned before included.
    assert (dataset / "red.txt").read_text(encoding="utf-8").startswith("red theme, solo")
    assert (dataset / "green.txt").read_text(encoding="utf-8").startswith("hatsune miku")
