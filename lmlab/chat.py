"""Chat prompts in the ChatML format (SmolLM2, Qwen, ...), and generating one assistant reply.

    <|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    What is the capital of France?<|im_end|>
    <|im_start|>assistant

An imported model keeps its chat template (a Jinja string) in its tokenizer metadata. lmlab does
not run Jinja: it recognizes a ChatML template and reads from it the one free parameter, the
default system prompt inserted when the conversation does not start with a system message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence

import jax

from lmlab.decode.sampling import generate
from lmlab.decode.stream import stream

START, END = "<|im_start|>", "<|im_end|>"
ROLES = ("system", "user", "assistant")

# `{{ '<|im_start|>system\n...<|im_end|>\n' }}` inside the template: the default system message.
_DEFAULT_SYSTEM = re.compile(r"""['"]<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>(?:\n|\\n)['"]""", re.DOTALL)


class ChatTemplateError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ChatML:
    default_system: str | None = None  # used when the first message is not a system message

    def render(self, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> str:
        """The prompt text; with `add_generation_prompt` it ends with an open assistant turn."""
        parts = []
        for message in messages:
            role, content = (message.get("role"), message.get("content")) if isinstance(message, dict) else (None, None)
            if role not in ROLES or not isinstance(content, str):
                raise ChatTemplateError(f"a chat message needs a role in {ROLES} and a string content; got {message!r}")
            parts.append(f"{START}{role}\n{content}{END}\n")
        # As SmolLM2's template: inserted before the first message (none for an empty conversation).
        if self.default_system is not None and messages and messages[0]["role"] != "system":
            parts.insert(0, f"{START}system\n{self.default_system}{END}\n")
        if add_generation_prompt:
            parts.append(f"{START}assistant\n")
        return "".join(parts)


def chatml_from_template(template: str | None) -> ChatML:
    """The ChatML format a Jinja chat template describes; a template of another format is refused."""
    if not template:
        raise ChatTemplateError("this run has no chat template (only imported chat models have one); "
                                "use --prompt instead of --chat")
    if START not in template or END not in template:
        raise ChatTemplateError("this run's chat template is not ChatML (<|im_start|> ... <|im_end|>); "
                                "lmlab only formats ChatML chats")
    match = _DEFAULT_SYSTEM.search(template)
    default = _jinja_string(match.group(1)) if match else None
    return ChatML(default_system=default)


def _jinja_string(literal: str) -> str:
    """The value of a Jinja string literal's body: backslash escapes (\\n, \\', \\\\, ...) decoded as Jinja does."""
    try:
        return literal.encode("ascii", "backslashreplace").decode("unicode-escape")
    except UnicodeDecodeError as error:
        raise ChatTemplateError(f"bad escape in the chat template's default system message: {error.reason}") from None


def chat_format(tokenizer) -> ChatML:
    """An imported model's template; ChatML without a default system message for an own tokenizer
    that has the ChatML tokens (trained with them as special tokens, e.g. for task sft)."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None and START in tokenizer.special_ids and END in tokenizer.special_ids:
        return ChatML()
    return chatml_from_template(template)


def chat_session(model, tokenizer, lines: Iterable[str], write: Callable[[str], None], *, system: str | None = None,
                 max_new_tokens: int = 256, temperature: float = 0.7, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0) -> list[dict]:
    """A multi-turn chat: each line is a user message, the reply is written token by token as it
    is generated, and the history grows turn by turn. "/reset" starts over. Returns the history."""
    chat = chat_format(tokenizer)
    start = [] if system is None else [{"role": "system", "content": system}]
    history = list(start)
    end_id = tokenizer.special_ids.get(END, tokenizer.eos_id)
    for turn, line in enumerate(lines):
        message = line.rstrip("\n")
        if message.strip() == "/reset":
            history = list(start)
            write("(history cleared)\n")
            continue
        if not message.strip():
            continue
        history.append({"role": "user", "content": message})
        ids = tokenizer.encode(chat.render(history, add_generation_prompt=True))
        reply_ids, shown = [], ""
        for token in stream(model, ids, max_new_tokens=max_new_tokens, key=jax.random.key(seed + turn),
                            temperature=temperature, top_k=top_k, top_p=top_p, stop_ids=(end_id, tokenizer.eos_id)):
            if token in (end_id, tokenizer.eos_id):
                break
            reply_ids.append(token)
            text = tokenizer.decode(reply_ids)
            if text.startswith(shown) and not text.endswith("\ufffd"):  # whole characters only
                write(text[len(shown):])
                shown = text
        reply = tokenizer.decode(reply_ids)
        write(reply[len(shown):] + "\n")
        history.append({"role": "assistant", "content": reply})
    return history


def encode_conversation(tokenizer, chat: ChatML, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(ids, weights) of a rendered conversation; weight 1 on what the model must learn to say:
    every assistant turn's content and its closing <|im_end|>.

    Up to each assistant turn the ids are those of `tokenizer.encode(chat.render(...))`, and an
    assistant turn's content starts a fresh piece after "<|im_start|>assistant\n", as it does when
    `chat_reply` generates it, so training and chatting see the same tokens.
    """
    if END not in tokenizer.special_ids:
        raise ChatTemplateError(f"the tokenizer has no {END} token; an own tokenizer needs {START} and {END} "
                                "in tokenizer.special_tokens (set when it is trained)")
    end_id = tokenizer.special_ids[END]
    ids, weights = [], []
    # Text the model only reads is encoded in one piece, as encode(render(...)) sees it.
    pending = chat.render(messages[:1], add_generation_prompt=False).removesuffix(_turn(messages[0]))
    for message in messages:
        if message["role"] != "assistant":
            pending += _turn(message)
            continue
        head = tokenizer.encode(pending + f"{START}assistant\n")
        body = tokenizer.encode(message["content"])
        tail = tokenizer.encode("\n")
        ids += head + body + [end_id] + tail
        weights += [0] * len(head) + [1] * (len(body) + 1) + [0] * len(tail)
        pending = ""
    if pending:
        rest = tokenizer.encode(pending)
        ids += rest
        weights += [0] * len(rest)
    return ids, weights


def _turn(message: dict) -> str:
    return f"{START}{message['role']}\n{message['content']}{END}\n"


def messages_for(user: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]


def chat_reply(model, tokenizer, messages: Sequence[dict], *, max_new_tokens: int, temperature: float,
               top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> str:
    """The assistant's next message: generated with the KV cache, cut at <|im_end|> (or eos)."""
    prompt = chat_format(tokenizer).render(messages, add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    end_id = tokenizer.special_ids.get(END, tokenizer.eos_id)
    out = generate(model, [ids], max_new_tokens=max_new_tokens, key=jax.random.key(seed),
                   temperature=temperature, top_k=top_k, top_p=top_p, eos_id=end_id)  # stops at the turn's end
    new_ids = [int(x) for x in out[0, len(ids):]]
    stops = {tokenizer.eos_id, end_id}
    for i, token in enumerate(new_ids):
        if token in stops:
            new_ids = new_ids[:i]
            break
    return tokenizer.decode(new_ids)
