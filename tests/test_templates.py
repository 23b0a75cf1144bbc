"""Chat templates: exact prompt text, template choice, and the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from templates import BUILTIN_NAMES, ChatTemplate, TemplateError, builtin, from_file, resolve

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
]

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request."
)


def _file(tmp_path: Path, text: str, name: str = "custom.jinja") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _gguf(source: str, eos_token: str = "") -> ChatTemplate:
    return resolve(None, {"tokenizer.chat_template": source}, eos_token=eos_token)


# --- built-in formats, byte for byte ---------------------------------------


def test_gemma_matches_the_model_card_prompt() -> None:
    template = builtin("gemma", bos_token="<bos>")
    prompt = template.render([{"role": "user", "content": "Write a hello world program"}])
    assert prompt == "<bos><start_of_turn>user\nWrite a hello world program<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_merges_the_system_prompt_into_the_first_user_turn() -> None:
    prompt = builtin("gemma", bos_token="<bos>").render(CONVERSATION)
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_without_generation_prompt_ends_after_the_last_turn() -> None:
    prompt = builtin("gemma").render(CONVERSATION[1:3], add_generation_prompt=False)
    assert prompt == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"


def test_gemma_trims_message_content_like_the_official_template() -> None:
    prompt = builtin("gemma").render([{"role": "user", "content": "  Hi \n"}])
    assert prompt == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "assistant", "content": "a"}],
        [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}],
    ],
)
def test_gemma_refuses_turns_that_do_not_alternate(messages: list[dict[str, str]]) -> None:
    with pytest.raises(TemplateError, match="gemma"):
        builtin("gemma").render(messages)


def test_gemma_alternation_error_carries_the_template_message() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateError, match="Conversation roles must alternate"):
        builtin("gemma").render(messages)


def test_chatml_exact_conversation() -> None:
    prompt = builtin("chatml", bos_token="<s>").render(CONVERSATION)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama3_exact_conversation() -> None:
    prompt = builtin("llama3", bos_token="<|begin_of_text|>").render(CONVERSATION)
    assert prompt == (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_trims_message_content_like_meta_template() -> None:
    prompt = builtin("llama3").render([{"role": "user", "content": "\n Hi  "}], add_generation_prompt=False)
    assert prompt == "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"


def test_alpaca_single_turn_matches_the_fine_tuning_prompt() -> None:
    instruction = "Instruction: Create a function to calculate the sum of a sequence of integers."
    alpaca_prompt = ALPACA_PREAMBLE + "\n\n### Instruction:\n{}\n\n### Input:\n{}\n\n### Response:\n{}"
    prompt = builtin("alpaca", eos_token="<eos>").render([{"role": "user", "content": instruction}])
    assert prompt == alpaca_prompt.format(instruction, "", "")


def test_alpaca_exact_conversation() -> None:
    prompt = builtin("alpaca", eos_token="<eos>").render(CONVERSATION)
    assert prompt == (
        "Be brief.\n\n"
        "### Instruction:\nHi\n\n### Input:\n\n\n"
        "### Response:\nHello!<eos>\n\n"
        "### Instruction:\nHow are you?\n\n### Input:\n\n\n"
        "### Response:\n"
    )


def test_builtin_stop_strings() -> None:
    assert builtin("gemma", eos_token="<eos>").stop == ("<end_of_turn>",)
    assert builtin("chatml").stop == ("<|im_end|>",)
    assert builtin("llama3").stop == ("<|eot_id|>",)
    assert builtin("alpaca").stop == ("### Instruction:",)
    assert builtin("alpaca", eos_token="<eos>").stop == ("### Instruction:", "<eos>")


def test_builtin_names_are_all_loadable() -> None:
    assert set(BUILTIN_NAMES) >= {"alpaca", "chatml", "gemma", "llama3"}
    for name in BUILTIN_NAMES:
        template = builtin(name)
        assert (template.name, template.origin) == (name, "builtin")


def test_unknown_builtin_lists_the_known_names() -> None:
    with pytest.raises(TemplateError, match="alpaca, chatml, gemma, llama3"):
        builtin("vicuna")


# --- choosing a template -----------------------------------------------------


def test_resolve_prefers_the_models_own_template() -> None:
    source = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    metadata = {"tokenizer.chat_template": source, "general.architecture": "gemma3"}
    template = resolve(None, metadata, eos_token="<|endoftext|>")
    assert (template.name, template.origin, template.source) == ("gguf", "gguf", source)
    assert template.stop == ("<|im_end|>", "<|endoftext|>")


def test_resolve_picks_gemma_for_a_gemma3_model_without_template() -> None:
    template = resolve(None, {"general.architecture": "gemma3"}, bos_token="<bos>")
    assert (template.name, template.origin) == ("gemma", "builtin")
    assert template.render([{"role": "user", "content": "x"}]).startswith("<bos><start_of_turn>user\n")


@pytest.mark.parametrize("architecture", ["gemma", "gemma2", "gemma3n"])
def test_resolve_picks_gemma_for_every_gemma_generation(architecture: str) -> None:
    assert resolve(None, {"general.architecture": architecture}).name == "gemma"


def test_resolve_picks_llama3_only_for_the_llama3_tokenizer() -> None:
    llama3 = {"general.architecture": "llama", "tokenizer.ggml.pre": "llama-bpe"}
    older_llama = {"general.architecture": "llama", "tokenizer.ggml.pre": "default"}
    assert resolve(None, llama3).name == "llama3"
    assert resolve(None, older_llama).name == "chatml"


def test_resolve_falls_back_to_chatml() -> None:
    assert resolve(None, {"general.architecture": "qwen2"}).name == "chatml"
    assert resolve(None, {}).name == "chatml"


def test_resolve_ignores_an_empty_model_template() -> None:
    metadata = {"tokenizer.chat_template": "  ", "general.architecture": "gemma2"}
    assert resolve(None, metadata).name == "gemma"


def test_resolve_choice_overrides_the_models_template() -> None:
    metadata = {"tokenizer.chat_template": "{{ messages }}", "general.architecture": "gemma3"}
    assert resolve("llama3", metadata).name == "llama3"


def test_resolve_passes_tokens_to_a_builtin() -> None:
    template = resolve("llama3", {}, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    assert (template.bos_token, template.eos_token) == ("<|begin_of_text|>", "<|end_of_text|>")


def test_resolve_loads_a_template_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}</s>{% endfor %}")
    template = resolve(str(path), {"tokenizer.chat_template": "ignored"}, eos_token="</s>")
    assert (template.name, template.origin) == ("custom.jinja", "file")
    assert template.render([{"role": "user", "content": "hi"}]) == "[user] hi</s>"
    assert template.stop == ("</s>",)


def test_resolve_unknown_choice_lists_the_builtins() -> None:
    with pytest.raises(TemplateError) as caught:
        resolve("no-such-template", {})
    assert str(caught.value) == (
        "unknown template 'no-such-template': use one of alpaca, chatml, gemma, llama3, or a path to a Jinja file"
    )


# --- templates we did not write ----------------------------------------------


def test_from_file_accepts_a_path_object(tmp_path: Path) -> None:
    template = from_file(
        _file(tmp_path, "{{ bos_token }}{{ messages[0]['content'] }}"), bos_token="<s>", eos_token="</s>"
    )
    assert template.render([{"role": "user", "content": "x"}]) == "<s>x"


def test_from_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"cannot read template file .*missing\.jinja"):
        from_file(tmp_path / "missing.jinja", eos_token="</s>")


def test_from_file_reports_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary.jinja"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(TemplateError, match="cannot read template file"):
        from_file(path, eos_token="</s>")


def test_from_file_reports_invalid_jinja_with_its_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "ok\n{% for m in messages %}no end")
    with pytest.raises(TemplateError, match=r"'custom.jinja' is not valid Jinja \(line \d+"):
        from_file(path, eos_token="</s>")


def test_errors_are_a_single_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "{{ raise_exception('first\nsecond') }}")
    with pytest.raises(TemplateError) as caught:
        from_file(path, eos_token="</s>").render([])
    assert "\n" not in str(caught.value)


def test_stop_strings_are_found_in_the_model_template() -> None:
    source = "{% for m in messages %}<start_of_turn>{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    assert _gguf(source, eos_token="<eos>").stop == ("<end_of_turn>", "<eos>")
    assert _gguf("{{ '<|eot_id|>' }}").stop == ("<|eot_id|>",)


def test_stop_falls_back_to_eos() -> None:
    assert _gguf("{{ messages[0]['content'] }}", eos_token="<|endoftext|>").stop == ("<|endoftext|>",)


def test_a_template_with_no_way_to_stop_is_refused() -> None:
    with pytest.raises(TemplateError, match="cannot tell where the model's replies end"):
        _gguf("{{ messages[0]['content'] }}")


def test_model_template_gets_transformers_helpers() -> None:
    source = (
        "{{ messages[0] | tojson }}|{{ strftime_now('%Y') | length }}"
        "|{% if tools is not none %}tools{% endif %}"
        "|{% for m in messages %}{{ m['role'] }}{% break %}{% endfor %}"
    )
    messages = [{"role": "user", "content": "<b> & é"}, {"role": "assistant", "content": "x"}]
    assert _gguf(source, eos_token="</s>").render(messages) == '{"role": "user", "content": "<b> & é"}|4||user'


def test_model_template_block_lines_leave_no_whitespace() -> None:
    # Model templates are written for transformers' trim_blocks/lstrip_blocks.
    source = (
        "{% for m in messages %}\n    {% if m['role'] == 'user' %}\n[{{ m['content'] }}]\n    {% endif %}\n{% endfor %}"
    )
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert _gguf(source, eos_token="</s>").render(messages) == "[a]\n[b]\n"


def test_model_template_loses_its_trailing_newline_like_transformers() -> None:
    assert _gguf("{{ 'x' }}\n", eos_token="</s>").render([]) == "x"


def test_message_without_content_is_refused() -> None:
    with pytest.raises(TemplateError, match="message 1 needs a 'role' and a 'content'"):
        builtin("chatml").render([{"role": "user", "content": "a"}, {"role": "user"}])


def test_a_broken_template_fails_with_template_error() -> None:
    template = _gguf("{{ messages[5]['content'] + 1 }}", eos_token="</s>")
    with pytest.raises(TemplateError, match="chat template 'gguf' failed"):
        template.render([{"role": "user", "content": "x"}])


def test_raise_exception_becomes_template_error_with_its_message() -> None:
    template = _gguf("{{ raise_exception('System role not supported') }}", eos_token="</s>")
    with pytest.raises(TemplateError) as caught:
        template.render([{"role": "system", "content": "x"}])
    assert str(caught.value) == "chat template 'gguf' rejected the conversation: System role not supported"


# --- the sandbox ---------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.__class__.__base__.__subclasses__() }}",
    ],
)
def test_sandbox_escapes_raise_template_error(source: str) -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        _gguf(source, eos_token="</s>").render([{"role": "user", "content": "x"}])


def test_sandbox_escape_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    source = "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
    with pytest.raises(TemplateError):
        _gguf(source, eos_token="</s>").render([{"role": "user", "content": "x"}])
    assert not marker.exists()


def test_template_cannot_change_the_conversation() -> None:
    messages = [{"role": "user", "content": "x"}]
    source = "{% set _ = messages.append({'role': 'system', 'content': 'evil'}) %}{{ messages | length }}"
    with pytest.raises(TemplateError, match="unsafe"):
        _gguf(source, eos_token="</s>").render(messages)
    assert messages == [{"role": "user", "content": "x"}]


def test_bos_and_eos_reach_the_template() -> None:
    template = _gguf("{{ bos_token }}|{{ eos_token }}", eos_token="</s>")
    assert template.render([]) == "|</s>"
    assert (
        resolve(None, {"tokenizer.chat_template": "{{ bos_token }}|{{ eos_token }}"}, "<s>", "</s>").render([])
        == "<s>|</s>"
    )
