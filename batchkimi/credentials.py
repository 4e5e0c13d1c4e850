"""The API key as a type that never prints itself.

``DASHSCOPE_API_KEY`` is the only place a key comes from; ``reveal()`` is called in
exactly one place, where the Authorization header is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from batchkimi.errors import ConfigError

ENV_VAR = "DASHSCOPE_API_KEY"
#: a placeholder the simulator accepts; never a real key
SIMULATOR_KEY = "sk-simulator-local"


class ApiKey:
    """A secret whose ``str`` and ``repr`` are masked."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        if not secret or secret != secret.strip():
            msg = "an API key must be non-empty and have no surrounding white space"
            raise ValueError(msg)
        self._secret = secret

    def reveal(self) -> str:
        """The secret itself: only for building the Authorization header."""
        return self._secret

    def masked(self) -> str:
        return f"sk-…{self._secret[-4:]}" if len(self._secret) > 12 else "sk-…"

    def __repr__(self) -> str:
        return f"ApiKey({self.masked()})"

    __str__ = masked

    def __reduce__(self) -> tuple[object, ...]:
        msg = "an ApiKey is never pickled"
        raise TypeError(msg)


def read_api_key(environ: Mapping[str, str] | None = None) -> ApiKey:
    """Read the key from the environment, or explain how to provide it."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR, "").strip()
    if not value:
        msg = (
            f"no API key: set {ENV_VAR} to a Model Studio key for your region "
            "(or add --simulate to run against the bundled simulator, no key needed)"
        )
        raise ConfigError(msg)
    if problem := header_problem(value):
        msg = (
            f"{ENV_VAR} holds {problem}, which an HTTP header cannot carry: the key "
            "was pasted with something else. Set it to the key alone"
        )
        raise ConfigError(msg)
    return ApiKey(value)


def check_key_if_set(environ: Mapping[str, str] | None = None) -> None:
    """``plan``'s part: a key that is set must be one ``run`` would take, so a plan
    that passes is a run that starts (a plan needs no key at all)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR, "").strip():
        read_api_key(env)


def header_problem(secret: str) -> str | None:
    """What in ``secret`` an Authorization header cannot carry (described without
    showing the secret), or None. Header values are visible ASCII and spaces."""
    for position, char in enumerate(secret, start=1):
        if char in "\r\n":
            return f"a line break (character {position})"
        if char == " ":
            return f"a space (character {position})"
        if not (" " <= char <= "~"):
            kind = "a non-ASCII" if ord(char) > 127 else "a control"
            return f"{kind} character (character {position})"
    return None
