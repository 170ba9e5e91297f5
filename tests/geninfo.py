"""Images carrying generation data, written the way each tool writes them (for tests).

- A1111/Forge PNG: ``PngInfo.add_text("parameters", infotext)`` (modules/images.py ``save_image_with_geninfo``);
- A1111/Forge JPEG/WebP: ``piexif.dump({"Exif": {UserComment: UserComment.dump(text, encoding="unicode")}})``
  inserted into the file. piexif is not a dependency here, so ``piexif_exif`` lays out the same bytes: a
  big-endian TIFF header, IFD0 holding only the Exif IFD pointer, the Exif IFD holding only UserComment
  (type UNDEFINED), whose value is ``UNICODE\\0`` and the text in UTF-16-BE. piexif puts ``Exif\\0\\0`` before
  them in a JPEG's APP1 segment and leaves it out of a WebP's EXIF chunk, as Pillow's ``save(exif=...)`` does;
- NovelAI PNG: ``Title``, ``Description`` (the prompt), ``Software: NovelAI``, ``Source`` and the ``Comment``
  JSON (``uc`` the negative prompt);
- ComfyUI PNG: ``prompt`` (the API graph that ran) and ``workflow`` (the editor's graph) as JSON text chunks,
  as its SaveImage node writes them; the graphs are ComfyUI's default text-to-image workflow.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

INFOTEXT = (
    "masterpiece, (solo:1.2), long_hair, hakurei reimu, smile, <lora:myStyle:0.8>, sks_style, 東方\n"
    "Negative prompt: (worst quality:1.4), bad hands\n"
    'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 64x48, Lora hashes: "myStyle: 0123abcd"'
)


def user_comment_unicode(text: str) -> bytes:
    """piexif.helper.UserComment.dump(text, encoding="unicode")."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def piexif_exif(comment: bytes, *, big_endian: bool = True) -> bytes:
    """The TIFF bytes piexif.dump makes of ``{"Exif": {UserComment: comment}}`` (without ``Exif\\0\\0``)."""
    e = ">" if big_endian else "<"
    ifd0 = struct.pack(e + "H", 1) + struct.pack(e + "HHII", 0x8769, 4, 1, 26) + struct.pack(e + "I", 0)
    exif_ifd = struct.pack(e + "H", 1) + struct.pack(e + "HHII", 0x9286, 7, len(comment), 40)
    return (b"MM\0\x2a" if big_endian else b"II\x2a\0") + struct.pack(e + "I", 8) + ifd0 + exif_ifd + comment


def plain(path: Path, rgb: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def a1111_png(path: Path, infotext: str = INFOTEXT, rgb: tuple[int, int, int] = (255, 0, 0)) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    Image.new("RGB", (64, 48), rgb).save(path, pnginfo=info)
    return path


def a1111_exif(path: Path, infotext: str = INFOTEXT, comment: bytes | None = None, **kw: Any) -> Path:
    """A JPEG or WebP (by ``path``'s suffix) with the infotext in the EXIF UserComment, as A1111 writes it."""
    tiff = piexif_exif(comment if comment is not None else user_comment_unicode(infotext), **kw)
    image = Image.new("RGB", (64, 48), (255, 0, 0))
    if path.suffix.lower() == ".webp":
        image.save(path, "WEBP", exif=tiff)
    else:
        image.save(path, "JPEG", exif=b"Exif\0\0" + tiff)
    return path


def novelai_png(path: Path, prompt: str, negative: str) -> Path:
    comment = {
        "prompt": prompt,
        "steps": 28,
        "height": 48,
        "width": 64,
        "scale": 5.0,
        "uncond_scale": 0.0,
        "cfg_rescale": 0.0,
        "seed": 3141592,
        "n_samples": 1,
        "noise_schedule": "karras",
        "sampler": "k_euler_ancestral",
        "uc": negative,
        "request_type": "PromptGenerateRequest",
    }
    info = PngImagePlugin.PngInfo()
    for key, value in (
        ("Title", "NovelAI generated image"),
        ("Description", prompt),
        ("Software", "NovelAI"),
        ("Source", "NovelAI Diffusion V4.5 4BDE2A90"),
        ("Generation time", "2.6"),
        ("Comment", json.dumps(comment)),
    ):
        info.add_text(key, value)
    Image.new("RGB", (64, 48), (255, 0, 0)).save(path, pnginfo=info)
    return path


def comfy_prompt(positive: str, negative: str) -> dict[str, Any]:
    """ComfyUI's default text-to-image graph in its API format (what ran)."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 156680208700286,
                "steps": 20,
                "cfg": 8,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def comfy_workflow(positive: str, negative: str) -> dict[str, Any]:
    """The same graph in the editor's format: positional widget values, links as lists."""

    def node(nid: int, kind: str, inputs: list[tuple[str, int]], widgets: list[Any]) -> dict[str, Any]:
        return {
            "id": nid,
            "type": kind,
            "mode": 0,
            "inputs": [{"name": n, "type": "X", "link": link} for n, link in inputs],
            "widgets_values": widgets,
        }

    return {
        "last_node_id": 9,
        "last_link_id": 9,
        "nodes": [
            node(
                3,
                "KSampler",
                [("model", 1), ("positive", 4), ("negative", 6), ("latent_image", 2)],
                [156680208700286, "randomize", 20, 8, "euler", "normal", 1],
            ),
            node(4, "CheckpointLoaderSimple", [], ["v1-5-pruned-emaonly.safetensors"]),
            node(5, "EmptyLatentImage", [], [512, 512, 1]),
            node(6, "CLIPTextEncode", [("clip", 3)], [positive]),
            node(7, "CLIPTextEncode", [("clip", 5)], [negative]),
            node(8, "VAEDecode", [("samples", 7), ("vae", 8)], []),
            node(9, "SaveImage", [("images", 9)], ["ComfyUI"]),
        ],
        "links": [
            [1, 4, 0, 3, 0, "MODEL"],
            [2, 5, 0, 3, 3, "LATENT"],
            [3, 4, 1, 6, 0, "CLIP"],
            [4, 6, 0, 3, 1, "CONDITIONING"],
            [5, 4, 1, 7, 0, "CLIP"],
            [6, 7, 0, 3, 2, "CONDITIONING"],
            [7, 3, 0, 8, 0, "LATENT"],
            [8, 4, 2, 8, 1, "VAE"],
            [9, 8, 0, 9, 0, "IMAGE"],
        ],
    }


def comfy_png(path: Path, prompt: dict[str, Any] | None, workflow: dict[str, Any] | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if workflow is not None:
        info.add_text("workflow", json.dumps(workflow))
    Image.new("RGB", (64, 48), (255, 0, 0)).save(path, pnginfo=info)
    return path
