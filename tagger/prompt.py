"""The WebUI's prompt syntax, parsed into the items a tagger can compare, and written back.

What each piece means follows the WebUI (AUTOMATIC1111 ``modules/prompt_parser.py`` and
``modules/extra_networks.py``, read at v1.10.1): ``(a)`` multiplies attention by 1.1, ``[a]`` divides by
1.1, ``(a:1.2)`` sets 1.2 (nested brackets multiply); ``\\(`` is a literal bracket; ``[a:b:0.5]`` switches
from a to b at half the steps, ``[a:0.5]`` adds a then, ``[a::0.5]`` removes it then, ``[a|b]`` alternates
every step; ``<lora:name:0.8>`` (any ``<kind:...>``) is an extra network, not text; ``BREAK`` starts a new
75-token chunk; ``AND`` separates composable sub-prompts, each of which may end in ``:weight``. NovelAI's
``{a}`` (1.05 each) is read as emphasis too, and ComfyUI's ``embedding:name`` as an embedding. Items are
separated by commas and new lines; a bracket group ends an item too.

``parse`` never fails: what is not syntax is text (an unmatched closing bracket, a colon in ``re:zero``),
and an unclosed group runs to the end, as the WebUI reads it. ``Prompt.render`` writes the prompt back,
untouched parts exactly as they were, leaving out the items a caller drops.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tagger.postprocess import normalize_tag

TAG, NETWORK, EMBEDDING, BREAK, AND = "tag", "network", "embedding", "break", "and"

_AND = re.compile(r"\bAND\b")
_SUBPROMPT_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*$")
_GROUP_WEIGHT = re.compile(r":\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*$")
_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)\s*")
_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_BREAK = re.compile(r"\bBREAK\b")
_EMBEDDING = re.compile(r"^embedding:\s*(\S.*)$", re.IGNORECASE)
_UNESCAPE = re.compile(r"\\(.)")
_SEPARATORS = ",\n"
_PIECES = re.compile(r"[,\n]|(?:\\.|\\$|[^,\n\\])+", re.S)  # separators, and the text between (escapes kept)
_OPEN = {"(": ")", "[": "]", "{": "}"}
ROUND, SQUARE, CURLY = 1.1, 1 / 1.1, 1.05  # attention factors: WebUI ( ) and [ ], NovelAI { }


@dataclass(frozen=True)
class Token:
    """One item of a prompt."""

    text: str  # as written (escapes kept), without the brackets and weight around it
    kind: str  # TAG, NETWORK, EMBEDDING, BREAK or AND
    weight: float = 1.0  # its attention, brackets multiplied out
    fixed: bool = False  # part of a [a:b:when] schedule or an [a|b] alternation

    @property
    def key(self) -> str:
        """What it is compared by: a tag's ``normalize_tag``; ``lora:name`` for an extra network."""
        if self.kind == NETWORK:
            m = _NETWORK.fullmatch(self.text)
            kind, args = (m.group(1), m.group(2)) if m else ("", self.text)
            return f"{kind.lower()}:{args.split(':', 1)[0].strip().lower()}"
        if self.kind == EMBEDDING:
            m = _EMBEDDING.match(self.text)
            return "embedding:" + normalize_tag(m.group(1) if m else self.text)
        return normalize_tag(self.text)

    @property
    def plain(self) -> str:
        """The text without backslash escapes, its spaces collapsed: what a reader sees."""
        return " ".join(_UNESCAPE.sub(r"\1", self.text).split())


# -- the tree ---------------------------------------------------------------------------------------------
# Every node keeps ``pre``: the separators (commas, new lines, spaces) written before it, so that a prompt
# renders back exactly as it was written where nothing is dropped.


@dataclass
class _Item:
    pre: str
    token: int  # index into Prompt.tokens


@dataclass
class _Group:
    pre: str
    open: str
    children: list[_Node]
    tail: str  # what stands between the last child and the closing bracket (spaces, the ":1.2" weight)
    close: str  # "" when the group is never closed


@dataclass
class _Choice:
    pre: str
    kind: str  # ":" (schedule) or "|" (alternation)
    parts: list[list[_Node]]
    tails: list[str]
    when: str  # the schedule's step or fraction as written ("" for an alternation)
    close: str


_Node = _Item | _Group | _Choice


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: tuple[Token, ...]
    _subprompts: tuple[tuple[str, list[_Node], str], ...] = field(repr=False, compare=False)  # (pre, nodes, tail)

    def tags(self) -> list[Token]:
        """The tag items (and embeddings, extra networks), in prompt order, without BREAK and AND."""
        return [t for t in self.tokens if t.kind in (TAG, NETWORK, EMBEDDING)]

    def render(self, drop: Callable[[Token], bool] | None = None) -> str:
        """The prompt written back without the items ``drop`` picks; with none dropped, exactly ``text``.

        Emptied brackets go with their last item; a schedule or alternation keeps its other parts.
        """
        if drop is None:
            return self.text
        keep = [not drop(t) if t.kind in (TAG, NETWORK, EMBEDDING) else True for t in self.tokens]
        out: list[str] = []
        for n, (pre, nodes, tail) in enumerate(self._subprompts):
            body = _render_seq(nodes, self.tokens, keep)
            if body is None and nodes:  # all of this sub-prompt went: its AND goes with it
                continue
            body = body or ""
            out.append((pre + body if out else body.lstrip() if n else body) + tail)
        return "".join(out)


def _strong(sep: str) -> bool:
    return any(c in sep for c in _SEPARATORS)


def _render_seq(nodes: Sequence[_Node], tokens: Sequence[Token], keep: Sequence[bool]) -> str | None:
    """``nodes`` written back without the dropped items; None when nothing of them is left."""
    parts: list[tuple[str, str, bool]] = []  # (separator before, text, is a BREAK)
    skipped: list[str] = []  # separators of the dropped nodes since the last kept one
    for node in nodes:
        text = _render_node(node, tokens, keep)
        if text is None:
            skipped.append(node.pre)
            continue
        pre = node.pre
        if skipped and parts and not _strong(pre):  # "a (b) , c" without (b): keep the comma
            pre = next((s for s in skipped if _strong(s)), pre)
        parts.append((pre, text, isinstance(node, _Item) and tokens[node.token].kind == BREAK))
        skipped = []
    # A BREAK left with nothing on one side, or beside another, goes too.
    while parts and parts[0][2]:
        parts.pop(0)
    while parts and parts[-1][2]:
        parts.pop()
    parts = [p for i, p in enumerate(parts) if not (p[2] and parts[i - 1][2])]
    if not parts:
        return None
    return nodes[0].pre + parts[0][1] + "".join(pre + text for pre, text, _ in parts[1:])


def _render_node(node: _Node, tokens: Sequence[Token], keep: Sequence[bool]) -> str | None:
    if isinstance(node, _Item):
        return tokens[node.token].text if keep[node.token] else None
    if isinstance(node, _Group):
        body = _render_seq(node.children, tokens, keep)
        if body is None:
            return None
        return node.open + body + node.tail + node.close
    parts = [_render_seq(p, tokens, keep) for p in node.parts]
    if all(p is None for p in parts):
        return None
    inner = node.kind.join((p or "") + (t if p else "") for p, t in zip(parts, node.tails, strict=True))
    return "[" + inner + (":" + node.when if node.kind == ":" else "") + node.close


# -- parsing ----------------------------------------------------------------------------------------------


def _matching(s: str, start: int, open_: str) -> int:
    """Index of the bracket closing the one at ``start`` (escapes skipped, other kinds ignored); -1 if none."""
    close, depth, i = _OPEN[open_], 0, start
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _top_level(s: str, chars: str) -> list[int]:
    """Positions of ``chars`` in ``s`` outside any bracket (escapes skipped)."""
    found, depth, i = [], 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and c in chars:
            found.append(i)
        i += 1
    return found


class _Parser:
    def __init__(self) -> None:
        self.tokens: list[Token] = []

    def token(self, text: str, kind: str, weight: float, fixed: bool) -> int:
        self.tokens.append(Token(text, kind, weight, fixed))
        return len(self.tokens) - 1

    def text(self, raw: str, pre: str, weight: float, fixed: bool) -> tuple[list[_Node], str]:
        """Plain text (no brackets) -> items, BREAKs; returns them and the separators left after them."""
        nodes: list[_Node] = []
        for piece in _PIECES.findall(raw):
            if piece in _SEPARATORS:
                pre += piece
                continue
            chunks = _BREAK.split(piece)
            for n, chunk in enumerate(chunks):
                if n:  # a BREAK stood before this chunk
                    nodes.append(_Item(pre, self.token("BREAK", BREAK, weight, fixed)))
                    pre = ""
                stripped = chunk.strip()
                if not stripped:
                    pre += chunk
                    continue
                lead = chunk[: len(chunk) - len(chunk.lstrip())]
                kind = EMBEDDING if _EMBEDDING.match(stripped) else TAG
                nodes.append(_Item(pre + lead, self.token(stripped, kind, weight, fixed)))
                pre = chunk[len(chunk.rstrip()) :]
        return nodes, pre

    def seq(self, s: str, weight: float, fixed: bool) -> tuple[list[_Node], str]:
        """A stretch of prompt -> nodes, and the separators after the last one."""
        nodes: list[_Node] = []
        pre, buf, i = "", "", 0

        def flush() -> None:
            nonlocal pre, buf
            if buf:
                items, pre = self.text(buf, pre, weight, fixed)
                nodes.extend(items)
                buf = ""

        while i < len(s):
            c = s[i]
            if c == "\\":
                buf += s[i : i + 2]
                i += 2
                continue
            if c == "<" and (m := _NETWORK.match(s, i)):
                flush()
                nodes.append(_Item(pre, self.token(m.group(0), NETWORK, weight, fixed)))
                pre, i = "", m.end()
                continue
            if c in _OPEN:
                end = _matching(s, i, c)
                flush()
                inner, close = (s[i + 1 : end], _OPEN[c]) if end >= 0 else (s[i + 1 :], "")
                nodes.append(self.bracket(c, inner, close, pre, weight, fixed))
                pre, i = "", (end + 1 if end >= 0 else len(s))
                continue
            buf += c
            i += 1
        flush()
        return nodes, pre

    def bracket(self, open_: str, inner: str, close: str, pre: str, weight: float, fixed: bool) -> _Node:
        if open_ == "[":
            bars = _top_level(inner, "|")
            if bars:
                return self.choice("|", inner, bars, "", close, pre, weight)
            colons = _top_level(inner, ":")
            if colons and len(colons) <= 2 and _NUMBER.fullmatch(inner[colons[-1] + 1 :]):
                when = inner[colons[-1] + 1 :]
                return self.choice(":", inner[: colons[-1]], colons[:-1], when, close, pre, weight)
            children, tail = self.seq(inner, weight * SQUARE, fixed)
            return _Group(pre, "[", children, tail, close)
        if open_ == "{":
            children, tail = self.seq(inner, weight * CURLY, fixed)
            return _Group(pre, "{", children, tail, close)
        m = _GROUP_WEIGHT.search(inner)
        factor = ROUND
        if m:
            try:
                factor = float(m.group(1))
            except ValueError:
                m = None
        body = inner[: m.start()] if m else inner
        children, tail = self.seq(body, weight * factor, fixed)
        return _Group(pre, "(", children, tail + (inner[m.start() :] if m else ""), close)

    def choice(self, kind: str, s: str, cuts: list[int], when: str, close: str, pre: str, weight: float) -> _Choice:
        bounds = [-1, *cuts, len(s)]
        parts, tails = [], []
        for a, b in itertools.pairwise(bounds):
            nodes, tail = self.seq(s[a + 1 : b], weight, True)
            parts.append(nodes)
            tails.append(tail)
        return _Choice(pre, kind, parts, tails, when, close)


def parse(text: str) -> Prompt:
    """Parse a WebUI prompt (see the module docstring); never raises."""
    text = text or ""
    parser = _Parser()
    subprompts: list[tuple[str, list[_Node], str]] = []
    pieces = _AND.split(text)
    for n, piece in enumerate(pieces):
        pre = ""
        if n:
            parser.token("AND", AND, 1.0, False)
            pre = "AND"
        m = _SUBPROMPT_WEIGHT.search(piece)
        body, tail = (piece[: m.start()], piece[m.start() :]) if m else (piece, "")
        nodes, rest = parser.seq(body, 1.0, False)
        subprompts.append((pre, nodes, rest + tail))
    return Prompt(text, tuple(parser.tokens), tuple(subprompts))
