"""`llamabin build` on a model whose own chat template is broken or hostile:
one clear line naming the way out, and --template still packs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from packager.build import _template_label
from packager.gguf_info import read_gguf_info
from packager.gguf_write import write_out
from tests.helpers import llamabin


def tiny_gguf(path: Path, chat_template: str) -> Path:
    """A GGUF with a chat template and one small tensor: enough for the
    packager to read, never meant to run."""
    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    write_out(writer)
    return path


WAY_OUT = "; build the file with another: --template alpaca, chatml, gemma, llama3, or a Jinja file"


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{{ messages }", "chat template 'gguf' is not valid Jinja (line 1: unexpected '}')"),
        ("{{ 2 ** 3000000 }}", "chat template 'gguf' was stopped at a size limit: 2 ** 3000000 would be a number"),
        ("{% for a in messages %}" * 30 + "{% endfor %}" * 30, "chat template 'gguf' cannot be compiled: SyntaxError"),
    ],
    ids=["syntax", "bomb", "nesting"],
)
def test_a_broken_model_template_is_refused_in_one_line(tmp_path: Path, source: str, says: str) -> None:
    model = tiny_gguf(tmp_path / "tiny.gguf", source)
    out = tmp_path / "out"
    result = llamabin("build", str(model), "-o", f"{out}/", timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith(f"llamabin: error: {says}"), result.stderr
    assert lines[-1].endswith(WAY_OUT)
    assert not out.exists()  # not even the folder -o named


def test_with_template_the_model_template_is_not_needed(tmp_path: Path) -> None:
    info = read_gguf_info(tiny_gguf(tmp_path / "tiny.gguf", "{{ messages }"))
    assert _template_label(info, "chatml") == "chatml"


def test_a_template_naming_no_end_marker_is_left_to_the_runtime(tmp_path: Path) -> None:
    # Only the runtime knows the model's EOS text, which ends replies then.
    info = read_gguf_info(tiny_gguf(tmp_path / "tiny.gguf", "{% for m in messages %}{{ m.content }}{% endfor %}"))
    assert _template_label(info, None) == "the model's own"


MISTRAL = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def test_a_template_file_that_ends_turns_with_eos_token_is_built_in(tmp_path: Path) -> None:
    """Mistral's and Llama 2's templates name no end marker of their own:
    the model's EOS, which only the runtime reads, ends their replies."""
    from packager.build import _baked_template

    path = tmp_path / "mistral.jinja"
    path.write_text(MISTRAL)
    assert _baked_template(str(path)) == {"name": "mistral.jinja", "source": MISTRAL}
