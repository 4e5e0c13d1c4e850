"""batchkimi's version, and how every request introduces itself."""

from __future__ import annotations

__version__ = "0.1.0"
#: the User-Agent of every request (the client, the temporary upload, URL checks)
USER_AGENT = f"batchkimi/{__version__}"
