"""batchkimi: run batch jobs on Kimi models served by Alibaba Cloud Model Studio."""

from __future__ import annotations

__version__ = "0.1.0"
#: how every request introduces itself (the client and the temporary upload)
USER_AGENT = f"batchkimi/{__version__}"
