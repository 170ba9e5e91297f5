"""The catalog: name -> Hugging Face repo, revision, files and how the model is run (its description).

WD14 (SmilingWolf's v3, v2 and v1 taggers): facts from ../shared/docs/wd14-models.md (model cards and the
author's reference Space). The thresholds are the per-model precision=recall points published on the model
cards; the engine's defaults stay at the common 0.35 / 0.85 unless the user picks ``--general-threshold``
explicitly. The other families (PixAI, Camie, cl_tagger, ML-Danbooru, Z3D) are described in
``families/known.py``; each entry records where each of its facts came from (``sources``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tagger.families import known
from tagger.families.description import WD14, ModelDescription

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"


@dataclass(frozen=True)
class CatalogModel:
    name: str  # folder name and the name users type
    repo_id: str
    revision: str  # a git tag or commit; never a moving branch where a pin is known
    family: str  # "v3", "v2", "v1", "pixai", "camie", "cl", "mldanbooru", "z3d"
    backbone: str
    tags: int | None  # number of output rows (tag list rows); None where no source says
    note: str = ""
    model_file: str = MODEL_FILE
    tags_file: str = TAGS_FILE
    # Other names for this model: what the older WD14 tagger extensions called it (see ``canonical``).
    aliases: tuple[str, ...] = ()
    description: ModelDescription = WD14
    subfolder: str = ""  # the repository folder holding the files ("" for the repository's root)
    license: str = ""
    size: str = ""  # download size, as the sources give it
    sources: tuple[str, ...] = field(default=(), repr=False)  # where each fact of this entry came from
    # Its categories beyond rating, general and character, as the sources name them (the tag list, once
    # downloaded, is what counts).
    categories: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, str]:
        """The files to fetch, as paths in the repository."""
        return (self.repo_path(self.model_file), self.repo_path(self.tags_file))

    def repo_path(self, filename: str) -> str:
        return f"{self.subfolder}/{filename}" if self.subfolder else filename

    @property
    def display_name(self) -> str:
        return f"{self.name} ({self.backbone}, {self.family})"

    @property
    def model_description(self) -> ModelDescription:
        """How this model is run, with this entry's file names."""
        return self.description.with_files(model_file=self.model_file, labels_file=self.tags_file)


_WD_SOURCE = "contract: SmilingWolf's Space SmilingWolf/wd-tagger app.py (../shared/docs/wd14-models.md)"
# v2 repositories carry the git tag ``v2.0``: pinned to it so that a re-export upstream cannot change
# results silently. The v3 repositories publish no tag; they are pinned to ``main`` until a verified
# commit id is recorded here (Hugging Face cannot be reached from the machine this was written on).
# Aliases: the names the older tagger extensions gave these models, so that their users' scripts, presets and
# habits keep working. Sources: toriato/stable-diffusion-webui-wd14-tagger and Akegarasu/sd-webui-wd14-tagger
# (``tagger/utils.py``: their model list keys and the names given to the interrogators), picobyte's fork
# (``tagger/utils.py``: keys and display names, including the v3 entries of a pull request), and the
# ``name.v2`` spellings this project's HTTP API accepted before.
_WD: tuple[CatalogModel, ...] = (
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
    # The v1 taggers: toriato's extension names them wd14-vit / wd14-convnext (repo SmilingWolf/wd-v1-4-vit-tagger,
    # -convnext-tagger, no revision), picobyte's wd14-vit.v1 / "WD14 ViT v1". No tag is known: pinned to main.
    CatalogModel(
        "wd-v1-4-vit-tagger",
        "SmilingWolf/wd-v1-4-vit-tagger",
        "main",
        "v1",
        "ViT-B/16",
        None,
        "the first WD 1.4 tagger",
        aliases=("wd14-vit", "wd14-vit.v1", "WD14 ViT v1"),
    ),
    CatalogModel(
        "wd-v1-4-convnext-tagger",
        "SmilingWolf/wd-v1-4-convnext-tagger",
        "main",
        "v1",
        "ConvNeXt",
        None,
        "the first WD 1.4 tagger",
        aliases=("wd14-convnext", "wd14-convnext.v1", "WD14 ConvNeXT v1"),
    ),
)

CATALOG: tuple[CatalogModel, ...] = (
    *(
        replace(
            m,
            license="Apache-2.0",
            sources=(
                _WD_SOURCE,
                "repository, files, revision: the model cards; v2 tag v2.0 (../shared/docs/wd14-models.md)",
                "licence: the model cards' licence field (apache-2.0)",
                "names: toriato's and picobyte's tagger/utils.py (interrogator keys and display names)",
            ),
        )
        for m in _WD
    ),
    CatalogModel(
        "pixai-tagger-v0.9",
        "deepghs/pixai-tagger-v0.9-onnx",
        "d8cf666911a2c3d10d586d7823259192313c7eb7",
        "pixai",
        "EVA02-L (WD EVA02-Large v3 encoder, PixAI head)",
        None,
        "PixAI's tagger, ONNX export by deepghs; has an image embedding output",
        aliases=("pixai-v0.9", "PixAI v0.9"),
        description=known.PIXAI,
        license="Apache-2.0",
        size="1.27 GB",
        sources=(
            "repository and layout (model.onnx, selected_tags.csv; input 'input'; outputs prediction, logits, "
            "embedding): deepghs/imgutils imgutils/tagging/pixai.py (_get_repo_id, _raw_predict)",
            "preprocessing (composite on white, Resize((448, 448)) bilinear, ToTensor, Normalize(0.5, 0.5)), "
            "thresholds general 0.30 / character 0.85: PixAI's own handler for pixai-labs/pixai-tagger-v0.9 "
            "(PixAITagger.transform and predict); imgutils' older defaults 0.15 / 0.7 differ: the author's win",
            "revision, size (1271365854 bytes), licence: a pinned third-party catalog of this repository "
            "(model_catalog.py with sha256 per file); not checked here",
        ),
    ),
    CatalogModel(
        "camie-tagger-v2",
        "Camais03/camie-tagger-v2",
        "main",
        "camie",
        "ViT (143M parameters)",
        70527,
        "70,527 tags in 7 categories (general, character, copyright, artist, meta, rating, year)",
        model_file="camie-tagger-v2.onnx",
        tags_file="camie-tagger-v2-metadata.json",
        aliases=("camie-v2", "Camie Tagger v2", "camie_tagger_v2"),
        description=known.CAMIE_V2,
        categories=("copyright", "artist", "meta", "year"),
        license="GPL-3.0",
        size="789 MB (+ 7.7 MB metadata)",
        sources=(
            "tags, categories, licence: the model card (Camais03/camie-tagger-v2 README.md)",
            "files and their sizes: clients that download them (camie-tagger-v2.onnx 789 MB, "
            "camie-tagger-v2-metadata.json 7.7 MB)",
            "preprocessing, output refined_predictions + sigmoid, metadata layout, threshold 0.61: the author's "
            "Space Camais03/camie-tagger-v2-app utils/onnx_processing.py as quoted by ComfyUI_Mira (camie_tagger)",
            "revision: none verified, main",
        ),
    ),
    CatalogModel(
        "cl_tagger_1_02",
        "cella110n/cl_tagger",
        "0b6e9b4e145b1423bfd1715119074a24a301b471",
        "cl",
        "EVA02-L (LoRA fine-tune)",
        None,
        "cella110n's cl_tagger v1.02; categories include quality and model",
        tags_file="tag_mapping.json",
        aliases=("cl-tagger-1.02", "CL Tagger v1.02"),
        description=known.CL_TAGGER,
        categories=("copyright", "artist", "meta", "quality", "model"),
        subfolder="cl_tagger_1_02",
        license="Apache-2.0",
        size="1.43 GB",
        sources=(
            "files (cl_tagger_1_02/model.onnx, cl_tagger_1_02/tag_mapping.json) and revision: two third-party "
            "catalogs agree (prompt_studio model catalog, a pinned model_catalog.py with sha256 per file)",
            "preprocessing, sigmoid, categories, rating/quality best-only, copyright/artist on the character "
            "threshold: the author's Space app (celll1/tagutl spaces/app.py); thresholds 0.45: its onnx_predict.py",
            "size (1425860192 bytes), licence: the pinned third-party catalog; not checked here",
        ),
    ),
    CatalogModel(
        "ml-danbooru-caformer-dec-5-97527",
        "deepghs/ml-danbooru-onnx",
        "main",
        "mldanbooru",
        "CAFormer-M36 + ML-Decoder",
        12547,
        "general tags only",
        model_file="ml_caformer_m36_dec-5-97527.onnx",
        tags_file="classes.json",
        aliases=("mld-caformer.dec-5-97527", "ML-Danbooru Caformer dec-5-97527"),
        description=known.MLDANBOORU,
        sources=(
            "repository, file names, names mld-caformer.dec-5-97527: picobyte's tagger/utils.py and interrogator.py",
            "input 'input' NCHW, output 'output', sigmoid: deepghs/imgutils imgutils/tagging/mldanbooru.py",
            "preprocessing (Resize((448, 448)), ToTensor), threshold 0.75, 12547 classes: the author's "
            "IrisRainbowNeko/ML-Danbooru demo_ca.py",
            "licence, size: not stated in the sources read; revision: main",
        ),
    ),
    CatalogModel(
        "ml-danbooru-tresnetd-6-30000",
        "deepghs/ml-danbooru-onnx",
        "main",
        "mldanbooru",
        "TResNet-D + ML-Decoder",
        12547,
        "general tags only; 640 px input",
        model_file="TResnet-D-FLq_ema_6-30000.onnx",
        tags_file="classes.json",
        aliases=("mld-tresnetd.6-30000", "ML-Danbooru TResNet-D 6-30000"),
        description=replace(known.MLDANBOORU, input=replace(known.MLDANBOORU.input, size=640)),
        sources=(
            "repository, file names, names mld-tresnetd.6-30000: picobyte's tagger/utils.py",
            "preprocessing (Resize((640, 640)), ToTensor), threshold 0.75: the author's "
            "IrisRainbowNeko/ML-Danbooru demo.py (picobyte feeds 448; the author's 640 is followed where the model "
            "does not fix the size)",
            "licence, size: not stated in the sources read; revision: main",
        ),
    ),
    CatalogModel(
        "z3d-e621-convnext",
        "toynya/Z3D-E621-Convnext",
        "main",
        "z3d",
        "ConvNeXt",
        None,
        "e621 tags (general, artist, copyright, character, species, meta, lore); no ratings",
        tags_file="tags-selected.csv",
        aliases=("Z3D-E621-Convnext",),
        description=known.Z3D,
        categories=("copyright", "artist", "species", "meta", "lore"),
        sources=(
            "repository, files, WD14 contract (input_1:0, predictions_sigmoid, white pad, bicubic, BGR 0..255): "
            "Spaces running toynya/Z3D-E621-Convnext (prepare_image_e621); name: picobyte's tagger/utils.py",
            "category numbers: e621's (clients of tags-selected.csv quote 0 general, 1 artist, 3 copyright, "
            "4 character, 5 species, 7 meta, 8 lore)",
            "licence, size: not stated in the sources read; the original author's code was not found; revision: main",
        ),
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


def _unique_repos() -> set[str]:
    """Repository ids that hold one catalog model only: those name their model (ML-Danbooru's repository
    holds two, so its id names neither)."""
    seen: dict[str, int] = {}
    for model in CATALOG:
        seen[model.repo_id] = seen.get(model.repo_id, 0) + 1
    return {repo for repo, n in seen.items() if n == 1}


_UNIQUE_REPOS = _unique_repos()


def by_name(name: str) -> CatalogModel | None:
    """The catalog entry called exactly ``name`` (or whose repo id is ``name``, where the repository holds only
    that model), else None. Aliases: ``canonical``."""
    for model in CATALOG:
        if name == model.name or (name == model.repo_id and name in _UNIQUE_REPOS):
            return model
    return None


# Every name a catalog model answers to, case-folded: its name, its repo id (when unique) and its aliases.
_FOLDED: dict[str, str] = {
    spelling.casefold(): model.name
    for model in CATALOG
    for spelling in (model.name, *([model.repo_id] if model.repo_id in _UNIQUE_REPOS else []), *model.aliases)
}


def canonical(name: str) -> str | None:
    """The catalog name that ``name`` stands for, else None.

    ``name`` is a catalog name, a repo id or an alias (a name an older tagger extension used); surrounding
    spaces and letter case do not matter. ``canonical("wd-vit-v3") == "wd-vit-tagger-v3"``.
    """
    key = name.strip()
    model = by_name(key)
    return model.name if model else _FOLDED.get(key.casefold())
