"""The two payload codecs of API.md §1, on the test's side (read and written independently of
firmware/wire.py), and request envelopes."""

from __future__ import annotations

import json
from typing import Any

import cbor2

#: API.md §1: a payload whose first non-blank byte is `{` is JSON, anything else CBOR.
BLANKS = b" \t\r\n"


def is_json(payload: bytes) -> bool:
    return payload.lstrip(BLANKS)[:1] == b"{"


def decode(payload: bytes) -> Any:  # noqa: ANN401 - whatever the payload holds
    """A payload in the codec it announces; raises what json or cbor2 raise on garbage."""
    return json.loads(payload) if is_json(payload) else cbor2.loads(payload)


def as_json(value: Any) -> bytes:  # noqa: ANN401
    return json.dumps(value).encode()


def as_cbor(value: Any) -> bytes:  # noqa: ANN401
    return cbor2.dumps(value)


def encode(codec: str, value: Any) -> bytes:  # noqa: ANN401
    """`value` as "json" or "cbor"."""
    return as_json(value) if codec == "json" else as_cbor(value)


def envelope(request_id: Any, op: Any, args: Any = None, **extra: Any) -> dict[str, Any]:  # noqa: ANN401
    """A request document (API.md §2): `args` left out when None; `extra` adds or replaces fields."""
    doc: dict[str, Any] = {"id": request_id, "op": op}
    if args is not None:
        doc["args"] = args
    return doc | extra
