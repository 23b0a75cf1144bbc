"""`llamabin build`: one GGUF in, one self-launching executable out."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from packager import progress
from packager.elf import ElfError, insert_payload
from packager.errors import BuildError
from packager.gguf_info import GGUFInfo, read_gguf_info
from packager.replacing import check_replaceable, disk_error, remove, replacing, temporary
from packager.runtime import check_lib_dir, has_cpu_variants, installed_lib_dir, runtime_executable
from packager.sidecar import write_sidecar
from packager.targets import Runtime, extract, find_runtime, host_target, is_windows
from packager.versions import build_versions
from payload.errors import UsageError
from payload.find import sidecar_path
from payload.flags import baked_context, split_baked_args
from payload.manifest import ManifestError, check_encodable, encode_manifest


@dataclass(frozen=True)
class BuildOptions:
    model: Path
    output: Path | None = None
    name: str | None = None
    system_prompt: str | None = None
    ctx_size: int | None = None
    template: str | None = None
    license_text: str | None = None  # read by the command line (packager.license_text)
    runtime_args: tuple[str, ...] = ()
    sidecar: bool | None = None  # None: only where the platform needs it
    verbose: bool = False
    llama_lib: Path | None = None  # llama.cpp libraries to ship; None: the installed wheel's
    target: str | None = None  # e.g. linux-aarch64 (packager.targets.KNOWN); None: this machine's
    find_links: tuple[Path, ...] = ()  # wheelhouses to take runtime wheels from
    no_index: bool = False  # never ask pip's index for a runtime
    gguf_file: str | None = None  # the GGUF's file name to record; None: the model's (--quant's is temporary)
    lora: dict[str, Any] | None = None  # a LoRA adapter after the weights in the blob: the manifest's `lora`
    force: bool = False  # replace an existing output that is not a llamabin executable
    inputs: tuple[Path, ...] = ()  # the user's own files (before --quant, --lora, a conversion): never written over


@dataclass(frozen=True)
class BuildResult:
    executable: Path
    sidecar: Path | None
    manifest: dict[str, Any] = field(default_factory=dict)


def target_tag() -> str:
    """OS and architecture of this machine, as in SmolLM2-135M-Instruct.Q4_1-linux-x86_64."""
    return host_target()


def build_target(opts: BuildOptions) -> str:
    """The target this build writes a file for."""
    return opts.target or host_target()


def output_path(opts: BuildOptions) -> Path:
    target = build_target(opts)
    name = f"{opts.name or opts.model.stem}-{target}" + (".exe" if is_windows(target) else "")
    if opts.output is None:
        return Path("dist") / name
    return opts.output / name if opts.output.is_dir() else opts.output


def build(opts: BuildOptions, say: Callable[[str], None]) -> BuildResult:
    out = output_path(opts)
    target = build_target(opts)
    _check_writable(out.parent)
    check_replaceable(out, (opts.model, *opts.inputs), opts.force)
    say(f"reading {opts.model}")
    info = read_gguf_info(opts.model)
    args = _baked_args(opts)
    check_baked_context(args, info.context_length)
    use_sidecar = opts.sidecar if opts.sidecar is not None else _needs_sidecar(target, info.size)
    if use_sidecar:
        check_replaceable(sidecar_path(out), (opts.model, *opts.inputs), opts.force)
    template = _baked_template(opts.template)
    found = find_target_runtime(opts)  # before minutes of hashing: a missing runtime is found at once
    digest = _sha256(opts.model, info.size)
    manifest = _manifest(opts, info, digest, args, template, out)
    runtime = select_runtime(opts, say)
    runs_here = target == host_target()  # a file for another machine cannot be started here
    # Written under a temporary name and started there: whatever was at
    # `out` stays until the new file has run once.
    tmp_side = sidecar_path(temporary(out))  # where the staged file looks for its weights
    try:
        with replacing(out, None, check=runs_here) as tmp_exe:
            if use_sidecar:
                _write_with_sidecar(runtime, tmp_exe, tmp_side, opts.model, manifest, info.size)
            else:
                _write_inside(runtime, tmp_exe, opts.model, manifest, info.size)
            if runs_here:
                say(f"checking the result (runtime from {found.origin})")
        if use_sidecar:
            os.replace(tmp_side, sidecar_path(out))
    except OSError as exc:
        raise disk_error(exc, sidecar_path(out)) from None
    finally:
        remove(tmp_side)  # gone already unless something failed
    if not runs_here:
        say(f"note: not started here: a {target} file runs only on {target} (this machine is {host_target()})")
    return BuildResult(out, sidecar_path(out) if use_sidecar else None, manifest)


def find_target_runtime(opts: BuildOptions) -> Runtime:
    """Where the runtime for the build's target comes from (packager.targets;
    --llama-lib means the one frozen here from the source tree)."""
    return _find_runtime(build_target(opts), opts.find_links, opts.no_index, opts.llama_lib is not None)


@functools.cache
def _find_runtime(target: str, find_links: tuple[Path, ...], no_index: bool, source_only: bool) -> Runtime:
    return find_runtime(target, find_links, no_index, source_only)


_EXTRACTED: list[tempfile.TemporaryDirectory[str]] = []  # removed at exit


def select_runtime(opts: BuildOptions, say: Callable[[str], None]) -> Path:
    """The runtime executable a file gets (`build`, and `upgrade` too)."""
    found = find_target_runtime(opts)
    if not found.from_source:
        say(f"runtime for {found.target}: {found.origin}")
        tmp = tempfile.TemporaryDirectory(prefix="llamabin-runtime-")
        _EXTRACTED.append(tmp)
        return extract(found, Path(tmp.name))
    say("preparing the runtime (built once, then cached)")
    lib_dir = check_lib_dir(opts.llama_lib or installed_lib_dir())
    if lib_dir is None or not has_cpu_variants(lib_dir):
        say(
            "note: llama.cpp comes from the installed llama-cpp-python, compiled for this machine's CPU;"
            " on an older CPU the file may stop with 'Illegal instruction'."
            " For one file that runs on any x86-64 CPU, pass --llama-lib with the folder"
            " `scripts/build-llama-cpp.sh portable` prints"
        )
    return runtime_executable(lib_dir, opts.verbose)


def runtime_versions(opts: BuildOptions) -> dict[str, str]:
    """What the manifest records of the runtime select_runtime gives."""
    found = find_target_runtime(opts)
    if found.meta is not None:
        return {str(k): str(v) for k, v in dict(found.meta.get("versions") or {}).items()}
    return build_versions(opts.llama_lib)


def _needs_sidecar(target: str, size: int) -> bool:
    """Only the Linux (ELF) insertion is written. Elsewhere, where
    executables also stop at about 4 GiB, the weights go beside the file
    (docs/payload-layout.md); `size` will matter once PE and Mach-O insertion
    exist for models under that cap."""
    return not target.startswith("linux-")


def _baked_args(opts: BuildOptions) -> list[str]:
    args: list[str] = []
    if opts.system_prompt is not None:
        args += ["--system-prompt", opts.system_prompt]
    if opts.ctx_size is not None:
        args += ["--ctx-size", str(opts.ctx_size)]
    if opts.template is not None and not Path(opts.template).is_file():
        args += ["--template", opts.template]
    refused = split_baked_args(list(opts.runtime_args)).refused
    if refused:
        raise BuildError(refused_message(refused))
    return args + list(opts.runtime_args)


def check_baked_context(args: list[str], trained: int | None) -> None:
    """A built-in context above the trained one (--ctx-size, or -c after
    `--`) would make every run refuse to start, unless --ctx-force is built
    in beside it (as the runtime asks)."""
    size, force = baked_context(args)
    if size and trained and size > trained and not force:
        raise UsageError(
            f"a built-in context of {size} tokens is above the {trained} tokens this model was trained for;"
            " every run would refuse it (add `-- --ctx-force` to build it in anyway)"
        )


def refused_message(refused: list[str]) -> str:
    """Why flags after `--` cannot be built in: one line naming them."""
    verb = "is" if len(refused) == 1 else "are"
    hint = (
        ", and a template file goes in with --template FILE" if any(r.startswith("--template") for r in refused) else ""
    )
    return f"{' '.join(refused)} {verb} not allowed as a built-in default: only model, sampling and context flags are{hint}"


def _baked_template(choice: str | None) -> dict[str, str] | None:
    """A template file is built in as text, so the file need not travel."""
    from templates import BUILTIN_NAMES, TemplateError, from_file

    if choice is None:
        return None
    if choice in BUILTIN_NAMES:
        return None
    if not Path(choice).is_file():
        names = ", ".join(BUILTIN_NAMES)
        raise BuildError(f"unknown template '{choice}': use one of {names}, or a path to a Jinja file")
    try:
        # The EOS text is the runtime's to know (_template_label): a stand-in
        # keeps a template that ends turns with eos_token (Mistral's,
        # Llama 2's) from being refused here for want of a marker.
        tpl = from_file(choice, eos_token="</s>")
    except TemplateError as exc:
        raise BuildError(str(exc)) from None
    return {"name": tpl.name, "source": tpl.source}


def _template_label(info: GGUFInfo, choice: str | None) -> str:
    """The template the file will chat with, as `inspect` shows it.  Without
    --template it is the model's own, which must load: a file whose every
    chat would fail is refused, naming the way out."""
    from templates import BUILTIN_NAMES, TemplateError, resolve

    if choice is not None:  # the model's own is never used, so it may be broken
        return Path(choice).name if Path(choice).is_file() else choice
    meta = {"general.architecture": info.architecture}
    if info.chat_template:
        meta["tokenizer.chat_template"] = info.chat_template
    try:
        # Only the runtime knows the EOS text, once llama.cpp reads the
        # vocabulary; a stand-in keeps a template that names no end-of-turn
        # marker of its own from being refused here for want of one.
        tpl = resolve(None, meta, eos_token="</s>")
    except TemplateError as exc:
        names = ", ".join(BUILTIN_NAMES)
        raise BuildError(f"{exc}; build the file with another: --template {names}, or a Jinja file") from None
    return "the model's own" if tpl.origin == "gguf" else f"{tpl.name} (chosen by architecture)"


def _manifest(
    opts: BuildOptions, info: GGUFInfo, digest: str, args: list[str], template: dict[str, str] | None, out: Path
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format": 1,
        "name": out.name.removesuffix(".exe"),
        "target": build_target(opts),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gguf": {
            "file": opts.gguf_file or info.path.name,
            "size": info.size,
            "sha256": digest,
            "model_name": info.name,
            "architecture": info.architecture,
            "quantization": info.quantization,
            "context_length": info.context_length,
        },
        "defaults": {"args": args},
        "template": _template_label(info, opts.template),
        "license": {"name": info.license, "text": opts.license_text},
        "versions": runtime_versions(opts),
    }
    if template is not None:
        manifest["chat_template"] = template
    if opts.lora is not None:
        manifest["lora"] = opts.lora
    try:  # never write one the runtime would refuse (text from argv may hold lone surrogates)
        check_encodable(manifest)
    except ManifestError as exc:
        raise BuildError(f"cannot write this file's manifest: {exc}") from None
    return manifest


_DIGESTS: dict[tuple[str, int, int], str] = {}  # one hash for a build of several targets


def _sha256(path: Path, size: int) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash_file(path, size)
    return _DIGESTS[key]


def _hash_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f, progress.bar(size, "hashing weights") as update:
        while block := f.read(1 << 20):
            h.update(block)
            update(len(block))
    return h.hexdigest()


def _write_inside(runtime: Path, out: Path, model: Path, manifest: dict[str, Any], size: int) -> None:
    with progress.bar(size, "writing executable") as update:
        try:
            insert_payload(runtime, out, model, encode_manifest(manifest), update)
        except ElfError as exc:
            raise BuildError(f"cannot put the weights inside the runtime: {exc}") from None


def _write_with_sidecar(runtime: Path, out: Path, side: Path, model: Path, manifest: dict[str, Any], size: int) -> None:
    import shutil

    shutil.copy2(runtime, out)
    with progress.bar(size, "writing sidecar") as update:
        write_sidecar(model, side, encode_manifest(manifest), update)


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create output directory {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise BuildError(f"cannot write to {directory}: permission denied")


def iter_manifest_lines(manifest: dict[str, Any]) -> Iterator[str]:
    """`inspect`'s view of a manifest."""
    gguf = manifest.get("gguf", {})
    versions = manifest.get("versions", {})
    lic = manifest.get("license") or {}
    yield f"name:             {manifest.get('name')}"
    yield f"target:           {manifest.get('target')}"
    yield f"model:            {gguf.get('model_name')} ({gguf.get('file')})"
    yield f"architecture:     {gguf.get('architecture')}"
    yield f"quantization:     {gguf.get('quantization')}"
    yield f"weights:          {gguf.get('size', 0):,} bytes, sha256 {gguf.get('sha256')}"
    yield f"trained ctx:      {gguf.get('context_length')} tokens"
    baked = split_baked_args(manifest["defaults"]["args"])
    yield f"defaults:         {' '.join(baked.allowed) or '(none)'}"
    if baked.refused:
        yield f"ignored defaults: {' '.join(baked.refused)} (the runtime never applies these)"
    yield f"template:         {manifest.get('template')}"
    lora = manifest.get("lora")
    if lora:
        yield (
            f"lora:             {lora.get('file')} ({lora.get('size', 0):,} bytes after the weights),"
            f" applied at run time, scale {lora.get('scale'):g}"
        )
    yield f"license:          {lic.get('name') or 'unknown'}" + (" (text included)" if lic.get("text") else "")
    for key in ("llamabin", "llama-cpp-python", "llama.cpp", "cpu kernels", "pyinstaller"):
        yield f"{key + ':':<18}{versions.get(key, 'unknown')}"
    yield f"built:            {manifest.get('created')}"
