"""Training under torchrun: the processes of one run as a `Group` (docs/SCALE.md).

Every rank runs the same epochs over the same *global* batches (the run's shared generator draws them
identically everywhere) and computes on its own consecutive slice of each (`local`). Whatever must stay
identical on every rank is rebuilt from all the ranks' slices (`gather`): the prediction tables, the
division's probabilities, the contrastive queue and prototype updates, PRODEN's targets and every
evaluation's logits. DistributedDataParallel averages the gradients; BatchNorm running statistics are
averaged after each network's epoch (gloo has no SyncBatchNorm; `--sync-bn` on CUDA). Rank 0 alone decides
what touches the run folder (`decide`) and writes it; its decisions reach the other ranks (`share`).

A Group of one process (no torchrun) communicates nothing: `local` and `gather` return their argument, so a
one-process run is the same code, bit for bit, as before distribution existed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from coreg_edge.errors import FollowerExit, UserError
from coreg_edge.utils import one_line, torchrun_world

T = TypeVar("T")

#: How long a rank waits for the others at a collective (rank 0 may be decoding a large folder into the disk
#: cache meanwhile); COREG_EDGE_DIST_TIMEOUT_MIN overrides it.
TIMEOUT_MINUTES = 180


@dataclass(frozen=True)
class Group:
    """This process's place in the run: rank `rank` of `world` (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sizes(self, n: int) -> list[int] | None:
        """How a global batch of n items is split: consecutive slices, sizes differing by at most one.
        None when it is not split: one process, or fewer than 2 items per rank (every rank then computes
        all of them: BatchNorm cannot normalise a slice of one image)."""
        if not self.active or n < 2 * self.world:
            return None
        base, extra = divmod(n, self.world)
        return [base + (1 if r < extra else 0) for r in range(self.world)]

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (the whole batch when it is not split)."""
        sizes = self.sizes(len(batch))
        if sizes is None:
            return batch
        start = sum(sizes[: self.rank])
        return batch[start : start + sizes[self.rank]]

    def gather(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's `local` slice of a global batch of n items, joined in the batch's order (the inverse
        of `local`); padded to the longest slice for the collective, trimmed after. A batch that was not
        split (too small) is rank 0's on every rank: each rank computed it on its own draws."""
        if not self.active or n == 0:
            return local
        as_bool = local.dtype == torch.bool  # gloo has no bool collectives
        value = local.to(torch.uint8) if as_bool else local
        sizes = self.sizes(n)
        if sizes is None:
            joined = value.clone().contiguous()
            dist.broadcast(joined, src=0)
        else:
            padded = value.new_zeros((max(sizes), *value.shape[1:]))
            padded[: len(value)] = value
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded)
            joined = torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])
        return joined.bool() if as_bool else joined

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All ranks' `tensor` summed, in place (one process: unchanged)."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def broadcast_(self, *tensors: torch.Tensor) -> None:
        """Rank 0's values into every rank's tensors, in place: a decision made on floats (the GMM's split)
        must be one decision, even on machines whose CPUs round differently."""
        if self.active:
            for tensor in tensors:
                value = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
                dist.broadcast(value, src=0)
                if value is not tensor:
                    tensor.copy_(value.bool())

    def average_buffers(self, net: torch.nn.Module) -> None:
        """Mean of the floating-point buffers (BatchNorm running statistics) over ranks, in one collective:
        each rank normalised its own slices, and the next evaluation must see one network."""
        if not self.active:
            return
        buffers = [b for b in net.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()

    def share(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def collect(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def decide(self, decision: Callable[[], T]) -> T:
        """Rank 0 runs `decision` (checks of the run folder, reading its config) and every rank gets its
        result; when it fails, rank 0 raises its one-line error and the other ranks stop without a word."""
        if not self.active:
            return decision()
        if not self.is_main:
            outcome, value = self.share(None)
            if outcome == "error":
                raise FollowerExit(value)
            return value
        try:
            result = decision()
        except BaseException as exc:
            self.share(("error", getattr(exc, "exit_code", 1)))
            raise
        self.share(("ok", result))
        return result

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may download a dataset or weights, or build the disk cache), then
        the others, which find what it made. A failure anywhere stops every rank: rank 0 raises its own
        error, or one naming the rank that failed, which itself stops without a word (rank 0 speaks)."""
        if not self.active:
            yield
            return
        if not self.is_main:
            outcome, code = self.share(None)
            if outcome == "error":
                raise FollowerExit(code)
        try:
            yield
        except BaseException as exc:
            code = getattr(exc, "exit_code", 1)
            if self.is_main:
                self.share(("error", code))
                raise
            message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {one_line(exc)}"
            self.collect((code, message))
            raise FollowerExit(code) from exc
        if self.is_main:
            self.share(("ok", None))
        for rank, failure in enumerate(self.collect(None)):
            if failure is not None:
                if not self.is_main:
                    raise FollowerExit(failure[0])
                error = UserError(f"process {rank} of {self.world}: {failure[1]}")
                error.exit_code = failure[0]
                raise error


ONE_PROCESS = Group()  # the default: no torchrun


@contextlib.contextmanager
def joined() -> Iterator[Group]:
    """The Group of this process: one process without torchrun; under torchrun (WORLD_SIZE > 1) the
    process group is joined here (gloo for CPU tensors, nccl for CUDA ones) and left at the end."""
    world = torchrun_world()
    if world == 1:
        yield ONE_PROCESS
        return
    env = os.environ
    local_rank = _whole(env, "LOCAL_RANK", 0)
    ours = not dist.is_initialized()
    if ours:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        minutes = _whole(env, "COREG_EDGE_DIST_TIMEOUT_MIN", TIMEOUT_MINUTES)
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes))
        except (RuntimeError, ValueError) as exc:
            raise UserError(
                f"could not join the torchrun group of {world} processes ({one_line(exc)})"
            ) from exc
    group = Group(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                  backend=str(dist.get_backend()))  # fmt: skip
    try:
        with warnings.catch_warnings():
            if not group.is_main:
                warnings.simplefilter("ignore")  # rank 0 warns once for the run
            yield group
    finally:
        if ours and dist.is_initialized():
            with contextlib.suppress(RuntimeError):
                dist.destroy_process_group()


def _whole(env: dict[str, str] | os._Environ, name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise UserError(f"{name}={env[name]!r} must be a whole number") from None


def wrap(
    net: torch.nn.Module, group: Group, device: torch.device, sync_bn: bool
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the network, what gradient forwards call): `net` twice in one process; under torchrun the network
    (with SyncBatchNorm layers when asked) and its DistributedDataParallel. Buffers are not broadcast at
    every forward (average_buffers keeps them one); unused parameters are found (the projection head sits
    out the warm-up and the baselines)."""
    if not group.active:
        return net, net
    if sync_bn:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)  # the same Parameter objects, new BN modules

    ids = [device.index if device.index is not None else group.local_rank] if device.type == "cuda" else None
    # Buffers synced once at the start, not at every forward (newer torch names that forward_sync_buffers).
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    ddp = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True, **no_sync)
    return net, ddp


def weights_fingerprint(state: dict[str, Any]) -> str:
    """A digest of every tensor in `state` (nested dicts of state_dicts), to check after training that all
    ranks hold one run: networks, key encoders, queues, tables, the prototype bank."""
    digest = hashlib.sha256()

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                add(f"{prefix}.{key}", value[key])
        elif isinstance(value, torch.Tensor):
            digest.update(prefix.encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif value is not None:
            digest.update(f"{prefix}={value!r}".encode())

    add("", state)
    return digest.hexdigest()


def rank_seed(seed: int, group: Group, stream: int = 0) -> int:
    """Per-rank randomness: the augmentations (stream 0; rank 0 keeps the run's seed) and MixUp's order
    (stream 1, apart from the batch order's generator)."""
    return seed + 1_000_003 * group.rank + 7_919 * stream
