"""ChatML rendering against SmolLM2's own Jinja template (outputs worked out from that template by hand)."""

from __future__ import annotations

import pytest

from lmlab.chat import END, START, ChatML, ChatTemplateError, chatml_from_template, encode_conversation

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


# ------------------------------------------------------------------ conversations as training ids

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Ciao."}]


@pytest.fixture(scope="module", params=["char", "bpe"])
def chat_tokenizer(request, tmp_path_factory):
    from lmlab.tokenizers import train_tokenizer

    text = "Be brief. Hi there Hello! Bye Ciao. user assistant system\n" * 40
    return train_tokenizer(request.param, text, vocab_size=300, special_tokens=("<|endoftext|>", START, END),
                           out_dir=tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("template", [None, SMOLLM2_TEMPLATE])
def test_training_ids_are_the_chat_prompt_ids_and_weights_mark_the_replies(chat_tokenizer, template):
    chat = ChatML() if template is None else chatml_from_template(template)
    messages = CONVERSATION[1:] if template else CONVERSATION  # no system turn: SmolLM2's default is inserted
    ids, weights = encode_conversation(chat_tokenizer, chat, messages)
    assert len(ids) == len(weights)
    end_id = chat_tokenizer.special_ids[END]
    # Up to each reply, the ids are what chat_reply feeds the model for the same history (a reply
    # starts a fresh piece after "assistant\n", so for a merging BPE this holds for the first reply;
    # characters have no merges and show it for every one).
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i in replies if chat_tokenizer.kind == "char" else replies[:1]:
        prompt = chat_tokenizer.encode(chat.render(messages[:i], add_generation_prompt=True))
        reply = chat_tokenizer.encode(messages[i]["content"]) + [end_id]
        assert ids[:len(prompt) + len(reply)] == prompt + reply
        assert all(weights[len(prompt):len(prompt) + len(reply)]) and weights[len(prompt) - 1] == 0
    # Exactly the replies' content and their <|im_end|> are learned.
    learned = [t for t, w in zip(ids, weights) if w]
    assert learned == (chat_tokenizer.encode("Hello!") + [end_id] + chat_tokenizer.encode("Ciao.") + [end_id])
    # And the whole conversation is the rendered one, id for id where no reply starts a new piece.
    full = chat_tokenizer.encode(chat.render(messages, add_generation_prompt=False))
    assert chat_tokenizer.decode(ids) == chat_tokenizer.decode(full)


def test_a_tokenizer_without_chatml_tokens_is_refused(tmp_path):
    from lmlab.tokenizers import train_tokenizer

    tokenizer = train_tokenizer("char", "abc", vocab_size=0, special_tokens=("<|endoftext|>",), out_dir=tmp_path)
    with pytest.raises(ChatTemplateError, match="needs <\\|im_start\\|> and <\\|im_end\\|>"):
        encode_conversation(tokenizer, ChatML(), CONVERSATION)
