"""Label settings: what `export_labels()` / `coreg-edge labels` and `write_review()` / `coreg-edge review` take."""

from __future__ import annotations

from dataclasses import dataclass

from coreg_edge.choices import EXPORT_PEERS, LABEL_FORMATS
from coreg_edge.settings.fields import check_fields, device_field, option


@dataclass(frozen=True)
class RunLabelSettings:
    """How a run's network labels the annotated items (shared by labels and review)."""

    peer: str = option("selected", help="A run's network that labels: its selected peer, a, b, or ensemble.",
                       choices=EXPORT_PEERS, recipe=False)  # fmt: skip
    data: str | None = option(help="Where the annotated images are now, when they moved.", recipe=False)
    batch_size: int = option(256, help="Images per forward pass (a run's labels).", low=1, execution=True,
                             recipe=False)  # fmt: skip
    device: str = device_field(execution=True, recipe=False)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class LabelsSettings(RunLabelSettings):
    """How the pseudo-labels of an annotation file or a training run leave coreg-edge."""

    format: str = option("csv", help="csv / jsonl: one row per item (item, path, label, confidence); "
                         "imagefolder: one sub-folder per class, as torchvision's ImageFolder reads.",
                         choices=LABEL_FORMATS, recipe=False)  # fmt: skip
    copy: bool = option(False, help="imagefolder: copy the images instead of linking them (the originals never "
                        "move either way).", recipe=False)  # fmt: skip
    min_confidence: float = option(0.0, help="Items labelled with a lower confidence are left out (listed as "
                                   "unlabelled).", low=0, high=1, recipe=False)  # fmt: skip


@dataclass(frozen=True)
class ReviewSettings(RunLabelSettings):
    """What a person is shown to check a run's labels."""

    sample: int = option(200, help="Items to review: about the same number per predicted class, the least "
                         "confident first.", low=1, high=100_000, recipe=False)  # fmt: skip
    thumbnail: int = option(128, help="Thumbnail size in px on the review page.", low=16, high=1024, recipe=False)
