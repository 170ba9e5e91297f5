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
    # Other names for this model: what the older WD14 tagger extensions called it (see ``canonical``).
    aliases: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, str]:
        return (self.model_file, self.tags_file)

    @property
    def display_name(self) -> str:
        return f"{self.name} ({self.backbone}, {self.family})"


# v2 repositories carry the git tag ``v2.0``: pinned to it so that a re-export upstream cannot change
# results silently. The v3 repositories publish no tag; they are pinned to ``main`` until a verified
# commit id is recorded here (Hugging Face cannot be reached from the machine this was written on).
# Aliases: the names the older tagger extensions gave these models, so that their users' scripts, presets and
# habits keep working. Sources: toriato/stable-diffusion-webui-wd14-tagger and Akegarasu/sd-webui-wd14-tagger
# (``tagger/utils.py``: their model list keys and the names given to the interrogators), picobyte's fork
# (``tagger/utils.py``: keys and display names, including the v3 entries of a pull request), and the
# ``name.v2`` spellings this project's HTTP API accepted before. Names of models not in this catalog (the v1
# taggers wd14-vit/wd14-convnext, ML-Danbooru, Z3D) are left out: they must not resolve to another model.
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
        aliases=("wd-swinv2-v3", "wd-v1-4-swinv2-tagger.v3", "WD14 SwinV2 v3"),
    ),
    CatalogModel(
        "wd-vit-tagger-v3",
        "SmilingWolf/wd-vit-tagger-v3",
        "main",
        "v3",
        "ViT-B/16",
        10861,
        "~379 MB",
        aliases=("wd-vit-v3", "wd14-vit-v3", "wd-v1-4-vit-tagger.v3", "WD14 ViT v3"),
    ),
    CatalogModel(
        "wd-convnext-tagger-v3",
        "SmilingWolf/wd-convnext-tagger-v3",
        "main",
        "v3",
        "ConvNeXt-B",
        10861,
        "fastest B-size model on CPU",
        aliases=("wd-convnext-v3", "wd-v1-4-convnext-tagger.v3", "WD14 ConvNext v3"),
    ),
    CatalogModel(
        "wd-v1-4-moat-tagger-v2",
        "SmilingWolf/wd-v1-4-moat-tagger-v2",
        "v2.0",
        "v2",
        "MOAT",
        9083,
        "fixed batch 1",
        aliases=("wd14-moat-v2", "wd-v1-4-moat-tagger.v2", "WD14 moat tagger v2"),
    ),
    CatalogModel(
        "wd-v1-4-swinv2-tagger-v2",
        "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
        "v2.0",
        "v2",
        "SwinV2-B",
        9083,
        aliases=(
            "wd14-swinv2-v2",
            "wd14-swinv2-v2-git",
            "wd14-swinv2-v1",
            "wd14-swinv2.v2",
            "WD14 SwinV2 v1",
            "wd-v1-4-swinv2-tagger.v2",
        ),
    ),
    CatalogModel(
        "wd-v1-4-convnextv2-tagger-v2",
        "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
        "v2.0",
        "v2",
        "ConvNeXtV2",
        9083,
        aliases=(
            "wd14-convnextv2-v2",
            "wd14-convnextv2-v2-git",
            "wd14-convnextv2.v1",
            "WD14 ConvNeXTV2 v1",
            "wd-v1-4-convnextv2-tagger.v2",
        ),
    ),
    CatalogModel(
        "wd-v1-4-convnext-tagger-v2",
        "SmilingWolf/wd-v1-4-convnext-tagger-v2",
        "v2.0",
        "v2",
        "ConvNeXt",
        9083,
        aliases=(
            "wd14-convnext-v2",
            "wd14-convnext-v2-git",
            "wd14-convnext.v2",
            "WD14 ConvNeXT v2",
            "wd-v1-4-convnext-tagger.v2",
        ),
    ),
    CatalogModel(
        "wd-v1-4-vit-tagger-v2",
        "SmilingWolf/wd-v1-4-vit-tagger-v2",
        "v2.0",
        "v2",
        "ViT-B/16",
        9083,
        aliases=("wd14-vit-v2", "wd14-vit-v2-git", "wd14-vit.v2", "WD14 ViT v2", "wd-v1-4-vit-tagger.v2"),
    ),
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
    """The catalog entry called exactly ``name`` (or whose repo id is ``name``), else None. Aliases: ``canonical``."""
    for model in CATALOG:
        if name in (model.name, model.repo_id):
            return model
    return None


# Every name a catalog model answers to, case-folded: its name, its repo id and its aliases.
_FOLDED: dict[str, str] = {
    spelling.casefold(): model.name for model in CATALOG for spelling in (model.name, model.repo_id, *model.aliases)
}


def canonical(name: str) -> str | None:
    """The catalog name that ``name`` stands for, else None.

    ``name`` is a catalog name, a repo id or an alias (a name an older tagger extension used); surrounding
    spaces and letter case do not matter. ``canonical("wd-vit-v3") == "wd-vit-tagger-v3"``.
    """
    key = name.strip()
    model = by_name(key)
    return model.name if model else _FOLDED.get(key.casefold())
