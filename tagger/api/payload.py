"""What goes in and out of the routes besides the models: base64 images in, the earlier answer shape out."""

import base64
import binascii
import re

from tagger.errors import ImageError
from tagger.labels import Labels
from tagger.postprocess import TagResult


def decode_base64_image(text: str, label: str = "image") -> bytes:
    """The bytes of a base64 image field; raises ImageError naming ``label`` and the problem."""
    s = text.strip()
    if s[:8].lower().startswith(("http://", "https://")):
        raise ImageError(label, "is a URL; send the image file itself, base64-encoded")
    if s[:5].lower() == "data:":
        head, comma, s = s.partition(",")
        if not comma or not head.lower().endswith(";base64"):
            raise ImageError(label, "a data: URL must be base64-encoded (data:image/png;base64,...)")
    s = re.sub(r"\s+", "", s)
    if not s:
        raise ImageError(label, "is empty: no image data")
    if "-" in s or "_" in s:  # the URL-safe alphabet
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError(label, f"is not valid base64 ({e})") from None
    if not data:
        raise ImageError(label, "is empty: no image data")
    return data


def legacy_caption(result: TagResult, labels: Labels) -> dict[str, float]:
    """The earlier extensions' ``caption``: every rating in the model's (csv) order, then the tags that
    passed, highest probability first (ties keep their order)."""
    caption = {labels.names[i]: result.rating[labels.names[i]] for i in labels.rating}
    extra = [kv for tags in result.categories.values() for kv in tags.items()]  # other categories the model has
    tags = sorted([*result.character.items(), *result.general.items(), *extra], key=lambda kv: -kv[1])
    caption.update(tags)
    return caption
