"""The manifest: a JSON object describing the weights and the file's defaults.

Its encoding (``encode_manifest``/``decode_manifest``) and its schema
(``check_manifest``), so that the packager and the runtime enforce one rule.
"""

from __future__ import annotations

import json
from typing import Any

from payload.footer import MAX_MANIFEST_SIZE, LayoutError

__all__ = [
    "MAX_MANIFEST_DEPTH",
    "MAX_MANIFEST_SIZE",
    "ManifestError",
    "check_manifest",
    "check_encodable",
    "decode_manifest",
    "encode_manifest",
]

MAX_MANIFEST_DEPTH = 16
"""Deepest nesting of lists and objects a manifest may have (ours has 3).

json.loads recurses, so a file of nested brackets would otherwise end in a
RecursionError, and so would anything that walks the result later."""


class ManifestError(LayoutError):
    """The footer is sound but the manifest is not one a runtime can use.

    The message says what is wrong without naming the manifest, so callers
    can say whose it is: "this file's manifest is damaged: {message}"."""


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """Canonical manifest bytes: sorted keys and ASCII-only, so builds are reproducible."""
    return json.dumps(manifest, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()


def check_encodable(manifest: dict[str, Any]) -> bytes:
    """The manifest's bytes, checked as a runtime will read them: the packer
    never writes one that every run of the file would refuse."""
    raw = encode_manifest(manifest)
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestError(
            f"it would be {len(raw):,} bytes, above the {MAX_MANIFEST_SIZE:,} a runtime reads"
            " (is the --license or --template file that large?)"
        )
    check_manifest(decode_manifest(raw))
    return raw


def decode_manifest(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes; it must be a JSON object of bounded depth,
    with text that can be printed (no lone surrogates)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        # ValueError covers JSONDecodeError and integers too long to convert.
        raise ManifestError(f"not valid JSON: {exc}") from exc
    except RecursionError:
        raise ManifestError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ManifestError("not a JSON object")
    _check_depth_and_text(value)
    return value


def _check_depth_and_text(value: Any) -> None:
    """Iterative, so that the check itself cannot recurse too deeply."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ManifestError("a string in it is not valid Unicode") from None
        elif isinstance(item, (dict, list)):
            if depth > MAX_MANIFEST_DEPTH:
                raise ManifestError("nested too deeply")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


# --- the manifest's schema ---------------------------------------------------
#
# Every field a runtime or `inspect` reads, with its type.  Required fields
# are the ones the runtime cannot work without; the others are descriptive
# and may be absent or null.  Unknown fields are allowed (newer builds may
# add some), but cannot be deeper than MAX_MANIFEST_DEPTH.

_Kind = Any  # str, int, "text list", "text map", or a nested _Spec
_Spec = dict[str, tuple[_Kind, bool]]  # field -> (kind, required)

_GGUF_SPEC: _Spec = {
    "file": (str, False),
    "size": (int, True),
    "sha256": (str, True),
    "model_name": (str, False),
    "architecture": (str, False),
    "quantization": (str, False),
    "context_length": (int, False),
}
_LORA_SPEC: _Spec = {  # an adapter in the blob after the weights, applied at run time
    "file": (str, False),
    "offset": (int, True),  # from the blob's start
    "size": (int, True),
    "scale": ("number", True),
}
_MANIFEST_SPEC: _Spec = {
    "format": (int, False),
    "name": (str, True),
    "target": (str, False),
    "created": (str, False),
    "gguf": (_GGUF_SPEC, True),
    "defaults": ({"args": ("text list", True)}, True),
    "template": (str, False),
    "chat_template": ({"name": (str, True), "source": (str, True)}, False),
    "license": ({"name": (str, False), "text": (str, False)}, False),
    "versions": ("text map", False),
    "lora": (_LORA_SPEC, False),
}
_KIND_NAMES = {
    str: "a string",
    int: "a whole number",
    "text list": "a list of strings",
    "text map": "an object of strings",
    "number": "a number",
}


def check_manifest(manifest: dict[str, Any]) -> None:
    """Raise ManifestError naming the first field of the wrong type, then
    the first required field that is missing."""
    _check_fields(manifest, _MANIFEST_SPEC, "")


def _check_fields(obj: dict[str, Any], spec: _Spec, where: str) -> None:
    # Wrong types first: "defaults must be an object" says more about a
    # damaged file than "name is missing" would.
    for key, (kind, _required) in spec.items():
        if obj.get(key) is not None and not _is_kind(obj[key], kind):
            what = "an object" if isinstance(kind, dict) else _KIND_NAMES[kind]
            raise ManifestError(f"{where}{key} must be {what}")
    for key, (kind, required) in spec.items():
        if required and obj.get(key) is None:
            raise ManifestError(f"{where}{key} is missing")
        if isinstance(kind, dict) and obj.get(key) is not None:
            _check_fields(obj[key], kind, f"{where}{key}.")


def _is_kind(value: Any, kind: _Kind) -> bool:
    if isinstance(kind, dict):
        return isinstance(value, dict)
    if kind == "text list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "text map":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:  # JSON true/false are bools, which Python counts as ints
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, kind)
