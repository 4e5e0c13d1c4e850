"""The temporary upload of local files (FACTS §5): the native API's way to send a
file too large for a data URL, up to 100 MB.

``GET {api}/uploads?action=getPolicy&model=…`` returns a signed policy; the file goes
by multipart form POST to the policy's ``upload_host`` (no Authorization header: the
policy is the credential); the request then names it ``oss://<upload_dir>/<name>``.
One policy serves many files until it nears expiry, and is renewed then, or at once if
the store answers that it expired. Objects are bound to the model named in getPolicy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from batchkimi import USER_AGENT
from batchkimi.clock import Clock
from batchkimi.credentials import ApiKey

RENEW_MARGIN_S = 15.0  # a policy this close to expiry is renewed, not used


class UploadError(Exception):
    """An upload that failed; ``transient`` when trying again later may work."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


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
        """Upload ``path`` for ``model``; its ``oss://`` URL."""
        for fresh in (False, True):
            policy = await self._policy(model, renew=fresh)
            response = await self._post(policy.data, path, mime)
            if response.status_code == 200:
                return f"oss://{self._key_for(policy.data, path)}"
            expired = response.status_code == 403 and b"expired" in response.content
            if not expired:
                break
        transient = response.status_code >= 500 or response.status_code == 429
        msg = (
            f"the temporary upload of {path.name} failed: HTTP {response.status_code} "
            f"{response.text[:200]}"
        )
        raise UploadError(msg, transient=transient)

    async def _policy(self, model: str, *, renew: bool) -> _Policy:
        now = self._clock.monotonic()
        cached = self._policies.get(model)
        if (
            cached is not None
            and not renew
            and cached.expires_at - now > RENEW_MARGIN_S
        ):
            return cached
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
            raise UploadError(msg, transient=True) from None
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
            raise UploadError(msg, transient=True) from None


def _policy_data(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    needed = ("policy", "signature", "upload_dir", "upload_host", "oss_access_key_id")
    if (
        response.status_code != 200
        or not isinstance(data, dict)
        or not all(isinstance(data.get(k), str) for k in needed)
    ):
        code = body.get("code") if isinstance(body, dict) else None
        msg = f"cannot get an upload policy: HTTP {response.status_code}" + (
            f" {code}" if code else ""
        )
        transient = response.status_code >= 500 or response.status_code == 429
        raise UploadError(msg, transient=transient)
    return data
