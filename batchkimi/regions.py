"""Region + API + workspace id → the base URL to call (DESIGN.md, FACTS §7).

Pure: no network. A region that needs a workspace id and has none is a ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from batchkimi.errors import ConfigError

APIS = ("openai", "dashscope")
_SUFFIX = {"openai": "/compatible-mode/v1", "dashscope": "/api/v1"}


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    label: str
    workspace_host: str  # the ``{ws}.<region>.maas.aliyuncs.com`` region part
    legacy_host: str | None  # the region's shared domain, usable without a workspace


REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("cn-beijing", "China (Beijing)", "cn-beijing", "dashscope.aliyuncs.com"),
        Region("us", "US (Virginia)", "us-east-1", "dashscope-us.aliyuncs.com"),
        Region("eu-central-1", "Germany (Frankfurt)", "eu-central-1", None),
        Region("ap-southeast-1", "Singapore", "ap-southeast-1", None),
        Region("ap-northeast-1", "Japan (Tokyo)", "ap-northeast-1", None),
        Region("cn-hongkong", "China (Hong Kong)", "cn-hongkong", None),
    )
}
ALIASES = {"us-east-1": "us", "beijing": "cn-beijing", "frankfurt": "eu-central-1"}

# FACTS §7: the SDK checks the workspace id is a valid hostname label.
_WORKSPACE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def resolve_region(name: str) -> Region:
    key = ALIASES.get(name.lower(), name.lower())
    region = REGIONS.get(key)
    if region is None:
        known = ", ".join(REGIONS)
        msg = f"unknown region {name!r}: choose one of {known}"
        raise ConfigError(msg)
    return region


def base_url_for(api: str, region_name: str, workspace_id: str | None) -> str:
    """The documented base URL, e.g. ``https://dashscope.aliyuncs.com/api/v1``."""
    if api not in APIS:
        msg = f"unknown api {api!r}: choose openai (compatible mode) or dashscope"
        raise ConfigError(msg)
    region = resolve_region(region_name)
    if workspace_id:
        if not _WORKSPACE_ID.match(workspace_id):
            msg = (
                f"workspace id {workspace_id!r} is not a valid host name label: use "
                "the "
                "id shown in the Model Studio console, e.g. llm-abc123"
            )
            raise ConfigError(msg)
        host = f"{workspace_id}.{region.workspace_host}.maas.aliyuncs.com"
    elif region.legacy_host:
        host = region.legacy_host
    else:
        msg = (
            f"region {region.name} ({region.label}) is reached through a workspace "
            "domain: set --workspace-id (workspace_id in the job spec) to your "
            "workspace id from the Model Studio console"
        )
        raise ConfigError(msg)
    return f"https://{host}{_SUFFIX[api]}"


def api_base(api: str, base_url: str) -> str:
    """Accept a base URL as a host root or as the SDK base; return the SDK base.

    ``http://127.0.0.1:8000`` and ``http://127.0.0.1:8000/api/v1`` both give the latter
    for the native API, so a user can paste either form.
    """
    root = base_url.rstrip("/")
    suffix = _SUFFIX[api]
    return root if root.endswith(suffix) else root + suffix
