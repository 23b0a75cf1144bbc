"""The model built into this executable: finding it, checking it, and the
defaults it was built with.

A packaged file carries the GGUF and a JSON manifest inside itself (see
docs/payload-layout.md), or, where the platform caps executables at 4 GiB, in
a sidecar `NAME.gguf` laid out the same way next to it. The weights are read
in place: nothing is extracted.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat.engine.llama import LoraAdapter, ModelSource
from chat.errors import ModelFileError
from chat.paths import NoHomeError, cache_dir, make_private_dir
from payload.find import Payload, find_payload
from payload.flags import BakedArgs, split_baked_args
from payload.footer import LayoutError
from payload.manifest import ManifestError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Bundle:
    payload: Payload

    @property
    def manifest(self) -> dict[str, Any]:
        return self.payload.manifest

    @property
    def source(self) -> ModelSource:
        return ModelSource(self.payload.path, self.payload.blob_offset)

    @property
    def baked(self) -> BakedArgs:
        """The runtime flags baked in at build time (like llamafile's .args),
        split into those a file may set and those it may not."""
        return split_baked_args(self.manifest["defaults"]["args"])

    @property
    def args(self) -> list[str]:
        """The baked flags that apply: only model, sampling and context ones."""
        return self.baked.allowed

    @property
    def lora(self) -> LoraAdapter | None:
        """An adapter built in after the weights (a quantized base's
        fine-tune), applied at run time."""
        entry = self.manifest.get("lora")
        if not isinstance(entry, dict):
            return None
        if entry["offset"] + entry["size"] > self.payload.blob_size:
            raise ModelFileError("this file's manifest places its LoRA adapter beyond its weights: download it again")
        return LoraAdapter(
            self.payload.path, float(entry["scale"]), self.payload.blob_offset + entry["offset"], entry["size"]
        )

    @property
    def chat_template(self) -> dict[str, str] | None:
        """A template file baked in at build time: {"name", "source"}."""
        tpl = self.manifest.get("chat_template")
        return tpl if isinstance(tpl, dict) else None


def find_bundle(executable: Path | None = None) -> Bundle | None:
    """The payload of the running executable (or of its sidecar), or None
    when this is a plain runtime such as `python -m chat`."""
    if executable is None:
        if not getattr(sys, "frozen", False):
            return None
        executable = Path(sys.executable)
    try:
        payload = find_payload(executable)
    except ManifestError as exc:
        whose = "this file's" if exc.path in (None, executable) else f"{exc.path.name}'s"
        raise ModelFileError(f"{whose} manifest is damaged: {exc}") from None
    except LayoutError as exc:
        raise ModelFileError(f"{exc.path or executable} is damaged ({exc}): download it again") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {exc.filename or executable}: {exc.strerror}") from None
    return None if payload is None else Bundle(payload)


def verify(bundle: Bundle, force: bool, progress: Callable[[int, int], None] | None = None) -> bool:
    """Check the weights against the manifest's sha256. A pass is remembered
    (by size, mtime, inode and manifest), so later launches skip the full
    read; returns False when the check was skipped for that reason."""
    key = _verified_key(bundle)
    record = _record_path()
    if not force and record is not None and key in _read_record(record):
        return False
    digest = _sha256(bundle, progress)
    expected = bundle.manifest["gguf"]["sha256"]
    if digest != expected:
        raise ModelFileError(
            f"the weights in {bundle.payload.path} are corrupted (sha256 mismatch): download the file again"
        )
    if record is not None:
        _remember(record, key)
    return True


def _record_path() -> Path | None:
    """Where passed checks are remembered; None without a home to keep them
    in (then every launch checks: never trust a shared /tmp record)."""
    try:
        return cache_dir() / "verified.json"
    except NoHomeError:
        return None


def _sha256(bundle: Bundle, progress: Callable[[int, int], None] | None) -> str:
    h = hashlib.sha256()
    total = bundle.payload.blob_size
    with bundle.payload.path.open("rb") as f:
        f.seek(bundle.payload.blob_offset)
        done = 0
        while done < total:
            block = f.read(min(CHUNK, total - done))
            if not block:
                raise ModelFileError(f"{bundle.payload.path} is truncated: download it again")
            h.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _verified_key(bundle: Bundle) -> str:
    st = bundle.payload.path.stat()
    manifest = json.dumps(bundle.manifest, sort_keys=True).encode()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{hashlib.sha256(manifest).hexdigest()[:16]}"


def _read_record(record: Path) -> list[str]:
    try:
        keys = json.loads(record.read_text(encoding="utf-8"))
        return [str(k) for k in keys] if isinstance(keys, list) else []
    except (OSError, ValueError):
        return []


def _remember(record: Path, key: str) -> None:
    """Best effort: an unwritable cache only means verifying again next time."""
    try:
        keys = _read_record(record)[-31:] + [key]
        make_private_dir(record.parent)
        tmp = record.with_name(f"{record.name}.{key.replace(':', '-')}.tmp")
        tmp.write_text(json.dumps(keys), encoding="utf-8")
        tmp.replace(record)
    except OSError:
        pass
