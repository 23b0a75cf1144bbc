"""Bad input to `llamabin build`: one clear line, non-zero exit, and no
half-written output."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from packager.gguf_write import write_out
from packager.runtime import KEEP_RUNTIMES, prune
from payload.find import read_payload
from tests.helpers import llamabin, tmpfs


def one_error_line(stderr: str) -> str:
    """Progress lines may come first; the error is one line, and the last."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("llamabin: error: ")]
    assert errors == lines[-1:] and "Traceback" not in stderr, stderr
    return errors[0]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of our own (root only), unmounted afterwards."""
    with tmpfs(tmp_path / "mnt", "size=40m") as point:
        yield point


def test_not_a_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_text("hello")
    result = llamabin("build", str(bogus), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "not a GGUF model file" in one_error_line(result.stderr)
    assert_nothing_written(tmp_path / "out")


def test_truncated_gguf(smollm2: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm2.open("rb") as src:
        cut.write_bytes(src.read(smollm2.stat().st_size * 2 // 3))
    result = llamabin("build", str(cut), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "truncated" in one_error_line(result.stderr)
    assert_nothing_written(tmp_path / "out")


def _gguf_header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


@pytest.mark.parametrize(
    "body",
    [
        # One value: an array of arrays nested 100,000 deep.
        _gguf_header(0, 1)
        + struct.pack("<Q", 1)
        + b"k"
        + struct.pack("<I", 9)
        + struct.pack("<IQ", 9, 1) * 100_000
        + struct.pack("<IQ", 4, 0),
        # A header that claims 2^63 values and a string of 2^60 bytes.
        _gguf_header(0, 2**63) + struct.pack("<Q", 2**60) + b"k",
        # An array of 2^62 strings in a file of a few bytes.
        _gguf_header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, 2**62) + b"\0" * 16,
        # A tensor of an unknown type.
        _gguf_header(1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 8, 9999, 0),
    ],
    ids=["deep-arrays", "huge-counts", "huge-array", "unknown-tensor-type"],
)
def test_a_hostile_gguf_header_is_refused_at_once(tmp_path: Path, body: bytes) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(body)
    started = time.monotonic()
    result = llamabin("build", str(bogus), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "is not a valid GGUF" in one_error_line(result.stderr)
    assert time.monotonic() - started < 60  # no walk over 2^62 entries
    assert_nothing_written(tmp_path / "out")


def test_missing_and_unreadable_input(tmp_path: Path) -> None:
    missing = llamabin("build", str(tmp_path / "nope.gguf"))
    assert missing.returncode == 2 and "model file not found" in one_error_line(missing.stderr)
    fifo_dir = tmp_path / "a-directory.gguf"
    fifo_dir.mkdir()
    unreadable = llamabin("build", str(fifo_dir))
    assert unreadable.returncode != 0
    one_error_line(unreadable.stderr)


def test_unwritable_output(smollm2: Path, mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    result = llamabin("build", str(smollm2), "-o", str(mount))
    assert result.returncode == 1
    assert str(mount) in one_error_line(result.stderr)


def test_full_disk_leaves_no_partial_file(smollm2: Path, mount: Path) -> None:
    result = llamabin("build", str(smollm2), "-o", str(mount))
    assert result.returncode == 1
    assert "no space left" in one_error_line(result.stderr)
    assert_nothing_written(mount)


def test_unknown_template_and_bad_baked_args(smollm2: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad_template = llamabin("build", str(smollm2), "-o", str(out), "--template", "klingon")
    assert bad_template.returncode == 1
    assert "unknown template 'klingon'" in one_error_line(bad_template.stderr)
    bad_args = llamabin("build", str(smollm2), "-o", str(out), "--", "--temp", "warm")
    assert bad_args.returncode == 1
    assert "built-in defaults are invalid" in one_error_line(bad_args.stderr)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "baked, named",
    [
        (["--host", "0.0.0.0"], "--host is"),
        (["--port=80", "--temp", "0.7", "--api-key", "k"], "--port --api-key are"),
        (["--nobrowser", "--server"], "--nobrowser --server are"),
        (["-mother.gguf"], "-m is"),
        (["--grammar-file", "g.gbnf"], "--grammar-file is"),
        (["-p", "hello"], "-p is"),
        (["--template", "./mine.jinja"], "--template ./mine.jinja is"),
        (["--no-such-flag"], "--no-such-flag is"),
    ],
    ids=["host", "port-and-key", "modes", "model", "grammar-file", "prompt", "template-path", "unknown"],
)
def test_only_model_sampling_and_context_flags_can_be_built_in(
    baked: list[str], named: str, smollm2: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = llamabin("build", str(smollm2), "-o", str(out), "--", *baked, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"llamabin: error: {named} not allowed as a built-in default: only model, sampling and context flags are"
    ), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda d: d / "missing", "--llama-lib: no such folder: "),
        (
            lambda d: d,
            "has no libllama.so and libggml.so.0; give the lib folder that scripts/build-llama-cpp.sh prints",
        ),
    ],
    ids=["missing", "empty"],
)
def test_a_bad_llama_lib_folder(smollm2: Path, tmp_path: Path, make: Callable[[Path], Path], says: str) -> None:
    lib = make(tmp_path / "lib")
    if lib.name == "lib":
        lib.mkdir()
    result = llamabin("build", str(smollm2), "-o", str(tmp_path / "out") + "/", "--llama-lib", str(lib))
    assert result.returncode == 1
    assert says in one_error_line(result.stderr)
    assert_nothing_written(tmp_path / "out")


def test_old_runtimes_are_pruned_and_recent_ones_kept(tmp_path: Path) -> None:
    """build/runtime/ gets a new 30 MB runtime at every source change: only
    the most recently used few stay."""
    now = time.time()
    for age, name in enumerate(["new", "a", "b", "c", "d", "e"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "llamabin-runtime").write_bytes(b"\0")
        os.utime(tmp_path / name, (now - age * 60, now - age * 60))
    (tmp_path / ".building-x").mkdir()  # another build in progress
    prune(tmp_path, keep=tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".building-x", "a", "b", "c", "new"]
    assert KEEP_RUNTIMES == 4


# -- what an output may replace ----------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("extra", [[], ["--force"], ["--quant", "Q4_K_M", "--force"]], ids=["plain", "force", "quant"])
def test_the_output_is_never_the_input_model(
    smollm2: Path, portable_lib: Path, tmp_path: Path, extra: list[str]
) -> None:
    """Not even with --force, nor when the build packs a quantized copy."""
    model = tmp_path / "model.gguf"
    shutil.copy(smollm2, model)
    before = digest(model)
    result = llamabin("build", str(model), "-o", str(model), "--llama-lib", str(portable_lib), *extra)
    assert result.returncode == 2
    assert f"the output {model} is the input {model}" in one_error_line(result.stderr)
    assert digest(model) == before


@pytest.mark.parametrize("flag", ["--license", "--template"])
def test_no_input_file_is_written_over_even_with_force(
    smollm2: Path, portable_lib: Path, tmp_path: Path, flag: str
) -> None:
    given = tmp_path / "given.txt"
    given.write_text("{{ messages }}" if flag == "--template" else "MIT License\n")
    before = given.read_text()
    result = llamabin(
        "build", str(smollm2), flag, str(given), "-o", str(given), "--force", "--llama-lib", str(portable_lib)
    )
    assert result.returncode == 2
    assert f"the output {given} is the input {given}" in one_error_line(result.stderr)
    assert given.read_text() == before


def test_a_file_that_is_not_llamabins_is_replaced_only_with_force(
    smollm2: Path, portable_lib: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    refused = llamabin("build", str(smollm2), "-o", str(notes), "--llama-lib", str(portable_lib))
    assert refused.returncode == 2
    assert "exists and is not a llamabin executable: give another -o, or --force" in one_error_line(refused.stderr)
    assert notes.read_text() == "my notes\n"
    forced = llamabin("build", str(smollm2), "-o", str(notes), "--llama-lib", str(portable_lib), "--force")
    assert forced.returncode == 0, forced.stderr
    assert read_payload(notes) is not None


def test_a_sidecar_does_not_make_a_foreign_file_beside_it_llamabins(
    smollm2: Path, portable_lib: Path, tmp_path: Path
) -> None:
    """An executable whose weights are in NAME.gguf is llamabin's and may be
    rebuilt; a file of the user's that merely sits beside such a sidecar is not."""
    build = ("build", str(smollm2), "--sidecar", "--llama-lib", str(portable_lib))
    first = llamabin(*build, "-o", str(tmp_path))
    assert first.returncode == 0, first.stderr
    exe = tmp_path / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    again = llamabin(*build, "-o", str(exe))
    assert again.returncode == 0, again.stderr

    exe.write_text("my notes\n")
    refused = llamabin(*build, "-o", str(exe))
    assert refused.returncode == 2
    assert "exists and is not a llamabin executable: give another -o, or --force" in one_error_line(refused.stderr)
    assert exe.read_text() == "my notes\n"


def test_a_build_that_fails_its_check_keeps_the_file_it_would_replace(
    built: Path, smollm2: Path, portable_lib: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good"
    shutil.copy2(built, good)
    before = digest(good)
    # "-n" without its number passes the build's own checks; only starting the file finds it.
    result = llamabin("build", str(smollm2), "-o", str(good), "--llama-lib", str(portable_lib), "--", "-n")
    assert result.returncode == 1
    assert "the built file does not start" in one_error_line(result.stderr)
    assert digest(good) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]  # no partial file left


@pytest.mark.parametrize("output", ["new/deeper/", "new/deeper/file"])
def test_a_failed_build_leaves_no_folder_it_made(
    smollm2: Path, portable_lib: Path, tmp_path: Path, output: str
) -> None:
    work = tmp_path / "work"
    (work / "kept").mkdir(parents=True)  # an empty folder that was there before stays
    for out in (output, f"kept/{output}"):
        result = llamabin("build", str(smollm2), "-o", out, "--llama-lib", str(portable_lib), "--", "-n", cwd=work)
        assert result.returncode == 1
        assert "the built file does not start" in one_error_line(result.stderr)
    assert sorted(p.name for p in work.rglob("*")) == ["kept"]


def test_an_output_named_bare_lands_in_the_current_folder(smollm2: Path, portable_lib: Path, tmp_path: Path) -> None:
    result = llamabin("build", str(smollm2), "-o", "mybin", "--llama-lib", str(portable_lib), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_payload(tmp_path / "mybin") is not None


@pytest.mark.parametrize("name", ["../../escape", "sub/name", "", ".."])
def test_a_name_that_is_a_path_is_refused(smollm2: Path, tmp_path: Path, name: str) -> None:
    result = llamabin("build", str(smollm2), "--name", name, "-o", str(tmp_path / "out") + "/")
    assert result.returncode == 2
    assert "is not a file name (the folder is -o's)" in one_error_line(result.stderr)
    assert not (tmp_path / "escape").exists()
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("flags", [["-c", "99999"], ["--", "-c", "99999"], ["--", "--ctx-size=99999", "-n", "6"]])
def test_a_context_above_the_trained_one_is_refused_before_building(
    smollm2: Path, tmp_path: Path, flags: list[str]
) -> None:
    result = llamabin("build", str(smollm2), "-o", str(tmp_path / "out") + "/", *flags)
    assert result.returncode == 2
    assert "a built-in context of 99999 tokens is above the 8192 tokens this model was trained for" in one_error_line(
        result.stderr
    )
    assert_nothing_written(tmp_path / "out")


def test_a_license_too_large_for_a_manifest_is_refused_before_writing(
    smollm2: Path, portable_lib: Path, tmp_path: Path
) -> None:
    huge = tmp_path / "LICENSE"
    huge.write_text("x" * (17 * 2**20))
    out = tmp_path / "out"
    result = llamabin("build", str(smollm2), "--license", str(huge), "-o", f"{out}/", "--llama-lib", str(portable_lib))
    assert result.returncode == 1
    assert "cannot write this file's manifest: it would be 17,8" in one_error_line(result.stderr)
    assert "above the 16,777,216 a runtime reads" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf"])
def test_a_lora_scale_that_is_not_a_number_is_refused(smollm2: Path, tmp_path: Path, scale: str) -> None:
    result = llamabin("build", str(smollm2), "--lora", str(smollm2), "--lora-scale", scale, "-o", f"{tmp_path}/")
    assert result.returncode == 2
    assert f"Invalid value for '--lora-scale': {float(scale)} is not a finite number" in one_error_line(result.stderr)


def _gguf(path: Path, *, tensors: bool = True, big_endian: bool = False, **fields: object) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE)
    for key, value in fields.items():
        if isinstance(value, float):
            writer.add_float32(key.replace("__", "."), value)
        else:
            writer.add_uint32(key.replace("__", "."), int(value))  # type: ignore[call-overload]
    if tensors:
        writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    write_out(writer)
    return path


@pytest.mark.parametrize(
    "make, code, says",
    [
        (lambda p: _gguf(p, general__alignment=0), 1, "general.alignment 0 is not a power of two"),
        (lambda p: _gguf(p, llama__context_length=256.0), 1, "llama.context_length is 256.0, not a whole number"),
        (lambda p: _gguf(p, tensors=False), 2, "holds no tensors: it is not a model"),
        (lambda p: _gguf(p, big_endian=True), 1, "is a big-endian GGUF"),
    ],
    ids=["alignment-0", "float-context", "no-tensors", "big-endian"],
)
def test_a_gguf_no_run_could_load_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], code: int, says: str
) -> None:
    model = make(tmp_path / "odd.gguf")
    result = llamabin("build", str(model), "-o", f"{tmp_path / 'out'}/")
    assert result.returncode == code
    assert says in one_error_line(result.stderr)
    assert not (tmp_path / "out").exists()


def test_an_importance_matrix_given_as_the_model_points_to_imatrix(smollm2: Path, tmp_path: Path) -> None:
    from tests.ggufs import importance_matrix

    matrix = importance_matrix(smollm2, tmp_path / "imatrix.gguf")
    result = llamabin("build", str(matrix), "-o", f"{tmp_path / 'out'}/")
    assert result.returncode == 2
    assert "is an importance matrix, not a model: give it to --imatrix" in one_error_line(result.stderr)


@pytest.mark.parametrize("role", ["model", "--license", "--imatrix"])
def test_a_fifo_given_as_an_input_is_refused_at_once(smollm2: Path, tmp_path: Path, role: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = [str(fifo)] if role == "model" else [str(smollm2), role, str(fifo)]
    result = llamabin("build", *args, "-o", f"{tmp_path / 'out'}/", timeout=60)
    assert result.returncode == 2
    assert f"{fifo} is not a regular file" in one_error_line(result.stderr)


def test_a_gguf_without_file_type_is_typed_by_its_tensors(smollm2: Path, tmp_path: Path) -> None:
    """Some converters leave general.file_type out: --quant and --lora must
    still see an F32 model as one, and a quantized one as quantized."""
    from packager.gguf_info import read_gguf_info

    assert read_gguf_info(_gguf(tmp_path / "f32.gguf")).quantization == "F32"
    assert read_gguf_info(smollm2).quantization == "Q4_1"
