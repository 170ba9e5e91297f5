"""The contracts of the tagger families this project knows, each as its authors run it.

Where each fact comes from is written beside it (the catalog entries repeat it per model). Where sources
disagree, the model author's own inference code wins, and the comment says so.
"""

from __future__ import annotations

from tagger.families.description import (
    BOORU_CATEGORIES,
    E621_CATEGORIES,
    WD14,
    FitSpec,
    InputSpec,
    LabelsSpec,
    ModelDescription,
    OutputSpec,
)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)

# WD v1/v2/v3 (SmilingWolf): NHWC, BGR, 0..255, white pad to a square, bicubic; probabilities out.
# Source: the author's Space SmilingWolf/wd-tagger app.py (../shared/docs/wd14-models.md). ``WD14`` itself.

# Z3D-E621-Convnext: the WD14 contract (input "input_1:0", output "predictions_sigmoid": white pad, bicubic,
# BGR 0..255) with e621's category numbers in ``tags-selected.csv`` (5 species, 7 meta, 8 lore).
# Sources: the Spaces that run toynya/Z3D-E621-Convnext (prepare_image_e621) and the e621 numbering quoted
# by clients of the file; the original author's code was not found.
Z3D = ModelDescription(
    family="z3d",
    labels=LabelsSpec(file="tags-selected.csv", categories=dict(E621_CATEGORIES)),
)

# PixAI tagger v0.9, deepghs' ONNX export (deepghs/pixai-tagger-v0.9-onnx): input "input" NCHW; outputs
# "prediction" (probabilities), "logits", "embedding" (1024); selected_tags.csv with 0 general, 4 character.
# Preprocessing from PixAI's own handler (pixai-labs/pixai-tagger-v0.9): RGBA composited on white,
# torchvision Resize((448, 448)) (bilinear, aspect not kept), ToTensor, Normalize(0.5, 0.5).
# Default thresholds from that handler: general 0.30, character 0.85 (imgutils' older pixai.py used 0.15 /
# 0.7 and its newer one deepghs' thresholds.csv: the author's code wins).
PIXAI = ModelDescription(
    family="pixai",
    input=InputSpec(layout="NCHW", channels="RGB", scale=1 / 255, mean=_HALF, std=_HALF),
    fit=FitSpec(mode="stretch", resize="bilinear"),
    output=OutputSpec(prediction="prediction", activation="none", embedding="embedding"),
    labels=LabelsSpec(file="selected_tags.csv", categories=dict(BOORU_CATEGORIES)),
    thresholds={"general": 0.30, "character": 0.85},
)

# Camie tagger v2 (Camais03/camie-tagger-v2, camie-tagger-v2.onnx + camie-tagger-v2-metadata.json).
# Preprocessing from the author's app (Space Camais03/camie-tagger-v2-app, utils/onnx_processing.py, as
# quoted by ComfyUI_Mira's camie_tagger): the longer side resized to 512 with LANCZOS (the other side
# int(512 / aspect)), pasted centred on a 512 square of the ImageNet mean colour (124, 116, 104), ToTensor,
# ImageNet Normalize, NCHW RGB. Outputs (initial_predictions, refined_predictions, selected_candidates): the
# author uses the second, the refined logits, and applies a sigmoid. Labels: dataset_info.tag_mapping (idx_to_tag, tag_to_category:
# general, character, copyright, artist, meta, rating, year). Threshold: the app's default 0.61 for every
# category. The author's code converts RGBA with convert("RGB") (hidden colours of transparent pixels stay);
# here transparency is flattened onto white, as for every model.
CAMIE_V2 = ModelDescription(
    family="camie",
    model_file="camie-tagger-v2.onnx",
    input=InputSpec(layout="NCHW", size=512, channels="RGB", scale=1 / 255, mean=_IMAGENET_MEAN, std=_IMAGENET_STD),
    fit=FitSpec(mode="letterbox", pad_color=(124, 116, 104), resize="lanczos"),
    output=OutputSpec(prediction=1, activation="sigmoid"),
    labels=LabelsSpec(file="camie-tagger-v2-metadata.json", format="camie-metadata", categories={}),
    thresholds={c: 0.61 for c in ("general", "character", "copyright", "artist", "meta", "year")},
)

# cl_tagger (cella110n/cl_tagger, <version>/model.onnx + tag_mapping.json {"0": {"tag", "category"}}).
# From the author's Space app (celll1/tagutl spaces/app.py, the CL EVA02 tagger Space): RGBA pasted on
# white, padded to a white square, resized to 448 BICUBIC, /255, CHW, channels reversed to BGR,
# Normalize(0.5, 0.5); sigmoid on the first output. Categories Rating, General, Character, Copyright, Artist,
# Meta, Quality, Model; rating and quality take only their best label; copyright and artist use the
# character threshold, meta and model the general one. The author's older onnx_predict.py resized with
# LANCZOS and ComfyUI nodes with cv2 INTER_CUBIC: the Space's BICUBIC is followed. Thresholds: onnx_predict.py
# defaults (0.45 general and character).
CL_TAGGER = ModelDescription(
    family="cl",
    input=InputSpec(layout="NCHW", channels="BGR", scale=1 / 255, mean=_HALF, std=_HALF),
    fit=FitSpec(mode="pad", resize="bicubic"),
    output=OutputSpec(activation="sigmoid"),
    labels=LabelsSpec(file="tag_mapping.json", format="tag-mapping", categories={}),
    thresholds={c: 0.45 for c in ("general", "character", "copyright", "artist", "meta", "model")},
    single=("quality",),
)

# ML-Danbooru (deepghs/ml-danbooru-onnx: ml_caformer_m36_dec-5-97527.onnx, TResnet-D-FLq_ema_6-30000.onnx,
# classes.json). From the author's demo (IrisRainbowNeko/ML-Danbooru demo_ca.py): convert("RGB"),
# torchvision Resize((448, 448)) (bilinear), ToTensor (0..1, no normalisation), sigmoid; every tag general;
# threshold 0.75 (the demo's default; imgutils uses 0.7). Input "input" NCHW, output "output" (imgutils
# mldanbooru.py). Transparency is flattened onto white here (picobyte's extension does the same).
MLDANBOORU = ModelDescription(
    family="mldanbooru",
    input=InputSpec(layout="NCHW", size=448, channels="RGB", scale=1 / 255),
    fit=FitSpec(mode="stretch", resize="bilinear"),
    output=OutputSpec(activation="sigmoid"),
    labels=LabelsSpec(file="classes.json", format="name-list", categories={}),
    thresholds={"general": 0.75},
)

# A deepghs repackaged folder of a model not in the catalog: preprocess.json stages, input "input" NCHW,
# outputs "output"/"prediction" (probabilities) and "embedding", selected_tags.csv with Danbooru's category
# numbers (imgutils tagging/camie.py, pixai.py). The stages come from the folder.
DEEPGHS = ModelDescription(
    family="deepghs",
    input=InputSpec(layout="NCHW", channels="RGB"),
    fit=FitSpec(mode="stages"),
    labels=LabelsSpec(file="selected_tags.csv", categories=dict(BOORU_CATEGORIES)),
)

__all__ = ["CAMIE_V2", "CL_TAGGER", "DEEPGHS", "MLDANBOORU", "PIXAI", "WD14", "Z3D"]
