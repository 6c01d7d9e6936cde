"""ChatML rendering against SmolLM2's own Jinja template (outputs worked out from that template by hand)."""

from __future__ import annotations

import pytest

from lmlab.chat import ChatTemplateError, chatml_from_template

# SmolLM2-135M-Instruct's chat template, verbatim from its GGUF metadata.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_empty_conversation_gets_no_default_system_message():
    # The default system message is emitted inside the loop (loop.first): no messages, no system turn.
    chat = chatml_from_template(SMOLLM2_TEMPLATE)
    assert chat.render([], add_generation_prompt=True) == "<|im_start|>assistant\n"
    assert chat.render([], add_generation_prompt=False) == ""


def test_assistant_first_still_gets_the_default_system_message():
    chat = chatml_from_template(SMOLLM2_TEMPLATE)
    assert chat.render([{"role": "assistant", "content": ""}], add_generation_prompt=False) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>assistant\n<|im_end|>\n")


@pytest.mark.parametrize("messages", [[{"content": "hi"}], ["hi"], [None], [{"role": "user"}]])
def test_malformed_first_message_is_a_chat_template_error(messages):
    # Old code: KeyError 'role' / TypeError from messages[0]["role"] before the message was checked.
    with pytest.raises(ChatTemplateError, match="a chat message needs a role"):
        chatml_from_template(SMOLLM2_TEMPLATE).render(messages)


def test_default_system_message_is_unescaped_like_a_jinja_string_literal():
    # Jinja renders '...You\'re tiny, \\o/...' as "You're tiny, \o/"; old code kept the backslashes.
    template = SMOLLM2_TEMPLATE.replace(
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face", "You\\'re tiny, \\\\o/ \\\"ok\\\"\\tgo")
    chat = chatml_from_template(template)
    assert chat.default_system == "You're tiny, \\o/ \"ok\"\tgo"
    assert chat.render([{"role": "user", "content": "Hi"}], add_generation_prompt=False) == (
        "<|im_start|>system\nYou're tiny, \\o/ \"ok\"\tgo<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")


def test_default_system_message_keeps_non_ascii_text_and_refuses_a_bad_escape():
    name = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert chatml_from_template(SMOLLM2_TEMPLATE.replace(name, "Tu es Café — 😀")).default_system == "Tu es Café — 😀"
    with pytest.raises(ChatTemplateError, match="bad escape"):
        chatml_from_template(SMOLLM2_TEMPLATE.replace(name, "bad \\x1 escape"))
