"""The temporary upload of local files (FACTS §5): the native API's way to send a
file too large for a data URL, up to 100 MB.

``GET {api}/uploads?action=getPolicy&model=…`` returns a signed policy; the file goes
by multipart form POST to the policy's ``upload_host`` (no Authorization header: the
policy is the credential); the request then names it ``oss://<upload_dir>/<name>``.
One policy serves many files until it nears expiry, and is renewed then, or at once if
the store answers that it expired; rows that need a policy at the same moment wait for
one request rather than each asking. Objects are bound to the model named in
getPolicy and live 48 hours, so a file asked about in several rows is uploaded once.
A getPolicy refusal is classified like any answer of the service: a bad key or an
account in arrears stops the run, as it would at the first request.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from batchkimi.api.base import error_fields, load_json
from batchkimi.api.failures import classify_failure
from batchkimi.clock import Clock
from batchkimi.credentials import ApiKey
from batchkimi.oncecache import OnceCache
from batchkimi.records import Failure
from batchkimi.version import USER_AGENT

RENEW_MARGIN_S = 15.0  # a policy this close to expiry is renewed, not used
#: FACTS §5: a temporary file lives 48 hours; reuse an upload for a little less
UPLOAD_REUSE_S = 47 * 3600.0
UPLOADS_REMEMBERED = 4_096  # recent uploads kept for reuse: memory stays bounded
UPLOAD_FAILED = "upload_failed"

_FileKey = tuple[str, str, int, int]  # model, path, size, mtime


class UploadError(Exception):
    """An upload that failed, classified: try again later (``transient``), give up on
    the row (``row``), or stop the run (``fatal``, the account was refused)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _upload_failure(status: int | None, message: str) -> UploadError:
    """A failed form POST to the store: worth retrying on 5xx, 429 and lost
    connections; otherwise the store refused this file."""
    retry = status is None or status >= 500 or status == 429
    kind = "transient" if retry else "row"
    return UploadError(Failure(kind, UPLOAD_FAILED, message, status))


@dataclass(slots=True)
class _Policy:
    data: dict[str, Any]
    expires_at: float  # monotonic seconds


class TemporaryUploader:
    """Uploads files for one account and endpoint, reusing each model's policy."""

    def __init__(
        self,
        key: ApiKey,
        api_base: str,  # the native base, e.g. https://dashscope.aliyuncs.com/api/v1
        *,
        clock: Clock,
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._key = key
        self._policy_url = f"{api_base.rstrip('/')}/uploads"
        self._clock = clock
        self._policies: dict[str, _Policy] = {}
        self._policy_locks: dict[str, asyncio.Lock] = {}
        #: (model, path, size, mtime) -> its oss:// URL, while the upload lives
        self._uploaded: OnceCache[_FileKey, str] = OnceCache(
            size=UPLOADS_REMEMBERED, now=clock.monotonic, max_age_s=UPLOAD_REUSE_S
        )
        self._http = httpx.AsyncClient(
            transport=transport or AiohttpTransport(trust_env=False),
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
            follow_redirects=False,
        )
        self.policies_fetched = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def upload(self, model: str, path: Path, mime: str) -> str:
        """Upload ``path`` for ``model``; its ``oss://`` URL. Rows asking for the same
        file at once share one upload; later rows reuse it while it lives."""
        facts = await asyncio.to_thread(path.stat)
        key = (model, str(path), facts.st_size, facts.st_mtime_ns)
        return await self._uploaded.get(key, lambda: self._upload(model, path, mime))

    async def _upload(self, model: str, path: Path, mime: str) -> str:
        stale: _Policy | None = None
        for _ in range(2):
            policy = await self._policy(model, stale=stale)
            response = await self._post(policy.data, path, mime)
            if response.status_code == 200:
                return f"oss://{self._key_for(policy.data, path)}"
            expired = response.status_code == 403 and b"expired" in response.content
            if not expired:
                break
            stale = policy
        msg = (
            f"the temporary upload of {path.name} failed: HTTP {response.status_code} "
            f"{response.text[:200]}"
        )
        raise _upload_failure(response.status_code, msg)

    async def _policy(self, model: str, *, stale: _Policy | None = None) -> _Policy:
        """The model's policy: the cached one while it has time left and is not
        ``stale`` (refused by the store), else a new one, asked for once however
        many rows are waiting for it."""
        lock = self._policy_locks.setdefault(model, asyncio.Lock())
        async with lock:
            cached = self._policies.get(model)
            left = cached.expires_at - self._clock.monotonic() if cached else 0.0
            if cached is not None and cached is not stale and left > RENEW_MARGIN_S:
                return cached
            return await self._fetch_policy(model)

    async def _fetch_policy(self, model: str) -> _Policy:
        now = self._clock.monotonic()
        try:
            response = await self._http.get(
                self._policy_url,
                params={"action": "getPolicy", "model": model},
                headers={
                    "Authorization": f"Bearer {self._key.reveal()}",
                    "Accept": "application/json; charset=utf-8",
                },
            )
        except httpx.HTTPError as exc:
            msg = f"cannot get an upload policy: {type(exc).__name__}"
            raise UploadError(classify_failure(None, "connection_error", msg)) from None
        data = _policy_data(response)
        policy = _Policy(data, now + float(data.get("expire_in_seconds") or 300))
        self._policies[model] = policy
        self.policies_fetched += 1
        return policy

    @staticmethod
    def _key_for(data: dict[str, Any], path: Path) -> str:
        # a short hash of the whole path keeps two files of one name apart
        tag = hashlib.sha256(str(path).encode()).hexdigest()[:10]
        return f"{data['upload_dir']}/{tag}-{path.name}"

    async def _post(
        self, data: dict[str, Any], path: Path, mime: str
    ) -> httpx.Response:
        fields = {
            "OSSAccessKeyId": data["oss_access_key_id"],
            "Signature": data["signature"],
            "policy": data["policy"],
            "key": self._key_for(data, path),
            "x-oss-object-acl": data.get("x_oss_object_acl", "private"),
            "x-oss-forbid-overwrite": data.get("x_oss_forbid_overwrite", "true"),
            "success_action_status": "200",
            "x-oss-content-type": mime,
        }
        try:
            with path.open("rb") as handle:
                return await self._http.post(
                    data["upload_host"],
                    data=fields,
                    files={"file": (path.name, handle, mime)},
                    headers={"Accept": "application/json"},
                )
        except httpx.HTTPError as exc:
            msg = f"the temporary upload of {path.name} failed: {type(exc).__name__}"
            raise _upload_failure(None, msg) from None


def _policy_data(response: httpx.Response) -> dict[str, Any]:
    """The policy in a getPolicy answer; a refusal is classified as the service's
    errors are (a bad key is fatal, a 5xx transient), and otherwise fails the row."""
    body = load_json(response.content)
    data = body.get("data") if isinstance(body, dict) else None
    needed = ("policy", "signature", "upload_dir", "upload_host", "oss_access_key_id")
    if (
        response.status_code == 200
        and isinstance(data, dict)
        and all(isinstance(data.get(k), str) for k in needed)
    ):
        return data
    code, message = error_fields(body)
    detail = f"HTTP {response.status_code}" + (f" {code}: {message}" if code else "")
    failure = classify_failure(
        response.status_code,
        code,
        f"cannot get an upload policy: {detail}",
        request_id=response.headers.get("x-request-id"),
    )
    if failure.kind != "fatal":  # the row's error says which step failed
        failure = Failure(
            failure.kind, UPLOAD_FAILED, failure.message, failure.http_status
        )
    raise UploadError(failure)
