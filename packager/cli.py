"""`llamabin build` and `llamabin inspect`: parse, then hand over."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from packager.build import BuildOptions, build, iter_manifest_lines, refused_message
from packager.errors import BuildError
from packager.layout import LayoutError, ManifestError, check_manifest, read_payload, sidecar_path, split_baked_args

EPILOG = """\b
Examples:
  llamabin build SmolLM2-135M-Instruct.Q4_1.gguf
  llamabin build gemma.gguf --name gemma-3-270m --ctx-size 8192 --template gemma
  llamabin build model.gguf --system-prompt "you are a pirate" -- --temp 0.7 -n 256
  llamabin inspect dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llamabin", message="llamabin %(version)s")
def group() -> None:
    """Turn a GGUF model into one self-launching executable."""


@group.command(context_settings={"show_default": True})
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("runtime_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUNTIME_ARGS...]")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="Output file or directory (a name ending in / is a directory) [default: dist/].",
)
@click.option("--name", help="Base name of the file [default: the GGUF's file name].")
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
    verbose: bool,
) -> None:
    """Build one executable for this OS and architecture from MODEL.

    Arguments after `--` become the file's default runtime flags (like
    llamafile's .args); flags given when running the file override them.
    Only model, sampling and context flags can be built in: not --host,
    --port, --api-key, a mode, or a flag that names a file.
    """
    refused = split_baked_args(list(runtime_args)).refused
    if refused:  # a usage error (exit 2), found before minutes of hashing
        raise click.UsageError(refused_message(refused))
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
        license_file,
        runtime_args,
        sidecar,
        verbose,
        llama_lib,
    )
    result = build(opts, lambda msg: click.echo(msg, err=True))
    click.echo(str(result.executable))
    if result.sidecar is not None:
        click.echo(f"the weights are in {result.sidecar}: ship both files together", err=True)


build_cmd.name = "build"


@group.command("inspect")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--license", "show_license", is_flag=True, help="Print the license text stored inside.")
def inspect_cmd(file: Path, show_license: bool) -> None:
    """Show what a built file holds: model, defaults, template, license, versions."""
    payload = _payload(file)
    manifest = payload.manifest
    if show_license:
        click.echo((manifest.get("license") or {}).get("text") or "no license text is stored in this file")
        return
    click.echo(f"file:          {file}")
    click.echo(f"weights at:    byte {payload.blob_offset:,} of {payload.path.name}")
    for line in iter_manifest_lines(manifest):
        click.echo(line)


def _payload(file: Path):  # type: ignore[no-untyped-def]
    sidecar = sidecar_path(file)
    try:
        for candidate in (file, sidecar):
            if candidate.is_file() and (payload := read_payload(candidate)) is not None:
                check_manifest(payload.manifest)
                return payload
    except ManifestError as exc:
        raise BuildError(f"the manifest of {file} is damaged: {exc}") from None
    except LayoutError as exc:
        raise BuildError(f"{file} is damaged: {exc}") from None
    except OSError as exc:
        raise BuildError(f"cannot read {file}: {exc.strerror}") from None
    if not file.exists():
        raise BuildError(f"no such file: {file}")
    raise BuildError(f"{file} is not a llamabin executable (no model inside)")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        group.main(list(sys.argv[1:] if argv is None else argv), prog_name="llamabin", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        click.echo(f"llamabin: error: {exc.format_message()} (see --help)", err=True)
        return 2
    except BuildError as exc:
        click.echo(f"llamabin: error: {exc}", err=True)
        return 1
    except click.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
