"""Request parameters a job or a manifest row may set, typed and ranged once.

The same model checks ``[parameters]`` in a job spec, ``--param`` on the command line
and a row's override columns, so a value means one thing wherever it is written.
Unset parameters are not sent: the service's own defaults apply (FACTS §1.3).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: the most tokens batchkimi lets a request ask for (the catalogue narrows it per model)
_MAX_TOKENS = 1_000_000


class Parameters(BaseModel):
    """The request parameters batchkimi knows, in its (and the service's) names."""

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", allow_inf_nan=False
    )

    temperature: Annotated[float | None, Field(ge=0.0, le=2.0)] = None
    top_p: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    presence_penalty: Annotated[float | None, Field(ge=-2.0, le=2.0)] = None
    max_tokens: Annotated[int | None, Field(ge=1, le=_MAX_TOKENS)] = None
    #: counts the chain of thought too (kimi-k2.5 and later; FACTS §1.3)
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=_MAX_TOKENS)] = None
    seed: Annotated[int | None, Field(ge=0, le=2**31 - 1)] = None
    stop: str | list[str] | None = None
    preserve_thinking: bool | None = None
    thinking_budget: Annotated[int | None, Field(ge=1, le=_MAX_TOKENS)] = None

    def as_items(self) -> tuple[tuple[str, Any], ...]:
        """The parameters that are set, sorted by name (what is sent and hashed)."""
        return tuple(sorted(self.model_dump(exclude_none=True).items()))


PARAMETER_NAMES = tuple(Parameters.model_fields)
#: the parameters a whole number must be given for (a manifest cell is text)
WHOLE_NUMBERS = frozenset(
    name
    for name, info in Parameters.model_fields.items()
    if "int" in str(info.annotation) and "float" not in str(info.annotation)
)


def parameter_problem(name: str, value: Any) -> str | None:
    """Why ``name = value`` cannot be sent, in words a user can act on; or None."""
    if name not in Parameters.model_fields:
        known = ", ".join(PARAMETER_NAMES)
        return f"{name!r} is not a request parameter (known: {known})"
    try:
        Parameters.model_validate({name: value})
    except ValidationError as exc:
        return f"{name} = {value!r}: {exc.errors()[0]['msg'].lower()}"
    return None
