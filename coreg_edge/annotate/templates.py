"""Prompt template sets: the spec's 27 (default), CLIP's 80 ImageNet templates, or a text file."""

from __future__ import annotations

import string
from pathlib import Path

from coreg_edge.errors import UserError

TEMPLATE_RULE = "exactly one {} where the class name goes, and any other brace doubled ({{ or }})"

# docs/ALGORITHM.md#annotation: the 27 templates the paper's annotation uses.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
    "a cropped photo of a {}", "a photo of the {}", "a good photo of the {}", "a photo of one {}",
    "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}",
    "a rendition of a {}", "a photo of a nice {}", "a good photo of a {}", "a photo of the nice {}",
    "a photo of the small {}", "a photo of the weird {}", "a photo of the large {}",
    "a photo of a cool {}", "a photo of a small {}",
)  # fmt: skip

# CLIP's 80 ImageNet prompt templates (as shipped by open_clip's zero-shot metadata).
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

TEMPLATE_SETS = {"default": DEFAULT_TEMPLATES, "imagenet": IMAGENET_TEMPLATES}


def load_templates(spec: str = "default") -> list[str]:
    """`default` (27), `imagenet` (80), `none` (no text voters: the examples vote alone), or a text file with
    one template per line, each holding `{}`."""
    if spec == "none":
        return []
    if spec in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--templates {spec!r}: not a template set ({', '.join(TEMPLATE_SETS)}, none) nor a file")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise UserError(f"{path}: no templates (one per line, each with {{}} where the class name goes)")
    bad = [t for t in templates if not is_template(t)]
    if bad:
        raise UserError(f"{path}: every template needs {TEMPLATE_RULE} (bad: {bad[0]!r})")
    return templates


def is_template(text: str) -> bool:
    """Whether `text.format(name)` puts the name in exactly one place and nothing else: one bare `{}`, no
    named or numbered field (`{x}` would fail with a KeyError once the model is loaded), escaped braces
    (`{{`, `}}`) allowed. The one check for templates files, inline recipe templates and --wording."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(text)
                  if name is not None]  # fmt: skip
    except ValueError:  # a lone { or }
        return False
    return fields == [("", "", None)]
