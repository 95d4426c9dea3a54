"""An instance-dependent stand-in for CLIP on labelled data (docs/ALGORITHM.md#simulated), for benchmarks.

The synthetic protocol flips a coin per class, so every item is equally hard. CLIP's mistakes are not
like that: confusable classes and hard images are wrong under many templates at once. This simulator
keeps that structure with numpy and scikit-learn only:

- a weak classifier (a logistic regression fitted on `shots` labelled items per class, on the images
  shrunk to `feature_size` x `feature_size` grey pixels) gives every item shared logits: the part of the
  error that depends on the image, the same for every template;
- each of `templates` templates adds its own class bias (scale `template_bias`) and its own per-item noise
  (scale `item_noise`) to those logits and votes its top-1;
- the zero-shot probabilities are the template-averaged softmax (at `temperature`), as
  `TextPromptVoters.vote` computes them, and the candidate set is the union of the votes.

As an annotator it is a panel (annotate/voters.py) like CLIP's: the grey pixels are its embedding, its
templates one group of voters, fitted on the whole set at once (`SimulatedVoters`), and example images
(--examples) one more voter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from coreg_edge.annotate.examples import ExampleVoters, load_examples
from coreg_edge.annotate.job import AnnotateJob
from coreg_edge.annotate.modes import candidate_sets
from coreg_edge.annotate.voters import Ballot, Embedder, Panel, Voters


@dataclass(frozen=True)
class SimulatorKnobs:
    """What steers the difficulty. Noise scales are in units of the weak classifier's logit spread."""

    shots: int  # labelled items per class the weak classifier is fitted on: fewer, weaker prior
    templates: int  # T: more templates, larger sets (more chances to vote for a wrong class)
    template_bias: float  # per-template (C,) class bias: some prompts favour some classes
    item_noise: float  # per-template, per-item (N, C) noise: templates disagree on borderline items
    temperature: float  # softmax temperature of the zero-shot probabilities (votes do not depend on it)
    feature_size: int  # images are shrunk to this many grey pixels a side: smaller, more confusable


#: Each knob's annotate() keyword (also its recipe key and, dashed, its CLI option): `templates` is CLIP's
#: template set there, so that knob is `sim_templates`.
OPTION_NAMES: dict[str, str] = {
    f.name: "sim_templates" if f.name == "templates" else f.name for f in fields(SimulatorKnobs)
}


#: Calibrated on `digits` (seed 0; seeds 1 and 2 land in the same ranges), measured in docs/ALGORITHM.md.
PRESETS: dict[str, SimulatorKnobs] = {
    "easy": SimulatorKnobs(shots=10, templates=27, template_bias=0.1, item_noise=0.25, temperature=0.25,
                           feature_size=8),
    "hard": SimulatorKnobs(shots=3, templates=27, template_bias=0.2, item_noise=0.22, temperature=0.25,
                           feature_size=3),
}  # fmt: skip


def resolve_knobs(preset: str, options: Mapping[str, Any] | None = None) -> SimulatorKnobs:
    """The preset with each non-None option (keyed by OPTION_NAMES: shots, sim_templates, ...) applied.
    The values are AnnotateSettings' fields, checked there (kinds, ranges, the preset's name)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_NAMES.values()))
    if unknown:
        raise ValueError(
            f"unknown simulator option {unknown[0]!r} (known: {', '.join(OPTION_NAMES.values())})"
        )
    chosen = {knob: options[name] for knob, name in OPTION_NAMES.items() if options.get(name) is not None}
    return replace(PRESETS[preset], **chosen)


def image_feature(image: Image.Image, size: int) -> np.ndarray:
    """(size * size,) float32 in [0, 1]: the image as grey pixels shrunk to size x size, flattened."""
    small = image.convert("L").resize((size, size), Image.BILINEAR)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def weak_logits(
    features: np.ndarray, labels: np.ndarray, num_classes: int, shots: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, C) logits of a logistic regression fitted on `shots` items per class (all of a smaller class).

    Standardised features; logits centred per item and scaled so their mean per-item spread (std over
    classes) is 1, which makes the noise knobs mean the same on any dataset. A class without labelled
    items gets a logit below every other, so only noise can vote for it.
    """
    # lazy: sklearn takes ~1.5 s to import; run fingerprints read simulated_knobs here without fitting
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=np.int64)
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    picked = [
        rng.choice(members, size=min(shots, len(members)), replace=False)
        for c in range(num_classes)
        if len(members := np.flatnonzero(labels == c))
    ]
    train = np.sort(np.concatenate(picked))
    present = np.unique(labels[train])
    if len(present) == 1:  # a single class with items: it wins everywhere
        scores = np.ones((len(x), 1))
    else:
        model = LogisticRegression(max_iter=2000).fit(x[train], labels[train])  # classes_ == present
        scores = model.decision_function(x)
        if scores.ndim == 1:  # two classes: scikit-learn returns the second one's margin only
            scores = np.stack([-scores, scores], 1) / 2
    logits = np.repeat(scores.min(1, keepdims=True) - 1.0, num_classes, axis=1)  # classes without items
    logits[:, present] = scores
    logits -= logits.mean(1, keepdims=True)
    spread = logits.std(1).mean()
    return (logits / (spread if spread > 0 else 1.0)).astype(np.float32)


@dataclass
class Simulation:
    """What the simulator produced: the annotation arrays, and the shared logits the tests look inside."""

    votes: np.ndarray  # int16 (N, T): each template's top-1
    zero_shot_probs: np.ndarray  # float32 (N, C): mean over templates of the softmax
    candidates: np.ndarray  # bool (N, C): the union of the votes
    weak_logits: np.ndarray  # float32 (N, C): the weak classifier's, shared by every template
    template_bias: np.ndarray  # float32 (T, C): each template's class bias


def simulate(
    features: np.ndarray, labels: np.ndarray, num_classes: int, knobs: SimulatorKnobs, seed: int = 0
) -> Simulation:
    """Votes, zero-shot probabilities and union-top1 candidate sets for items with ground truth.

    Deterministic given the seed. The weak classifier, the template biases and the per-item noise draw
    from three separate streams, so raising `templates` keeps the first templates' votes as they were.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be class indices below {num_classes} (ground truth is needed)")
    shots_rng, bias_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    n, t = len(labels), knobs.templates
    base = weak_logits(features, labels, num_classes, knobs.shots, shots_rng)
    bias = (knobs.template_bias * bias_rng.standard_normal((t, num_classes))).astype(np.float32)
    votes = np.zeros((n, t), dtype=np.int16)
    probs = np.zeros((n, num_classes), dtype=np.float64)
    for j in range(t):  # one template at a time: memory stays O(N x C)
        noise = noise_rng.standard_normal((n, num_classes), dtype=np.float32)
        logits = base + bias[j] + knobs.item_noise * noise
        votes[:, j] = logits.argmax(1)
        scaled = (logits - logits.max(1, keepdims=True)) / knobs.temperature
        exp = np.exp(scaled, dtype=np.float64)
        probs += exp / exp.sum(1, keepdims=True)
    probs = (probs / t).astype(np.float32)
    candidates = candidate_sets("union-top1", votes=votes, probs=probs)
    return Simulation(votes, probs, candidates, base, bias)


def describe_knobs(knobs: SimulatorKnobs) -> dict[str, Any]:
    """The knobs as plain JSON values under their annotate() names, for the file's `annotator` block."""
    return {
        OPTION_NAMES[k]: (int(v) if isinstance(v, (int, np.integer)) else float(v))
        for k, v in asdict(knobs).items()
    }


class PixelEmbedder(Embedder):
    """The simulator's embedding: grey pixels at `size` x `size`; its voters need every item at once."""

    whole_set = True

    def __init__(self, size: int):
        self.size = size

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return image_feature(image, self.size)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return batch


class SimulatedVoters(Voters):
    """The simulator's T templates as voters: fitted on the items with ground truth (`fit`), then voting.

    The whole set is simulated in `fit` (the weak classifier standardises over it and the per-item noise
    is drawn in item order), so `vote` answers for exactly the fitted items."""

    def __init__(self, labels: np.ndarray, num_classes: int, knobs: SimulatorKnobs, seed: int):
        self.names = [f"simulated-{j}" for j in range(knobs.templates)]
        self.labels, self.num_classes, self.knobs, self.seed = labels, num_classes, knobs, seed
        self.simulation: Simulation | None = None

    def fit(self, features: np.ndarray, rows: np.ndarray) -> None:
        self.simulation = simulate(features, self.labels[rows], self.num_classes, self.knobs, self.seed)

    def class_features(self) -> np.ndarray:
        """(T, C) each template's class bias, added to the weak classifier's logits shared by all of them."""
        if self.simulation is None:
            raise RuntimeError("SimulatedVoters need fit() on the items first")
        return self.simulation.template_bias

    def vote(self, features: np.ndarray) -> Ballot:
        if self.simulation is None or len(features) != len(self.simulation.votes):
            raise RuntimeError("SimulatedVoters vote on exactly the items they were fitted on")
        return Ballot(self.simulation.votes, self.simulation.zero_shot_probs)


def simulated_panel(job: AnnotateJob) -> Panel:
    """The simulated annotator: grey pixels, the preset's (or given) templates and (with --examples) the
    examples' nearest standardised mean."""
    s = job.settings
    knobs = resolve_knobs(s.preset, {name: getattr(s, name) for name in OPTION_NAMES.values()})
    embedder = PixelEmbedder(knobs.feature_size)
    groups: list[Voters] = [SimulatedVoters(job.labels, job.num_classes, knobs, s.seed)]
    identity = {"preset": s.preset, **describe_knobs(knobs)}
    if s.examples:
        examples = load_examples(s.examples, job.class_names, job.source.channels, job.folder_root)
        groups.append(ExampleVoters(examples, embedder, job.class_names, metric="euclidean", standardise=True))
        identity["examples"] = examples.describe(job.class_names)
    return Panel(embedder, groups, identity=identity)


def simulated_knobs(s: Any) -> dict[str, Any]:
    """The simulator's knobs as used: its preset with the given ones applied (a retuned preset re-runs)."""
    return describe_knobs(resolve_knobs(s.preset, {name: getattr(s, name) for name in OPTION_NAMES.values()}))
