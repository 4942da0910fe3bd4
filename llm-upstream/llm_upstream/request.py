"""One call to the fake provider: its JSON body, its knobs and what every
answer to it carries (an id, the provider's request-id header)."""

from __future__ import annotations

import dataclasses

from llm_upstream.knobs import Knobs


class BadRequest(ValueError):
    """A request the provider would refuse with 400 (said in its error shape)."""


@dataclasses.dataclass(frozen=True)
class Call:
    body: dict
    knobs: Knobs
    model: str
    #: Hex digits unique to this call; each API prefixes its ids with them.
    id: str
    #: Headers every answer to this call carries.
    headers: dict

    def list_field(self, name: str, within: dict | None = None, required: bool = True) -> list:
        value = (self.body if within is None else within).get(name)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise BadRequest(f"{name}: expected an array")
        return value

    def cap(self, name: str, within: dict | None = None, required: bool = False) -> int | None:
        """The output cap named ``name`` (None when absent and not required)."""
        value = (self.body if within is None else within).get(name)
        if value is None:
            if required:
                raise BadRequest(f"{name}: Field required")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequest(f"{name}: expected a non-negative integer, got {value!r}")
        return value
