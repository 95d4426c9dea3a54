"""CLIP as a noisy partial annotator (docs/ALGORITHM.md#annotation), on open_clip.

The annotator is a panel (annotate/voters.py): CLIP's image encoder embeds every image once, the text
templates are its voters and example images (--examples) one more. Text features for every (template, class)
prompt are computed once; all templates vote through one matrix product (B, D) x (D, T*C). That makes the 27 templates nearly free
next to the image encoder (see benchmarks/annotate_overhead.py).

The module imports without torch and open_clip (the train extra): api.py reads weights_identity from here, and
without the extra load_clip fails with one line naming the install (MissingExtraError), not an ImportError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.annotate.examples import ExampleVoters, load_examples
from coreg_edge.annotate.job import AnnotateJob
from coreg_edge.annotate.templates import load_templates
from coreg_edge.annotate.voters import LOGIT_SCALE, Ballot, Embedder, Panel, Voters
from coreg_edge.digests import content_id
from coreg_edge.errors import UserError, require
from coreg_edge.hub import hub_offline, network_reachable
from coreg_edge.settings.annotate import DEFAULT_CLIP_MODEL, DEFAULT_PRETRAINED, AnnotateSettings
from coreg_edge.utils import one_line, rank_device, resolve_device


@dataclass
class ClipBundle:
    """What the open_clip factory hands back, plus how it was identified (for the annotation file)."""

    model: Any
    preprocess: Any
    tokenizer: Any
    model_name: str
    pretrained: str
    device: str


def key_summary(message: str, shown: int = 3) -> str:
    """PyTorch's load_state_dict error (thousands of key names) as counts and a few examples."""
    parts = []
    for label in ("Missing", "Unexpected"):
        found = re.search(label + r" key\(s\) in state_dict: (.*?)\.(?:\s|$)", message, re.S)
        if found:
            keys = [key.strip().strip('"') for key in found.group(1).split(",") if key.strip()]
            parts.append(f"{len(keys)} {label.lower()} keys, e.g. {', '.join(keys[:shown])}")
    if "size mismatch" in message:
        parts.append(f"{message.count('size mismatch')} size mismatches")
    return "; ".join(parts) or message.strip().splitlines()[0][:200]


def load_clip(
    model: str = DEFAULT_CLIP_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, device: str = "cpu"
) -> ClipBundle:
    """open_clip model from a name or a model-config JSON, weights from a tag or a local checkpoint.

    With no network and no cached weights this fails at once with one line naming the fix.
    """
    open_clip = require("open_clip", "the CLIP annotator")
    name = model
    config_path = Path(model)
    if model.endswith(".json"):
        if not config_path.is_file():
            raise UserError(f"--clip-model {model}: no such model-config file")
        try:
            open_clip.add_model_config(config_path)
        except (ValueError, KeyError, OSError) as exc:
            raise UserError(f"--clip-model {model}: not a valid open_clip model config ({exc})") from exc
        name = config_path.stem
    if name not in open_clip.list_models():
        raise UserError(f"--clip-model {model}: unknown open_clip model (see open_clip.list_models())")

    offline = False
    weights: str | None = pretrained or None
    if weights:
        looks_like_path = os.sep in weights or Path(weights).suffix in (".pt", ".pth", ".bin", ".safetensors")
        if Path(weights).is_file():
            weights = str(Path(weights).resolve())
        elif looks_like_path:
            raise UserError(f"--pretrained {pretrained}: no such checkpoint file")
        else:
            tags = open_clip.list_pretrained_tags_by_model(name)
            if weights not in tags:
                raise UserError(
                    f"--pretrained {weights}: not a known tag for {name} "
                    f"(known: {', '.join(tags) or 'none'}); or give a local checkpoint file"
                )
            offline = not network_reachable()
    guard = hub_offline() if offline else contextlib.nullcontext()
    logging.disable(logging.ERROR)  # open_clip logs its own failure before raising; we say it once
    try:
        with guard:
            clip_model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=weights, device=device
            )
    except RuntimeError as exc:
        if "state_dict" in str(exc):  # weights of another architecture: count the keys, do not list them all
            raise UserError(
                f"--pretrained {pretrained}: these weights do not fit --clip-model {model} ({key_summary(str(exc))})"
            ) from exc
        if offline or "download" in str(exc).lower():
            raise UserError(
                f"cannot get CLIP weights {name}/{weights}: no network and not in the open_clip cache; "
                "pass --pretrained /path/to/checkpoint.pt, or pre-download them on a networked machine "
                "(open_clip.create_model_and_transforms) and copy ~/.cache/huggingface here"
            ) from exc
        raise UserError(f"cannot load CLIP {name} with weights {weights}: {exc}") from exc
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot load CLIP {name} with weights {weights}: {one_line(exc)}") from exc
    except (pickle.UnpicklingError, IndexError, TypeError, AttributeError) as exc:
        if not (weights and Path(weights).is_file()):
            raise
        raise UserError(f"--pretrained {pretrained}: not a PyTorch checkpoint of open_clip weights") from exc
    except AssertionError as exc:  # open_clip asserts when a checkpoint's shapes do not fit the model
        raise UserError(
            f"--pretrained {pretrained}: these weights do not fit --clip-model {model} ({exc})"
        ) from exc
    finally:
        logging.disable(logging.NOTSET)
    clip_model.eval()
    return ClipBundle(
        clip_model, preprocess, open_clip.get_tokenizer(name), name, str(pretrained or ""), device
    )


class ClipEmbedder(Embedder):
    """CLIP's image encoder: an image -> its normalised float32 embedding (on the bundle's device)."""

    def __init__(self, bundle: ClipBundle):
        self.bundle = bundle
        self.device = bundle.device

    def preprocess(self, image: Any) -> Any:
        return self.bundle.preprocess(image)

    def collate(self, items: list[Any]) -> Any:
        import torch  # lazy: optional dependency (train extra), see the module docstring

        return torch.stack(items)

    def encode(self, batch: Any) -> Any:
        """(B, 3, H, W) preprocessed -> (B, D) normalised float32 image features."""
        import torch  # lazy: optional dependency (train extra), see the module docstring

        with torch.inference_mode(), _autocast(self.device):
            feats = self.bundle.model.encode_image(batch.to(self.device, non_blocking=True)).float()
        return torch.nn.functional.normalize(feats, dim=-1)


class TextPromptVoters(Voters):
    """One voter per prompt template: prompt features once; per batch one matrix product for all T templates.

    `prompt_names[c]` is one name or a list of names for class c: every name is prompted through every
    template; a template votes the class of its best-matching name, and a class's logit under a template is
    its best name's (so one name per class is CLIP's plain zero-shot classifier)."""

    def __init__(
        self, bundle: ClipBundle, templates: list[str], prompt_names: list[str | list[str]],
        text_batch_size: int = 256,
    ):  # fmt: skip
        self.bundle = bundle
        self.names = list(templates)
        self.prompt_names = prompt_names
        self.class_names = [[p] if isinstance(p, str) else list(p) for p in prompt_names]
        self.name_class = [c for c, names in enumerate(self.class_names) for _ in names]  # flat name -> class
        self.text_batch_size = text_batch_size
        self._text_features = None  # (D, T*K) for K names in all, computed lazily once

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_names(self) -> int:
        return len(self.name_class)

    def class_features(self) -> Any:
        """(D, T*K) normalised prompt features, template-major: column t*K + k is template t, name k."""
        import torch  # lazy: optional dependency (train extra), see the module docstring

        if self._text_features is None:
            prompts = [t.format(name) for t in self.names for names in self.class_names for name in names]
            chunks = []
            with torch.inference_mode(), _autocast(self.bundle.device):
                for start in range(0, len(prompts), self.text_batch_size):
                    tokens = self.bundle.tokenizer(prompts[start : start + self.text_batch_size])
                    feats = self.bundle.model.encode_text(tokens.to(self.bundle.device)).float()
                    chunks.append(torch.nn.functional.normalize(feats, dim=-1))
            self._text_features = torch.cat(chunks).T.contiguous()
        return self._text_features

    def vote(self, features: Any) -> Ballot:
        """(B, D) -> votes (B, T) int16 and template-averaged probabilities (B, C) float32."""
        import torch  # lazy: optional dependency (train extra), see the module docstring

        with torch.inference_mode():
            logits = LOGIT_SCALE * features @ self.class_features()
            logits = logits.view(len(features), len(self.names), self.num_names)
            if self.num_names != self.num_classes:  # several names: each class by its best name
                owner = torch.as_tensor(self.name_class, device=logits.device)
                votes = owner[logits.argmax(-1)].to(torch.int16)
                shape = (*logits.shape[:2], self.num_classes)
                index = owner.expand_as(logits)
                logits = logits.new_full(shape, float("-inf")).scatter_reduce(-1, index, logits, "amax")
            else:
                votes = logits.argmax(-1).to(torch.int16)
            probs = logits.softmax(-1).mean(1)
        return Ballot(votes.cpu().numpy(), probs.cpu().numpy().astype(np.float32))


def _autocast(device: str):
    import torch  # lazy: optional dependency (train extra), see the module docstring

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def weights_identity(s: AnnotateSettings) -> dict[str, str]:
    """The content digests of --pretrained and --clip-model where they are files: shards and a resumed call
    must come from the same weights, not the same path (merge and --resume compare them)."""
    digests = {"pretrained_sha256": content_id(s.pretrained), "model_config_sha256": content_id(s.clip_model)}
    return {key: value for key, value in digests.items() if value is not None}


def clip_panel(job: AnnotateJob) -> Panel:
    """The clip annotator: CLIP's image encoder, one voter per template and (with --examples) the examples'."""
    s = job.settings
    templates = load_templates(s.templates)  # a bad template file fails before the model loads
    if not templates and not s.examples:
        raise UserError("--templates none leaves no voter: give --examples EXAMPLES/ (or a template set)")
    examples = load_examples(s.examples, job.class_names, job.source.channels, job.folder_root) if s.examples else None
    missing = examples.missing(job.class_names) if examples is not None and not templates else []
    if missing:
        warnings.warn(f"--templates none: the examples are the only voter and {s.examples} has no sub-folder for "
                      f"{len(missing)} class(es) ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): "
                      "no item can have them as a candidate; add their examples or keep a template set",
                      stacklevel=2)  # fmt: skip
    device = resolve_device(s.device)
    if s.shard is not None and s.shard.strip() == "auto":  # one GPU per rank under torchrun
        device = rank_device(device)
        if device.startswith("cuda:"):
            import torch  # lazy: optional dependency (train extra), see the module docstring

            torch.cuda.set_device(device)  # pinned memory and the CUDA context on this rank's GPU, not GPU 0
    embedder = ClipEmbedder(load_clip(s.clip_model, s.pretrained, device))
    groups: list[Voters] = [TextPromptVoters(embedder.bundle, templates, job.prompt_names)] if templates else []
    identity = {"model": s.clip_model, "pretrained": s.pretrained, "mode": s.mode,
                "k": s.k if s.mode != "union-top1" else None, "ratio": s.ratio if s.mode == "ratio" else None,
                **weights_identity(s)}
    if examples is not None:
        groups.append(ExampleVoters(examples, embedder, job.class_names, metric="cosine"))
        identity["examples"] = examples.describe(job.class_names)
    return Panel(embedder, groups, mode=s.mode, k=s.k, ratio=s.ratio, identity=identity)  # fmt: skip
