"""`llamabin build`, `inspect`, `upgrade` and `set`: parse, then hand over."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from packager.build import BuildOptions, build, iter_manifest_lines, output_path, refused_message, select_runtime
from packager.errors import BuildError
from packager.inputs import check_model_input, check_regular_file
from packager.license_text import read_license
from packager.lora import beside, is_quantized, merged
from packager.numbers import finite
from packager.quantize import check_options as check_quant_options
from packager.quantize import quantized, quantized_name
from packager.replacing import check_replaceable, folders_removed_on_failure
from packager.rewrite import NewDefaults, load_payload, set_defaults, upgrade
from packager.targets import available, host_target, known_targets, packer_version, parse_targets
from payload.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LlamabinError, UsageError
from payload.flags import split_baked_args

EPILOG = """\b
Examples:
  llamabin build SmolLM2-135M-Instruct.Q4_1.gguf
  llamabin build gemma.gguf --name gemma-3-270m --ctx-size 8192 --template gemma
  llamabin build model.gguf --system-prompt "you are a pirate" -- --temp 0.7 -n 256
  llamabin build model.gguf --target linux-x86_64,linux-aarch64 --find-links wheelhouse
  llamabin build gemma-2-2b-it.f16.gguf --quant Q4_K_M --imatrix imatrix.gguf
  llamabin build base-F16.gguf --lora my-finetune.gguf --quant Q4_K_M --template alpaca
  llamabin build ./my-llama-checkpoint --quant Q4_K_M
  llamabin targets
  llamabin inspect dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64
  llamabin upgrade dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64
  llamabin set dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 --system-prompt "be brief" -- --temp 0.2
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llamabin", message="llamabin %(version)s")
def group() -> None:
    """Turn a GGUF model into one self-launching executable."""


@group.command(context_settings={"show_default": True})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("runtime_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUNTIME_ARGS...]")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="Output file or directory (a name ending in / is a directory) [default: dist/].",
)
@click.option(
    "--name",
    callback=lambda _ctx, _param, value: _file_name(value),
    help="Base name of the file [default: the GGUF's file name].",
)
@click.option("--system-prompt", help="Default system prompt for the chat.")
@click.option("--ctx-size", "-c", type=click.IntRange(min=0), help="Default context size.")
@click.option("--template", metavar="NAME|FILE", help="Chat template to build in (a file is stored inside).")
@click.option(
    "--license", "license_file", type=click.Path(path_type=Path, dir_okay=False), help="License text to store inside."
)
@click.option(
    "--sidecar/--no-sidecar",
    default=None,
    help="Keep the weights in NAME.gguf next to the file [default: only where executables are capped at 4 GiB].",
)
@click.option(
    "--llama-lib",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="LLAMABIN_LLAMA_LIB",
    help="Folder of llama.cpp libraries to ship, e.g. the portable build that "
    "`scripts/build-llama-cpp.sh portable` prints [env LLAMABIN_LLAMA_LIB; "
    "default: the installed llama-cpp-python's, compiled for this CPU].",
)
@click.option(
    "--target",
    "target_spec",
    metavar="T[,T...]",
    callback=lambda _ctx, _param, value: _targets_option(value),
    help="Targets to build for, e.g. linux-aarch64 (`llamabin targets` lists them) [default: this machine's].",
)
@click.option(
    "--find-links",
    "find_links",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    metavar="DIR",
    help="A folder of llamabin-runtime wheels to take runtimes from (repeatable).",
)
@click.option(
    "--no-index", is_flag=True, help="Never ask pip's index for a runtime: only installed, --find-links, source."
)
@click.option(
    "--quant",
    metavar="TYPE",
    help="Quantize an F16, BF16 or F32 GGUF to TYPE first (Q4_K_M, Q8_0, IQ4_XS, ...: llama-quantize's names).",
)
@click.option(
    "--imatrix",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Importance matrix for --quant (llama-imatrix's GGUF output); the IQ1/IQ2 types need one.",
)
@click.option(
    "--lora",
    "lora_adapter",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A LoRA adapter GGUF: merged into an F16, BF16 or F32 MODEL (before --quant), packed beside a quantized one.",
)
@click.option(
    "--lora-scale",
    type=float,
    callback=lambda _ctx, _param, value: _finite(value),
    help="Strength of the --lora adapter [default: 1].",
)
@click.option("--force", is_flag=True, help="Replace an existing output file that is not a llamabin executable.")
@click.option("--verbose", is_flag=True, help="Show PyInstaller's output.")
def build_cmd(
    model: Path,
    runtime_args: tuple[str, ...],
    output: str | None,
    name: str | None,
    system_prompt: str | None,
    ctx_size: int | None,
    template: str | None,
    license_file: Path | None,
    sidecar: bool | None,
    llama_lib: Path | None,
    target_spec: list[str],
    find_links: tuple[Path, ...],
    no_index: bool,
    quant: str | None,
    imatrix: Path | None,
    lora_adapter: Path | None,
    lora_scale: float | None,
    force: bool,
    verbose: bool,
) -> None:
    """Build one executable from MODEL for this OS and architecture, or for each --target.

    MODEL is a GGUF, a Hugging Face checkpoint folder (Llama, Mistral, Gemma and
    Gemma 2 with a SentencePiece tokenizer; other architectures with llama.cpp's
    converter, which needs the convert-torch extra), or a keras-hub preset
    folder of Gemma or Gemma 2; a folder is converted first.

    Arguments after `--` become the file's default runtime flags (like
    llamafile's .args); flags given when running the file override them.
    Only model, sampling and context flags can be built in: not --host,
    --port, --api-key, a mode, or a flag that names a file.
    """
    # The folder the files go to: -o DIR/, an existing -o DIR, -o FILE's folder, or dist/.
    if output is None:
        out_dir = Path("dist")
    elif output.endswith(("/", os.sep)) or Path(output).is_dir():
        out_dir = Path(output)
    else:
        out_dir = Path(output).parent
    with folders_removed_on_failure(out_dir):
        convert_step = check_model_input(model)  # a folder's converter, or what to do with it
        for given in (imatrix, lora_adapter):
            if given is not None:
                check_regular_file(given)
        license_text = read_license(license_file) if license_file is not None else None  # a pipe is read once
        refused = split_baked_args(list(runtime_args)).refused
        if refused:  # a usage error (exit 2), found before minutes of hashing
            raise click.UsageError(refused_message(refused))
        if (
            len(target_spec) > 1
            and output is not None
            and not output.endswith(("/", os.sep))
            and not Path(output).is_dir()
        ):
            raise click.UsageError("with several targets, -o must be a directory (end it with /)")
        if output is not None and output.endswith(("/", os.sep)):
            try:
                Path(output).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BuildError(f"cannot create output directory {output}: {exc.strerror}") from None
        opts = BuildOptions(
            model,
            None if output is None else Path(output),
            name,
            system_prompt,
            ctx_size,
            template,
            license_text,
            runtime_args,
            sidecar,
            verbose,
            llama_lib,
            find_links=tuple(p.resolve() for p in find_links),
            no_index=no_index,
            force=force,
            # Never written over, not even with --force.
            inputs=tuple(
                p
                for p in (model, imatrix, lora_adapter, license_file, Path(template) if template else None)
                if p is not None
            ),
        )
        if output is not None and not output.endswith(("/", os.sep)) and not Path(output).is_dir():
            check_replaceable(Path(output), opts.inputs, force)  # before minutes of quantizing or converting
        quant_type = check_quant_options(quant, imatrix)  # before any work
        if lora_scale is not None and lora_adapter is None:
            raise click.UsageError("--lora-scale is used only with --lora ADAPTER")
        if quant_type is None and lora_adapter is None and convert_step is None:
            _build_targets(opts, target_spec)
            return
        workdir = output_path(opts).parent
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BuildError(f"cannot create output directory {workdir}: {exc.strerror}") from None
        base_name = model.resolve().name if convert_step else model.stem  # `build .` names the folder
        stem = quantized_name(base_name, quant_type) if quant_type else base_name
        name = name or (f"{stem}-{lora_adapter.stem}" if lora_adapter else stem)
        with ExitStack() as steps:  # each step's file is removed when the build ends, however it ends
            gguf = steps.enter_context(convert_step(model, workdir, _say)) if convert_step else model
            packed: dict[str, Any] | None = None
            scale = 1.0 if lora_scale is None else lora_scale
            if lora_adapter is not None and quant_type is None and is_quantized(gguf):
                # No full-precision weights to merge into: the adapter goes in
                # the file beside them, applied at each start.
                gguf, packed = steps.enter_context(beside(gguf, lora_adapter, scale, workdir, _say))
            elif lora_adapter is not None:
                gguf = steps.enter_context(merged(gguf, lora_adapter, scale, workdir, _say))
            if quant_type is not None:
                host_runtime = select_runtime(dataclasses.replace(opts, target=None), _say)
                gguf = steps.enter_context(quantized(gguf, quant_type, imatrix, workdir, host_runtime, _say))
            base_file = f"{name}.gguf" if packed is None else model.name
            _build_targets(
                dataclasses.replace(opts, model=gguf, name=name, gguf_file=base_file, lora=packed), target_spec
            )


def _build_targets(opts: BuildOptions, targets: list[str]) -> None:
    for target in targets:
        result = build(dataclasses.replace(opts, target=target), _say)
        click.echo(str(result.executable))
        if result.sidecar is not None:
            click.echo(f"the weights are in {result.sidecar}: ship both files together", err=True)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _targets_option(value: str | None) -> list[str]:
    try:
        return parse_targets(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


build_cmd.name = "build"


@group.command("targets")
@click.option(
    "--find-links",
    "find_links",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    metavar="DIR",
    help="Also look in this folder of llamabin-runtime wheels (repeatable).",
)
def targets_cmd(find_links: tuple[Path, ...]) -> None:
    """List the targets `build --target` knows, and where each one's runtime comes from."""
    version = packer_version()
    found = available(tuple(p.resolve() for p in find_links))
    for target in known_targets():
        here = " (this machine)" if target == host_target() else ""
        runtimes = found.get(target, [])
        usable = [r for r in runtimes if r.version == version]
        if usable:
            where = usable[0].origin + (f" (also: {'; '.join(r.origin for r in usable[1:])})" if usable[1:] else "")
        elif runtimes:
            where = f"none of version {version} ({runtimes[0].origin} is {runtimes[0].version})"
        else:
            where = f"none here; `build` asks pip for llamabin-runtime=={version}"
        click.echo(f"{target + here:<30} {where}")


@group.command("inspect")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--license", "show_license", is_flag=True, help="Print the license text stored inside.")
def inspect_cmd(file: Path, show_license: bool) -> None:
    """Show what a built file holds: model, defaults, template, license, versions."""
    payload = load_payload(file, UsageError)
    manifest = payload.manifest
    if show_license:
        click.echo((manifest.get("license") or {}).get("text") or "no license text is stored in this file")
        return
    click.echo(f"file:          {file}")
    click.echo(f"weights at:    byte {payload.blob_offset:,} of {payload.path.name}")
    for line in iter_manifest_lines(manifest):
        click.echo(line)


def _finite(value: float | None) -> float | None:
    if value is not None and finite(value) is None:  # NaN would make every merged weight NaN
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _file_name(value: str | None) -> str | None:
    """--name is a file's name, not a path: the file goes where -o says."""
    if value is not None and (not value.strip() or value in (".", "..") or "/" in value or os.sep in value):
        raise click.BadParameter(f"{value!r} is not a file name (the folder is -o's)")
    return value


@group.command("upgrade")
@click.argument("old_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write the new file here [default: replace OLD_FILE]."
)
@click.option(
    "--llama-lib",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="LLAMABIN_LLAMA_LIB",
    help="Folder of llama.cpp libraries to ship, as for build [env LLAMABIN_LLAMA_LIB].",
)
@click.option("--force", is_flag=True, help="Replace an existing output file that is not a llamabin executable.")
@click.option("--verbose", is_flag=True, help="Show PyInstaller's output.")
def upgrade_cmd(old_file: Path, output: Path | None, llama_lib: Path | None, force: bool, verbose: bool) -> None:
    """Move OLD_FILE's weights and manifest onto the current runtime.

    No GGUF is needed: the weights are copied byte for byte (their sha256
    stays valid) and the manifest keeps the model, defaults, template and
    license, with the new runtime's versions. OLD_FILE is replaced
    atomically unless -o names another file; a sidecar stays as it is.
    """
    target = load_payload(old_file, UsageError).manifest.get("target")
    opts = BuildOptions(old_file, llama_lib=llama_lib, verbose=verbose, target=target, force=force)
    result = upgrade(old_file, output, opts, lambda msg: click.echo(msg, err=True))
    click.echo(str(result.path))


@group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("runtime_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUNTIME_ARGS...]")
@click.option("--system-prompt", help="New default system prompt.")
@click.option("--template", metavar="NAME|FILE", help="New chat template (a file is stored inside).")
@click.option("--ctx-size", "-c", type=click.IntRange(min=0), help="New default context size.")
def set_cmd(
    file: Path, runtime_args: tuple[str, ...], system_prompt: str | None, template: str | None, ctx_size: int | None
) -> None:
    """Change FILE's built-in defaults, in place.

    Each flag given replaces that flag's built-in value (every spelling of
    it); the others are kept. The same flags as for build are allowed after
    `--`. The weights are never rewritten: the new manifest goes into the
    file's spare space, or, where it does not fit, the file is copied with
    the weights at the same place.
    """
    refused = split_baked_args(list(runtime_args)).refused
    if refused:
        raise click.UsageError(refused_message(refused))
    new = NewDefaults(system_prompt, template, ctx_size, runtime_args)
    result = set_defaults(file, new, lambda msg: click.echo(msg, err=True))
    click.echo(f"{file}: defaults {' '.join(result.payload.manifest['defaults']['args']) or '(none)'}", err=True)


def exit_code(exc: BaseException) -> int:
    """The one mapping from how a command ended to what the user sees and
    the exit code: click's usage errors and ours (UsageError) are 2, other
    LlamabinErrors (BuildError) 1, an interrupt 130."""
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.UsageError):
        click.echo(f"llamabin: error: {exc.format_message()} (see --help)", err=True)
        return EXIT_USAGE
    if isinstance(exc, LlamabinError):
        click.echo(f"llamabin: error: {exc}", err=True)
        return exc.exit_code
    return EXIT_INTERRUPTED  # click.Abort, KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    try:
        group.main(list(sys.argv[1:] if argv is None else argv), prog_name="llamabin", standalone_mode=False)
    except (click.exceptions.Exit, click.UsageError, LlamabinError, click.Abort, KeyboardInterrupt) as exc:
        return exit_code(exc)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
