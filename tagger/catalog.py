"""The catalog of SmilingWolf's WD14 taggers: name -> Hugging Face repo, revision and files.

Facts from ../shared/docs/wd14-models.md (model cards and the author's reference Space). The thresholds
are the per-model precision=recall points published on the model cards; the engine's defaults stay at the
common 0.35 / 0.85 unless the user picks ``--general-threshold`` explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"


@dataclass(frozen=True)
class CatalogModel:
    name: str  # folder name and the name users type
    repo_id: str
    revision: str  # a git tag or commit; never a moving branch where a pin is known
    family: str  # "v3" or "v2"
    backbone: str
    tags: int  # number of output rows (csv rows)
    note: str = ""
    model_file: str = MODEL_FILE
    tags_file: str = TAGS_FILE

    @property
    def files(self) -> tuple[str, str]:
        return (self.model_file, self.tags_file)

    @property
    def display_name(self) -> str:
        return f"{self.name} ({self.backbone}, {self.family})"


# v2 repositories carry the git tag ``v2.0``: pinned to it so that a re-export upstream cannot change
# results silently. The v3 repositories publish no tag; they are pinned to ``main`` until a verified
# commit id is recorded here (Hugging Face cannot be reached from the machine this was written on).
CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        "wd-eva02-large-tagger-v3",
        "SmilingWolf/wd-eva02-large-tagger-v3",
        "main",
        "v3",
        "EVA02-L/14",
        10861,
        "most accurate, ~1.26 GB, slowest",
    ),
    CatalogModel(
        "wd-vit-large-tagger-v3",
        "SmilingWolf/wd-vit-large-tagger-v3",
        "main",
        "v3",
        "ViT-L",
        10861,
        "~1.26 GB",
    ),
    CatalogModel(
        "wd-swinv2-tagger-v3",
        "SmilingWolf/wd-swinv2-tagger-v3",
        "main",
        "v3",
        "SwinV2-B",
        10861,
        "commonly recommended default",
    ),
    CatalogModel("wd-vit-tagger-v3", "SmilingWolf/wd-vit-tagger-v3", "main", "v3", "ViT-B/16", 10861, "~379 MB"),
    CatalogModel(
        "wd-convnext-tagger-v3",
        "SmilingWolf/wd-convnext-tagger-v3",
        "main",
        "v3",
        "ConvNeXt-B",
        10861,
        "fastest B-size model on CPU",
    ),
    CatalogModel(
        "wd-v1-4-moat-tagger-v2",
        "SmilingWolf/wd-v1-4-moat-tagger-v2",
        "v2.0",
        "v2",
        "MOAT",
        9083,
        "fixed batch 1",
    ),
    CatalogModel("wd-v1-4-swinv2-tagger-v2", "SmilingWolf/wd-v1-4-swinv2-tagger-v2", "v2.0", "v2", "SwinV2-B", 9083),
    CatalogModel(
        "wd-v1-4-convnextv2-tagger-v2",
        "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
        "v2.0",
        "v2",
        "ConvNeXtV2",
        9083,
    ),
    CatalogModel(
        "wd-v1-4-convnext-tagger-v2", "SmilingWolf/wd-v1-4-convnext-tagger-v2", "v2.0", "v2", "ConvNeXt", 9083
    ),
    CatalogModel("wd-v1-4-vit-tagger-v2", "SmilingWolf/wd-v1-4-vit-tagger-v2", "v2.0", "v2", "ViT-B/16", 9083),
)

DEFAULT_MODEL = "wd-swinv2-tagger-v3"

# Kaomoji whose underscore is part of the face: they keep it when underscores become spaces.
KAOMOJI: frozenset[str] = frozenset(
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
        ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||", "0_o", "o_0", "ಠ_ಠ", "ಥ_ಥ",
    }
)  # fmt: skip


def by_name(name: str) -> CatalogModel | None:
    """The catalog entry called ``name`` (or whose repo id is ``name``), else None."""
    for model in CATALOG:
        if name in (model.name, model.repo_id):
            return model
    return None


# Names the earlier extensions (toriato's, picobyte's) gave the models this catalog has, so that scripts
# written for them keep working.
LEGACY_MODEL_NAMES = {
    "wd14-vit-v2": "wd-v1-4-vit-tagger-v2",
    "wd14-vit-v2-git": "wd-v1-4-vit-tagger-v2",
    "wd14-vit.v2": "wd-v1-4-vit-tagger-v2",
    "wd-v1-4-vit-tagger.v2": "wd-v1-4-vit-tagger-v2",
    "wd14-convnext-v2": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnext-v2-git": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnext.v2": "wd-v1-4-convnext-tagger-v2",
    "wd-v1-4-convnext-tagger.v2": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnextv2.v1": "wd-v1-4-convnextv2-tagger-v2",
    "wd-v1-4-convnextv2-tagger.v2": "wd-v1-4-convnextv2-tagger-v2",
    "wd14-swinv2-v2": "wd-v1-4-swinv2-tagger-v2",
    "wd14-swinv2-v2-git": "wd-v1-4-swinv2-tagger-v2",
    "wd14-swinv2-v1": "wd-v1-4-swinv2-tagger-v2",
    "wd-v1-4-swinv2-tagger.v2": "wd-v1-4-swinv2-tagger-v2",
    "wd14-moat-v2": "wd-v1-4-moat-tagger-v2",
    "wd-v1-4-moat-tagger.v2": "wd-v1-4-moat-tagger-v2",
}


def canonical(name: str) -> str | None:
    """The catalog name for a catalog name, a repository id or an earlier extension's name; else None."""
    model = by_name(name)
    return model.name if model else LEGACY_MODEL_NAMES.get(name.lower())
