"""The network and the Hugging Face hub: a bounded reachability probe and a cache-only mode, shared by CLIP
(annotate) and timm's pretrained backbones (train), so an offline machine fails in seconds, not minutes."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator


def network_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """A bounded reachability probe (DNS can hang; a thread caps it) so offline failures are fast."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Make huggingface_hub answer from its cache only, instantly, instead of retrying for ~40 s."""
    import huggingface_hub.constants as hub_constants  # lazy: optional dependency (open_clip's, train extra)

    previous = (hub_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    hub_constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous[0]
        if previous[1] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous[1]
