"""Stand-in WD14 models built from code: the real architectures' compute, random weights, the WD14 contract.

Every model takes ``[N, 448, 448, 3]`` float32 BGR 0..255 (dynamic batch) and returns ``[N, 10861]`` sigmoid
probabilities, with a ``selected_tags.csv`` of 4 rating, 8,000-odd general and 2,800-odd character rows in
the real models' proportions. Weights are seeded random numbers: the tags mean nothing, the time does.

- ``vit``: ViT-B/16 at 448 (as wd-vit-tagger-v3): Conv patch embedding, 784 tokens, 12 pre-norm transformer
  blocks (dim 768, 12 heads, MLP 3072, LayerNormalization, exact GELU via Erf), final LayerNorm, global
  average pool, Gemm head to 10861 and Sigmoid. 94M parameters.
- ``swinv2``: SwinV2-B at 448 as wd-swinv2-tagger-v3 (timm ``swinv2_base_window8_256`` with ``img_size=448,
  window_size=14``): 4x4 patch embedding and LayerNorm to 112x112 tokens of 128, stages of depth 2/2/18/2 with
  4/8/16/32 heads at widths 128/256/512/1024 on 112/56/28/14 tokens a side, 14x14 windows, every second block
  shifted by 7 (a roll as Slice + Concat, and a constant attention mask) except in the last stage, where one
  window covers the map. Cosine attention (L2-normalised q and k, a per-head logit scale, q and v biases), a
  continuous relative position bias folded into a constant per block as an export does, post-norm residual
  blocks (LayerNorm after attention and after the 4x GELU MLP), patch merging (2x2 concat, Linear 4C -> 2C,
  LayerNorm), final LayerNorm, global average pool and the head. 98M weights and 19M constants (biases,
  norms, the position-bias and mask tables): a 467 MB file.
- ``convnext``: ConvNeXt-B at 448 (as wd-convnext-tagger-v3): 4x4 stem, stages of depth 3/3/27/3 at widths
  128/256/512/1024 with 7x7 depthwise convolutions, channels-last LayerNorm, 4x MLP with GELU and layer
  scale, global average pool, LayerNorm and the same head. 98M parameters.
- ``trivial``: the mean colour of the image through a tiny MatMul: inference costs almost nothing, so it
  stands for a fast GPU on which decoding and preprocessing are the whole bottleneck.

Models are cached as ``<cache>/models/<name>/{model.onnx,selected_tags.csv}``; the cache is
``$TAGGER_BENCH_CACHE`` or ``~/.cache/wd14-tagger-bench``. Building needs the ``onnx`` package only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZE = 448
N_TAGS = 10861
N_RATING = 4
N_CHARACTER = 2800  # the v3 csv has 4 rating, ~8,000 general and ~2,800 character rows
BUILD_VERSION = 4  # bump when a graph changes: cached files of another version are rebuilt

MODEL_NAMES = ("vit", "swinv2", "convnext", "trivial")
TITLES = {"vit": "ViT-B/16", "swinv2": "SwinV2-B", "convnext": "ConvNeXt-B", "trivial": "trivial"}  # for reports


def cache_dir() -> Path:
    """Where generated models and images live: ``$TAGGER_BENCH_CACHE`` or ``~/.cache/wd14-tagger-bench``."""
    env = os.environ.get("TAGGER_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wd14-tagger-bench"


def write_tags_csv(path: Path, n_tags: int = N_TAGS) -> None:
    """A WD14 ``selected_tags.csv``: ratings first, then general tags, character tags at the end."""
    ratings = ("general", "sensitive", "questionable", "explicit")
    n_char = min(N_CHARACTER, max(0, n_tags - N_RATING) // 4)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i in range(n_tags):
            if i < N_RATING:
                name, cat = ratings[i], 9
            elif i >= n_tags - n_char:
                name, cat = f"character_{i:05d}_(series)", 4
            else:
                name, cat = f"general_tag_{i:05d}", 0
            w.writerow([9_999_000 + i, name, cat, 1_000_000 // (i + 1)])


class _Graph:
    """A tiny helper around onnx.helper: unique names, initializers from numpy, nodes in order."""

    def __init__(self, seed: int) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.rng = np.random.default_rng(seed)
        self.nodes: list[object] = []
        self.inits: list[object] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, array: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(self.numpy_helper.from_array(np.array(array, order="C"), name))  # 0-d stays 0-d
        return name

    def weight(self, shape: tuple[int, ...], std: float = 0.02, prefix: str = "w") -> str:
        return self.const((self.rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32), prefix)

    def ints(self, values: list[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64), "shape")

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attrs: object) -> str:
        out = self.name(prefix or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def linear(self, x: str, d_in: int, d_out: int) -> str:
        return self.op(
            "Add", [self.op("MatMul", [x, self.weight((d_in, d_out))]), self.const(np.zeros(d_out, np.float32))]
        )

    def layer_norm(self, x: str, dim: int) -> str:
        scale, bias = self.const(np.ones(dim, np.float32)), self.const(np.zeros(dim, np.float32))
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=1e-6)

    def gelu(self, x: str) -> str:  # exact GELU as exported by torch: 0.5 * x * (1 + erf(x / sqrt(2)))
        inner = self.op("Erf", [self.op("Div", [x, self.const(np.array(np.sqrt(2.0), np.float32))])])
        one_plus = self.op("Add", [inner, self.const(np.array(1.0, np.float32))])
        return self.op("Mul", [self.op("Mul", [x, one_plus]), self.const(np.array(0.5, np.float32))])

    def finish(self, out: str, n_tags: int, path: Path, graph_name: str) -> None:
        import onnx
        from onnx import TensorProto

        h = self.helper
        self.nodes.append(h.make_node("Identity", [out], ["predictions_sigmoid"]))
        inp = h.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", SIZE, SIZE, 3])
        outp = h.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", n_tags])
        graph = h.make_graph(self.nodes, graph_name, [inp], [outp], initializer=self.inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="wd14-tagger-bench")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=False)
        tmp = path.with_suffix(".tmp")
        onnx.save(model, str(tmp))
        tmp.replace(path)

    def head(self, pooled: str, dim: int, n_tags: int) -> str:
        """Gemm to the tags and Sigmoid; biases make most tags unlikely, as in a real tagger."""
        w = self.weight((dim, n_tags), std=1.0 / np.sqrt(dim))
        bias = (self.rng.standard_normal(n_tags, dtype=np.float32) * 1.2 - 5.0).astype(np.float32)
        logits = self.op("Gemm", [pooled, w, self.const(bias)])
        return self.op("Sigmoid", [logits])

    def bgr_to_normalized_nchw(self, x: str) -> str:
        """NHWC BGR 0..255 -> NCHW RGB roughly in -1..1, as the real exports do inside the graph."""
        rgb = self.op("Slice", [x, self.ints([2]), self.ints([-4]), self.ints([3]), self.ints([-1])])  # reverse C
        norm = self.op("Sub", [self.op("Div", [rgb, self.const(np.array(127.5, np.float32))]),
                               self.const(np.array(1.0, np.float32))])  # fmt: skip
        return self.op("Transpose", [norm], perm=[0, 3, 1, 2])


def build_vit(path: Path, *, n_tags: int = N_TAGS, depth: int = 12, dim: int = 768, heads: int = 12,
              mlp: int = 3072, patch: int = 16, seed: int = 0) -> None:  # fmt: skip
    """ViT-B/16 @448 with the WD14 contract (see the module docstring)."""
    g = _Graph(seed)
    tokens = (SIZE // patch) ** 2
    head_dim = dim // heads
    x = g.bgr_to_normalized_nchw("input")
    x = g.op("Conv", [x, g.weight((dim, 3, patch, patch)), g.const(np.zeros(dim, np.float32))],
             kernel_shape=[patch, patch], strides=[patch, patch])  # fmt: skip
    x = g.op("Reshape", [x, g.ints([0, dim, tokens])])
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [N, tokens, dim]
    x = g.op("Add", [x, g.weight((1, tokens, dim))])  # position embedding
    scale = g.const(np.array(1.0 / np.sqrt(head_dim), np.float32))
    for _ in range(depth):
        h = g.layer_norm(x, dim)
        qkv = g.linear(h, dim, 3 * dim)
        qkv = g.op("Reshape", [qkv, g.ints([0, tokens, 3, heads, head_dim])])
        qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, N, heads, tokens, head_dim]
        q, k, v = (g.op("Gather", [qkv, g.const(np.array(i, np.int64))], axis=0) for i in range(3))
        att = g.op("MatMul", [g.op("Mul", [q, scale]), g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        att = g.op("Softmax", [att], axis=-1)
        o = g.op("MatMul", [att, v])  # [N, heads, tokens, head_dim]
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3]), g.ints([0, tokens, dim])])
        x = g.op("Add", [x, g.linear(o, dim, dim)])
        h = g.layer_norm(x, dim)
        x = g.op("Add", [x, g.linear(g.gelu(g.linear(h, dim, mlp)), mlp, dim)])
    x = g.layer_norm(x, dim)
    pooled = g.op("ReduceMean", [x], axes=[1], keepdims=0)  # [N, dim]
    g.finish(g.head(pooled, dim, n_tags), n_tags, path, "vit_b16_448")


def build_convnext(path: Path, *, n_tags: int = N_TAGS, depths: tuple[int, ...] = (3, 3, 27, 3),
                   dims: tuple[int, ...] = (128, 256, 512, 1024), seed: int = 1) -> None:  # fmt: skip
    """ConvNeXt-B @448 with the WD14 contract (see the module docstring)."""
    g = _Graph(seed)

    def zeros(n: int) -> str:
        return g.const(np.zeros(n, np.float32))

    def ln_nchw(x: str, dim: int) -> str:  # channels-first LayerNorm: to NHWC and back, as torch exports it
        y = g.layer_norm(g.op("Transpose", [x], perm=[0, 2, 3, 1]), dim)
        return g.op("Transpose", [y], perm=[0, 3, 1, 2])

    x = g.bgr_to_normalized_nchw("input")
    x = g.op("Conv", [x, g.weight((dims[0], 3, 4, 4)), zeros(dims[0])], kernel_shape=[4, 4], strides=[4, 4])
    x = ln_nchw(x, dims[0])
    for stage, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
        if stage > 0:
            x = ln_nchw(x, dims[stage - 1])
            x = g.op("Conv", [x, g.weight((dim, dims[stage - 1], 2, 2)), zeros(dim)], kernel_shape=[2, 2],
                     strides=[2, 2])  # fmt: skip
        for _ in range(depth):
            y = g.op("Conv", [x, g.weight((dim, 1, 7, 7)), zeros(dim)], kernel_shape=[7, 7], pads=[3, 3, 3, 3],
                     group=dim)  # fmt: skip
            y = g.layer_norm(g.op("Transpose", [y], perm=[0, 2, 3, 1]), dim)  # NHWC
            y = g.linear(g.gelu(g.linear(y, dim, 4 * dim)), 4 * dim, dim)
            y = g.op("Mul", [y, g.const(np.full(dim, 0.1, np.float32))])  # layer scale
            x = g.op("Add", [x, g.op("Transpose", [y], perm=[0, 3, 1, 2])])
    pooled = g.layer_norm(g.op("ReduceMean", [x], axes=[2, 3], keepdims=0), dims[-1])
    g.finish(g.head(pooled, dims[-1], n_tags), n_tags, path, "convnext_b_448")


def build_trivial(path: Path, *, n_tags: int = N_TAGS, seed: int = 2) -> None:
    """Mean colour -> MatMul -> Sigmoid: microseconds of inference, the same input and output as the others."""
    g = _Graph(seed)
    mean = g.op("ReduceMean", ["input"], axes=[1, 2], keepdims=0)  # [N, 3]
    w = g.const((g.rng.standard_normal((3, n_tags), dtype=np.float32) / 255).astype(np.float32))
    bias = g.const((g.rng.standard_normal(n_tags, dtype=np.float32) * 1.2 - 5.0).astype(np.float32))
    out = g.op("Sigmoid", [g.op("Add", [g.op("MatMul", [mean, w]), bias])])
    g.finish(out, n_tags, path, "trivial")


def _relative_position_bias(g: _Graph, window: int, heads: int) -> np.ndarray:
    """SwinV2's continuous position bias, ``[heads, w*w, w*w]``: a 2-512-heads MLP (ReLU) over log-spaced
    relative coordinates, ``16 * sigmoid``, gathered per token pair. It depends on weights only, so an export
    folds it into a constant; computed here once in numpy with random MLP weights."""
    rel = np.arange(-(window - 1), window, dtype=np.float32) / max(window - 1, 1) * 8
    table = np.stack(np.meshgrid(rel, rel, indexing="ij"), axis=-1).reshape(-1, 2)  # [(2w-1)^2, 2]
    table = np.sign(table) * np.log2(np.abs(table) + 1.0) / np.log2(8)
    w1 = g.rng.standard_normal((2, 512), dtype=np.float32) * 0.5
    w2 = g.rng.standard_normal((512, heads), dtype=np.float32) * 0.05
    bias_table = np.maximum(table @ w1, 0.0) @ w2  # [(2w-1)^2, heads]
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel_idx = coords[:, :, None] - coords[:, None, :] + window - 1  # [2, w*w, w*w]
    index = rel_idx[0] * (2 * window - 1) + rel_idx[1]
    bias = bias_table[index.reshape(-1)].reshape(window * window, window * window, heads)
    return (16.0 / (1.0 + np.exp(-bias))).transpose(2, 0, 1).astype(np.float32)


def _shift_mask(side: int, window: int, shift: int) -> np.ndarray:
    """The shifted-window attention mask, ``[windows, 1, w*w, w*w]``: 0 between tokens from the same region
    of the rolled map, -100 across regions (Swin's constant)."""
    region = np.zeros((side, side), np.float32)
    cuts = ((0, side - window), (side - window, side - shift), (side - shift, side))
    for n, (h0, h1) in enumerate(cuts):
        for m, (w0, w1) in enumerate(cuts):
            region[h0:h1, w0:w1] = 3 * n + m
    per = side // window
    win = region.reshape(per, window, per, window).transpose(0, 2, 1, 3).reshape(per * per, window * window)
    mask = np.where(win[:, None, :] != win[:, :, None], -100.0, 0.0).astype(np.float32)
    return mask[:, None]


def build_swinv2(path: Path, *, n_tags: int = N_TAGS, depths: tuple[int, ...] = (2, 2, 18, 2), dim: int = 128,
                 heads: tuple[int, ...] = (4, 8, 16, 32), window: int = 14, patch: int = 4,
                 seed: int = 3) -> None:  # fmt: skip
    """SwinV2-B @448 with the WD14 contract (see the module docstring)."""
    g = _Graph(seed)

    def zeros(n: int) -> str:
        return g.const(np.zeros(n, np.float32))

    def post_norm(y: str, c: int) -> str:  # SwinV2's residual post-norm, initialised small as its weights train
        scale, bias = g.const(np.full(c, 0.1, np.float32)), zeros(c)
        return g.op("LayerNormalization", [y, scale, bias], axis=-1, epsilon=1e-5)

    def roll(x: str, side: int, by: int) -> str:  # torch.roll on H and W of [N, H, W, C], as exported
        k = by % side
        for axis in (1, 2):
            tail = g.op("Slice", [x, g.ints([side - k]), g.ints([side]), g.ints([axis])])
            head = g.op("Slice", [x, g.ints([0]), g.ints([side - k]), g.ints([axis])])
            x = g.op("Concat", [tail, head], axis=axis)
        return x

    def l2_normalize(t: str) -> str:  # F.normalize(t, dim=-1)
        norm = g.op("ReduceL2", [t], axes=[-1], keepdims=1)
        return g.op("Div", [t, g.op("Max", [norm, g.const(np.array(1e-12, np.float32))])])

    def attention(x: str, side: int, c: int, n_heads: int, shift: int) -> str:
        """Shifted-window cosine attention on ``[N, side, side, c]``."""
        w = min(window, side)
        per, tokens, head_dim = side // w, w * w, c // n_heads
        if shift:
            x = roll(x, side, -shift)
        x = g.op("Reshape", [x, g.ints([-1, per, w, per, w, c])])
        x = g.op("Transpose", [x], perm=[0, 1, 3, 2, 4, 5])
        x = g.op("Reshape", [x, g.ints([-1, tokens, c])])  # [N * windows, tokens, c]
        qkv_bias = np.concatenate([g.rng.standard_normal(c, dtype=np.float32) * 0.02, np.zeros(c, np.float32),
                                   g.rng.standard_normal(c, dtype=np.float32) * 0.02])  # fmt: skip
        qkv = g.op("Add", [g.op("MatMul", [x, g.weight((c, 3 * c))]), g.const(qkv_bias.astype(np.float32))])
        qkv = g.op("Reshape", [qkv, g.ints([-1, tokens, 3, n_heads, head_dim])])
        qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, N * windows, heads, tokens, head_dim]
        q, k, v = (g.op("Gather", [qkv, g.const(np.array(i, np.int64))], axis=0) for i in range(3))
        att = g.op("MatMul", [l2_normalize(q), g.op("Transpose", [l2_normalize(k)], perm=[0, 1, 3, 2])])
        logit_scale = np.exp(np.minimum(np.log(10.0) + g.rng.standard_normal(n_heads) * 0.1, np.log(100.0)))
        att = g.op("Mul", [att, g.const(logit_scale.astype(np.float32).reshape(n_heads, 1, 1))])
        att = g.op("Add", [att, g.const(_relative_position_bias(g, w, n_heads))])
        if shift:
            att = g.op("Reshape", [att, g.ints([-1, per * per, n_heads, tokens, tokens])])
            att = g.op("Add", [att, g.const(_shift_mask(side, w, shift))])
            att = g.op("Reshape", [att, g.ints([-1, n_heads, tokens, tokens])])
        o = g.op("MatMul", [g.op("Softmax", [att], axis=-1), v])  # [N * windows, heads, tokens, head_dim]
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3]), g.ints([-1, tokens, c])])
        o = g.linear(o, c, c)
        o = g.op("Reshape", [o, g.ints([-1, per, per, w, w, c])])
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 1, 3, 2, 4, 5]), g.ints([-1, side, side, c])])
        return roll(o, side, shift) if shift else o

    x = g.bgr_to_normalized_nchw("input")
    x = g.op("Conv", [x, g.weight((dim, 3, patch, patch)), zeros(dim)], kernel_shape=[patch, patch],
             strides=[patch, patch])  # fmt: skip
    x = g.layer_norm(g.op("Transpose", [x], perm=[0, 2, 3, 1]), dim)  # NHWC from here on
    side, c = SIZE // patch, dim
    for stage, (depth, n_heads) in enumerate(zip(depths, heads, strict=True)):
        if stage > 0:  # patch merging: 2x2 neighbours concatenated, Linear 4c -> 2c (no bias), LayerNorm
            x = g.op("Reshape", [x, g.ints([-1, side // 2, 2, side // 2, 2, c])])
            x = g.op("Transpose", [x], perm=[0, 1, 3, 4, 2, 5])
            side, c = side // 2, 2 * c
            x = g.op("Reshape", [x, g.ints([-1, side, side, 2 * c])])
            x = g.layer_norm(g.op("MatMul", [x, g.weight((2 * c, c))]), c)
        for i in range(depth):
            shift = window // 2 if i % 2 and side > window else 0  # no shift where one window covers the map
            x = g.op("Add", [x, post_norm(attention(x, side, c, n_heads, shift), c)])
            x = g.op("Add", [x, post_norm(g.linear(g.gelu(g.linear(x, c, 4 * c)), 4 * c, c), c)])
    x = g.layer_norm(x, c)
    pooled = g.op("ReduceMean", [x], axes=[1, 2], keepdims=0)  # [N, c]
    g.finish(g.head(pooled, c, n_tags), n_tags, path, "swinv2_b_w14_448")


BUILDERS: dict[str, Callable[..., None]] = {
    "vit": build_vit,
    "swinv2": build_swinv2,
    "convnext": build_convnext,
    "trivial": build_trivial,
}


def ensure_model(name: str, root: Path | None = None, *, log: Callable[[str], None] | None = None) -> Path:
    """The folder of stand-in model ``name`` (one of ``MODEL_NAMES``), built on first use."""
    if name not in BUILDERS:
        raise ValueError(f"unknown bench model {name!r}; known: {', '.join(BUILDERS)}")
    folder = (root or cache_dir() / "models") / name
    onnx_path, csv_path, stamp = folder / "model.onnx", folder / "selected_tags.csv", folder / "VERSION"
    if (
        onnx_path.is_file()
        and csv_path.is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == str(BUILD_VERSION)
    ):
        return folder
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise SystemExit("building the stand-in models needs the onnx package: pip install -e '.[bench]'") from e
    folder.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"building the {name} stand-in model in {folder} (once; cached)")
    BUILDERS[name](onnx_path)
    write_tags_csv(csv_path)
    stamp.write_text(f"{BUILD_VERSION}\n")
    return folder
