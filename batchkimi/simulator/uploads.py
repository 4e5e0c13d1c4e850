"""The temporary-upload flow of FACTS §5: getPolicy, the OSS form POST, ``oss://`` URLs.

A policy is signed here and expires after ``expire_in_seconds``; an upload with an
expired or forged policy is refused as OSS refuses it (403, XML). An uploaded object is
bound to the model its policy was issued for: using it with another model fails, as the
documentation says it does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

MAX_FILE_SIZE_MB = 100  # FACTS §5: the example policy's max_file_size_mb


@dataclass(frozen=True, slots=True)
class StoredObject:
    model: str
    size: int
    content_type: str


class UploadError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def xml(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
            f"  <Code>{self.code}</Code>\n  <Message>{self.message}</Message>\n"
            "</Error>\n"
        ).encode()


class UploadStore:
    """Issues policies, accepts form uploads, and resolves ``oss://`` URLs."""

    def __init__(self, expire_s: float) -> None:
        self.expire_s = expire_s
        self._secret = secrets.token_bytes(16)
        self._objects: dict[str, StoredObject] = {}
        self._lock = threading.Lock()
        self.policies_issued = 0

    def _sign(self, policy: str) -> str:
        digest = hmac.new(self._secret, policy.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def issue_policy(self, model: str, upload_host: str) -> dict[str, Any]:
        """The ``data`` object of a getPolicy answer, with the keys the SDK reads."""
        now = time.time()
        upload_dir = (
            f"dashscope-instant/{hashlib.md5(model.encode()).hexdigest()}/"  # noqa: S324 - a folder name, not security
            f"{datetime.now(UTC):%Y-%m-%d}/{uuid.uuid4()}"
        )
        document = {
            "expiration": now + self.expire_s,
            "model": model,
            "conditions": [["starts-with", "$key", upload_dir]],
        }
        policy = base64.b64encode(json.dumps(document).encode()).decode()
        with self._lock:
            self.policies_issued += 1
        return {
            "policy": policy,
            "signature": self._sign(policy),
            "upload_dir": upload_dir,
            "upload_host": upload_host,
            "expire_in_seconds": int(self.expire_s),
            "max_file_size_mb": MAX_FILE_SIZE_MB,
            "capacity_limit_mb": 999999999,
            "oss_access_key_id": "LTAI-simulator",
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }

    def accept(self, content_type: str, body: bytes) -> str:
        """Store one multipart form upload; return its key, or raise UploadError."""
        fields, file_bytes, file_type = _parse_form(content_type, body)
        policy = fields.get("policy", "")
        if not policy or not hmac.compare_digest(
            self._sign(policy), fields.get("Signature", "")
        ):
            raise UploadError(
                403,
                "SignatureDoesNotMatch",
                "The request signature "
                "we calculated does not match the signature you provided.",
            )
        document = json.loads(base64.b64decode(policy))
        if time.time() > document["expiration"]:
            raise UploadError(
                403, "AccessDenied", "Invalid according to Policy: Policy expired."
            )
        key = fields.get("key", "")
        prefix = document["conditions"][0][2]
        if not key.startswith(prefix + "/"):
            raise UploadError(
                403,
                "AccessDenied",
                "Invalid according to Policy: "
                'Policy Condition failed: ["starts-with", "$key"]',
            )
        if file_bytes is None:
            raise UploadError(400, "InvalidArgument", "The form has no file field.")
        if len(file_bytes) > MAX_FILE_SIZE_MB * 1024 * 1024:
            raise UploadError(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size.",
            )
        stored = StoredObject(
            model=document["model"],
            size=len(file_bytes),
            content_type=fields.get("x-oss-content-type") or file_type,
        )
        with self._lock:
            self._objects[key] = stored
        return key

    def resolve(self, url: str, model: str) -> str | None:
        """Why ``oss://…`` cannot be used by ``model``, or None if it can."""
        key = url.removeprefix("oss://")
        with self._lock:
            stored = self._objects.get(key)
        if stored is None:
            return f"The file {url} does not exist or has expired."
        if stored.model != model:
            return (
                f"The file {url} was uploaded for model {stored.model} and cannot be "
                f"used with {model}."
            )
        return None


def _parse_form(
    content_type: str, body: bytes
) -> tuple[dict[str, str], bytes | None, str]:
    if "multipart/form-data" not in content_type:
        raise UploadError(400, "InvalidArgument", "Expected multipart/form-data.")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    file_bytes: bytes | None = None
    file_type = "application/octet-stream"
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if name == "file":
            file_bytes = payload
            file_type = part.get_content_type()
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, file_bytes, file_type
