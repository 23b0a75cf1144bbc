"""Jinja text of the built-in chat templates.

They are kept as Python strings rather than data files so they travel inside
any bundle (wheel, zipapp, frozen executable) without package-data settings.
Raw strings keep the backslash escapes for Jinja to decode: Jinja string
literals understand `\\n` itself.
"""

from __future__ import annotations

BUILTIN_NAMES: tuple[str, ...] = ("alpaca", "chatml", "gemma", "llama3")

# Modelled on Google's official Gemma template: Gemma has no system role, so a
# leading system message becomes a prefix of the first user turn.  Unlike the
# official one it also refuses roles other than user/assistant, which the
# official template would silently print as a bogus turn.
GEMMA = r"""{{ bos_token }}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if message['role'] not in ['user', 'assistant'] -%}
        {{ raise_exception("Gemma only understands a first system message, "
                           ~ "then user and assistant messages") }}
    {%- endif -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {%- set role = 'model' -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"""

CHATML = r"""{%- for message in messages -%}
    {{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<|im_start|>assistant\n' }}
{%- endif -%}
"""

# Meta's Llama 3 Instruct layout; the BOS text leads even an empty
# conversation so the engine can always see it and not add a second one.
LLAMA3 = r"""{{ bos_token }}
{%- for message in messages -%}
    {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
    {{- message['content'] | trim + '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif -%}
"""

# Alpaca as the widely used fine-tuning notebooks write it (instruction, input
# and response sections), so a single user turn renders exactly as
# `alpaca_prompt.format(instruction, "", "")`, the prompt such models were
# trained and are documented to be queried with.  The input section is
# always empty: a chat has no separate "input".
#
# Multi-turn: a leading system message replaces the preamble sentence; each
# user turn is "### Instruction:\n{content}\n\n### Input:\n\n\n"; each
# assistant turn is "### Response:\n{content}{eos_token}\n\n" (training data
# ends every response with EOS); the generation prompt is "### Response:\n".
ALPACA = r"""{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set preamble = messages[0]['content'] -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set preamble = 'Below is an instruction that describes a task, paired with an input '
                       ~ 'that provides further context. '
                       ~ 'Write a response that appropriately completes the request.' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{{ preamble + '\n\n' }}
{%- for message in loop_messages -%}
    {%- if message['role'] == 'user' -%}
        {{ '### Instruction:\n' + message['content'] + '\n\n### Input:\n\n\n' }}
    {%- elif message['role'] == 'assistant' -%}
        {{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}
    {%- else -%}
        {{ raise_exception("Alpaca only understands a first system message, "
                           ~ "then user and assistant messages") }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '### Response:\n' }}
{%- endif -%}
"""
