"""Generation data that an image already carries: the prompt, negative prompt and settings another WebUI wrote.

Read with Pillow alone, from every common carrier:

- AUTOMATIC1111 / Forge PNG: a ``parameters`` text chunk holding the "infotext" (prompt, a ``Negative
  prompt:`` line, then one line of ``name: value`` settings);
- AUTOMATIC1111 / Forge JPEG and WebP: the same text in the EXIF ``UserComment`` (Exif IFD 0x8769, tag
  0x9286), written by piexif as an 8-byte ``UNICODE\\0`` code then UTF-16 (big-endian, in piexif's big-endian
  EXIF), or ``ASCII\\0\\0\\0`` then ASCII; without a known code the WebUI reads the bytes as UTF-8;
- NovelAI PNG: ``Software: NovelAI``, the prompt in ``Description`` and a ``Comment`` JSON (``uc`` is the
  negative prompt; ``steps``, ``sampler``, ``scale``, ``seed``), read as the WebUI's PNG Info reads it;
- ComfyUI PNG: the ``prompt`` JSON (the graph that ran) or else the ``workflow`` JSON (the editor's graph).
  The positive prompt is the text that reaches the sampler's ``positive`` input, followed link by link
  through nodes with one conditioning input; where that path forks or ends in something that is not text,
  the prompt is left empty and ``note`` says where and why, instead of guessing.

Only the chunks before the image data are read (where every one of these writers puts them), so reading
costs no decoding.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
_CODES = {b"UNICODE\0": "utf-16", b"ASCII\0\0\0": "ascii", b"JIS\0\0\0\0\0": "shift_jis"}
NEGATIVE = "Negative prompt:"
# A settings pair of the infotext's last line: a name (letters, digits, spaces, - and /), a colon, then a
# "quoted" value or anything up to the next comma. The WebUI takes that line as settings when it holds 3 or more.
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

SOURCES = {
    "a1111": "A1111 / Forge (PNG text 'parameters')",
    "a1111-exif": "A1111 / Forge (EXIF UserComment)",
    "novelai": "NovelAI (PNG Description and Comment)",
    "comfyui": "ComfyUI (the prompt graph)",
    "comfyui-workflow": "ComfyUI (the workflow)",
}
# The samplers of NovelAI and ComfyUI under their WebUI names (the WebUI's own aliases, k_euler_a style), so
# that settings sent to txt2img name a sampler it has. Names not here are kept as written.
SAMPLER_NAMES = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "euler_a": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "ddim": "DDIM",
    "ddim_v3": "DDIM",
    "uni_pc": "UniPC",
    "lcm": "LCM",
}
_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
_TEXT_INPUTS = ("text", "text_g", "text_l", "t5xxl", "clip_l", "prompt", "string", "value")
_MAX_HOPS = 64


@dataclass(frozen=True)
class GenerationData:
    """What the image says about how it was made. ``prompt`` is empty when it could not be found (``note``
    says why); ``settings_line`` is the infotext's settings line (``Steps: 20, Sampler: ...``)."""

    source: str  # a key of SOURCES
    prompt: str
    negative_prompt: str = ""
    settings_line: str = ""
    note: str = ""

    @property
    def source_label(self) -> str:
        return SOURCES.get(self.source, self.source)

    @property
    def settings(self) -> dict[str, str]:
        return parse_settings(self.settings_line)

    def infotext(self, prompt: str | None = None) -> str:
        """The WebUI's infotext of this data (``prompt`` in place of its own): what its PNG Info sends."""
        lines = [self.prompt if prompt is None else prompt]
        settings = self.settings_line if len(_PAIR.findall(self.settings_line)) >= 3 else ""
        if self.negative_prompt or settings:
            lines.append(f"{NEGATIVE} {self.negative_prompt}".rstrip())
        if settings:
            lines.append(settings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "settings": self.settings,
            "note": self.note or None,
        }


# -- the WebUI's infotext ---------------------------------------------------------------------------------


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            return value
    return value


def parse_settings(line: str) -> dict[str, str]:
    """``Steps: 20, Sampler: Euler a, Lora hashes: "a: 1, b: 2"`` -> ordered name -> value (unquoted)."""
    return {k.strip(): _unquote(v.strip()) for k, v in _PAIR.findall(line)}


def quote(value: object) -> str:
    """A settings value as the WebUI writes it: in JSON quotes when it holds a comma, colon or new line."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


def settings_line(pairs: Mapping[str, object]) -> str:
    return ", ".join(f"{k}: {quote(v)}" for k, v in pairs.items() if v is not None and str(v) != "")


def parse_infotext(text: str) -> tuple[str, str, str]:
    """``(prompt, negative prompt, settings line)`` of an infotext, by the WebUI's rule: the last line is the
    settings when it holds three or more ``name: value`` pairs; ``Negative prompt:`` starts the negative."""
    lines = text.strip().replace("\r\n", "\n").split("\n")
    settings = ""
    if len(lines) > 0 and len(_PAIR.findall(lines[-1])) >= 3:
        settings = lines.pop().strip()
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt), "\n".join(negative), settings


def is_infotext(text: str) -> bool:
    """True when ``text`` ends in a settings line (three or more ``name: value`` pairs) that is meant as one:
    it follows a ``Negative prompt:`` line or starts with ``Steps:``, as every WebUI infotext's does. Weighted
    tags alone, ``(solo:0.9), (long hair:0.5), (smile:0.36)``, look like settings and are not."""
    lines = (text or "").rstrip("\n").split("\n")
    last = lines[-1]
    if len(_PAIR.findall(last)) < 3:
        return False
    return last.startswith("Steps:") or any(line.startswith(NEGATIVE) for line in lines[:-1])


# -- EXIF UserComment -------------------------------------------------------------------------------------


def user_comment(raw: bytes, big_endian: bool = True) -> str:
    """The text of an EXIF UserComment: its 8-byte character code, then the text in that code.

    UNICODE is UTF-16 in the byte order of the EXIF block (piexif, as the WebUI uses it, writes big-endian
    EXIF); a comment that reads as text only the other way round is read that way. No known code: UTF-8."""
    code, body = raw[:8], raw[8:]
    encoding = _CODES.get(code)
    if encoding == "utf-16":
        first, second = ("utf-16-be", "utf-16-le") if big_endian else ("utf-16-le", "utf-16-be")
        texts = [body.decode(first, errors="replace"), body.decode(second, errors="replace")]
        # Text in the wrong byte order turns ASCII into CJK-range code points: keep the reading with more ASCII.
        text = max(texts, key=lambda t: sum(c < "\x80" for c in t))
    elif encoding is not None:
        text = body.decode(encoding, errors="replace")
    else:
        text = (body if code == b"\0" * 8 else raw).decode("utf-8", errors="ignore")
    return text.rstrip("\0")


def _exif_comment(image: Image.Image) -> str | None:
    try:
        exif = image.getexif()
        comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except (SyntaxError, ValueError, OSError, TypeError, KeyError, struct.error):  # malformed EXIF
        return None
    if isinstance(comment, str):  # stored with the ASCII type: Pillow decoded it as latin-1, losslessly
        comment = comment.encode("latin-1", errors="replace")
    if not isinstance(comment, bytes) or not comment:
        return None
    return user_comment(comment, getattr(exif, "endian", ">") == ">") or None


# -- NovelAI ------------------------------------------------------------------------------------------------


def _novelai(info: Mapping[str, Any], size: tuple[int, int]) -> GenerationData | None:
    if info.get("Software") != "NovelAI":
        return None
    try:
        comment = json.loads(info.get("Comment") or "{}")
    except ValueError:
        comment = None
    if not isinstance(comment, dict):
        return GenerationData(
            "novelai", str(info.get("Description") or ""), note="NovelAI's Comment is not a JSON object: no settings."
        )
    prompt = str(info.get("Description") or comment.get("prompt") or "")
    sampler = comment.get("sampler")
    pairs = {
        "Steps": comment.get("steps"),
        "Sampler": SAMPLER_NAMES.get(str(sampler).removeprefix("k_"), sampler) if sampler else None,
        "CFG scale": comment.get("scale"),
        "Seed": comment.get("seed"),
        "Size": f"{size[0]}x{size[1]}",
    }
    return GenerationData("novelai", prompt, str(comment.get("uc") or ""), settings_line(pairs))


# -- ComfyUI ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    id: str
    type: str
    links: dict[str, str]  # input name -> the node it comes from
    values: dict[str, Any]  # input name -> its value as set in the node


class _Unfound(Exception):
    """The prompt cannot be found without guessing; the message says where."""


def _graph_from_prompt(data: Mapping[str, Any]) -> dict[str, _Node]:
    """The API-format graph (``{id: {"class_type", "inputs": {name: value or [from_id, slot]}}}``)."""
    nodes = {}
    for nid, node in data.items():
        if not isinstance(node, dict):
            continue
        links, values = {}, {}
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                links[name] = str(value[0])
            else:
                values[name] = value
        nodes[str(nid)] = _Node(str(nid), str(node.get("class_type", "")), links, values)
    return nodes


# Positional widget values of the workflow format for the nodes whose prompt and settings are read there.
_WIDGETS = {
    "CLIPTextEncode": ("text",),
    "KSampler": ("seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (None, "noise_seed", None, "steps", "cfg", "sampler_name", "scheduler"),
}


def _graph_from_workflow(data: Mapping[str, Any]) -> dict[str, _Node]:
    """The editor's format (``nodes`` with positional ``widgets_values``, ``links`` as lists or objects)."""
    origin: dict[str, str] = {}
    for link in data.get("links") or []:
        if isinstance(link, list) and len(link) >= 2:
            origin[str(link[0])] = str(link[1])
        elif isinstance(link, dict) and "id" in link:
            origin[str(link["id"])] = str(link.get("origin_id"))
    nodes = {}
    for node in data.get("nodes") or []:
        if not isinstance(node, dict) or node.get("mode") in (2, 4):  # muted or bypassed: did not run
            continue
        nid, kind = str(node.get("id")), str(node.get("type", ""))
        links = {
            str(i.get("name")): origin[str(i.get("link"))]
            for i in node.get("inputs") or []
            if isinstance(i, dict) and i.get("link") is not None and str(i.get("link")) in origin
        }
        widgets = node.get("widgets_values")
        values: dict[str, Any] = {}
        if isinstance(widgets, list):
            names = _WIDGETS.get(kind)
            if names:
                values = {n: v for n, v in zip(names, widgets, strict=False) if n}
            else:  # a primitive or string node: its one text value
                texts = [w for w in widgets if isinstance(w, str)]
                if len(texts) == 1:
                    values = {"value": texts[0]}
        nodes[nid] = _Node(nid, kind, links, values)
    return nodes


def _describe(node: _Node) -> str:
    return f"node {node.id} ({node.type})"


def _text_of(nodes: Mapping[str, _Node], node: _Node) -> str:
    """The text a node gives (a text encoder's prompt, a string node's value), following links to it. A text
    input that is linked reads from the link (the editor keeps a stale value beside a converted widget)."""
    for _ in range(_MAX_HOPS):
        names = [n for n in _TEXT_INPUTS if n in node.links or isinstance(node.values.get(n), str)]
        if not names:
            raise _Unfound(f"{_describe(node)} holds no text")
        name = next((n for n in names if n in node.links or node.values[n].strip()), names[0])
        if name not in node.links:
            return str(node.values[name])
        if node.links[name] not in nodes:
            raise _Unfound(f"the text of {_describe(node)} comes from a node that is not in the graph")
        node = nodes[node.links[name]]
    raise _Unfound("the text is passed along too many nodes")


def _conditioning_text(nodes: Mapping[str, _Node], start: str | None, side: str) -> str:
    """Follow the ``side`` ("positive"/"negative") conditioning from node ``start`` back to its text."""
    for _ in range(_MAX_HOPS):
        node = nodes.get(start or "")
        if node is None:
            raise _Unfound(f"the sampler's {side} input leads to no node")
        if node.type.startswith("CLIPTextEncode") or "text" in node.values or "text" in node.links:
            return _text_of(nodes, node)
        if side in node.links:  # ControlNetApplyAdvanced and the like pass positive and negative through
            start = node.links[side]
            continue
        ins = [name for name in node.links if name.startswith("conditioning")]
        if len(ins) != 1:
            what = "several conditioning inputs" if ins else "no conditioning input that leads to text"
            raise _Unfound(f"{_describe(node)} on the {side} path has {what}")
        start = node.links[ins[0]]
    raise _Unfound(f"the {side} path is too long")


def _sampler_side(nodes: Mapping[str, _Node], sampler: _Node, side: str) -> str | None:
    """The node feeding ``side`` of a sampler (through its guider for SamplerCustomAdvanced)."""
    if side in sampler.links:
        return sampler.links[side]
    guider = nodes.get(sampler.links.get("guider", ""))
    if guider is not None:
        if side in guider.links:
            return guider.links[side]
        if side == "positive" and "conditioning" in guider.links:  # BasicGuider: one conditioning
            return guider.links["conditioning"]
    return None


def _comfy_settings(sampler: _Node, size: tuple[int, int]) -> str:
    v = sampler.values
    name = v.get("sampler_name")
    scheduler = v.get("scheduler")
    denoise = v.get("denoise")
    return settings_line(
        {
            "Steps": v.get("steps"),
            "Sampler": SAMPLER_NAMES.get(str(name), name) if name is not None else None,
            "Schedule type": str(scheduler).replace("_", " ").title() if scheduler else None,
            "CFG scale": v.get("cfg"),
            "Seed": v.get("seed", v.get("noise_seed")),
            "Size": f"{size[0]}x{size[1]}",
            "Denoising strength": denoise if denoise not in (None, 1, 1.0) else None,
        }
    )


def _comfyui(info: Mapping[str, Any], size: tuple[int, int]) -> GenerationData | None:
    graphs = []
    for key, source, build in (
        ("prompt", "comfyui", _graph_from_prompt),
        ("workflow", "comfyui-workflow", _graph_from_workflow),
    ):
        raw = info.get(key)
        if not isinstance(raw, str):
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict):
            graphs.append((source, build(data)))
    if not graphs:
        return None
    source, nodes = graphs[0]
    samplers = [n for n in nodes.values() if n.type in _SAMPLERS or ("positive" in n.links and "Sampler" in n.type)]
    if not samplers:
        return GenerationData(source, "", note="ComfyUI: no sampler node in the graph, so no prompt to read.")
    found: dict[str, tuple[str, _Node]] = {}
    problems = []
    for sampler in sorted(samplers, key=lambda n: (len(n.id), n.id)):  # numeric ids in their order
        try:
            text = _conditioning_text(nodes, _sampler_side(nodes, sampler, "positive"), "positive")
        except _Unfound as e:
            problems.append(f"{_describe(sampler)}: {e}")
            continue
        found.setdefault(text, (text, sampler))
    if len(found) != 1:
        why = (
            f"{len(found)} samplers have different positive prompts, and nothing says which made this image"
            if found
            else "; ".join(problems)
        )
        return GenerationData(source, "", note=f"ComfyUI: the prompt cannot be found without guessing: {why}.")
    text, sampler = next(iter(found.values()))
    try:
        negative = _conditioning_text(nodes, _sampler_side(nodes, sampler, "negative"), "negative")
    except _Unfound:
        negative = ""
    return GenerationData(source, text, negative, _comfy_settings(sampler, size))


# -- any image ----------------------------------------------------------------------------------------------


def from_image(image: Image.Image) -> GenerationData | None:
    """The generation data of an opened (or decoded) image; None when it carries none."""
    info = image.info or {}
    text = info.get("parameters")
    if isinstance(text, str) and text.strip():
        return GenerationData("a1111", *parse_infotext(text))
    if "exif" in info:
        comment = _exif_comment(image)
        if comment and comment.strip():
            return GenerationData("a1111-exif", *parse_infotext(comment))
    return _novelai(info, image.size) or _comfyui(info, image.size)


def read_generation_data(source: Any) -> GenerationData | None:
    """The generation data of an image given as a path, bytes or PIL image; None when there is none or the
    file cannot be opened (tagging reports unreadable images itself). Decodes no pixels."""
    if isinstance(source, Image.Image):
        return from_image(source)
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            stream: Any = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            stream = Path(os.fspath(source))
        else:
            return None
        with Image.open(stream) as image:
            return from_image(image)
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, Image.DecompressionBombError):
        return None
