"""Wire codecs for Model Studio's two APIs. Vendor vocabulary stops here."""

from __future__ import annotations

from batchkimi.api.base import WireProtocol
from batchkimi.api.compatible import CompatibleProtocol
from batchkimi.api.native import NativeProtocol
from batchkimi.catalogue import Catalogue


def protocol_for(api: str, catalogue: Catalogue | None = None) -> WireProtocol:
    """The codec for ``openai`` (compatible mode) or ``dashscope`` (native, which
    needs each model's path from the job's catalogue)."""
    if api == "openai":
        return CompatibleProtocol()
    if api == "dashscope":
        return NativeProtocol(catalogue)
    msg = f"unknown api {api!r}"
    raise ValueError(msg)
