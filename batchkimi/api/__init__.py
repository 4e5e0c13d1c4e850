"""Wire codecs for Model Studio's two APIs. Vendor vocabulary stops here."""

from __future__ import annotations

from batchkimi.api.base import WireProtocol
from batchkimi.api.compatible import CompatibleProtocol
from batchkimi.api.native import NativeProtocol


def protocol_for(api: str) -> WireProtocol:
    """The codec for ``openai`` (compatible mode) or ``dashscope`` (native)."""
    if api == "openai":
        return CompatibleProtocol()
    if api == "dashscope":
        return NativeProtocol()
    msg = f"unknown api {api!r}"
    raise ValueError(msg)
