"""Supervised fine-tuning on conversations (task "sft"): the loss is on the assistant's tokens only.

Conversations (lmlab.data.conversations: a JSONL file of {"messages": [...]} or a built-in set)
are rendered with the ChatML template (lmlab.chat.encode_conversation): weight 1 on each
assistant turn's content and its closing <|im_end|>, 0 on everything the model only reads. They
are packed several to a row of data.seq_len + 1 tokens with segment ids (lmlab.data.packing), so
attention and positions stay within one conversation; a conversation longer than a row is cut,
and the number cut is logged.

The tokenizer comes from train.init_from (an imported SmolLM2 with its chat template, or an own
run whose tokenizer has the ChatML tokens); without init_from an own tokenizer is trained on the
conversations with <|im_start|> and <|im_end|> added to tokenizer.special_tokens.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib

import jax
import numpy as np
from flax import nnx

from lmlab import flops
from lmlab.chat import END, START, chat_format, encode_conversation
from lmlab.data.conversations import get_conversations
from lmlab.data.packing import pack, target_weights
from lmlab.data.prepare import copy_init_tokenizers
from lmlab.eval import batching
from lmlab.files import atomic_write
from lmlab.tasks.base import Task, TaskData
from lmlab.tasks.lm import distill_settings, next_token_loss, teacher_source
from lmlab.tokenizers import load_tokenizer, train_tokenizer
from lmlab.train.losses import token_cross_entropy

log = logging.getLogger("lmlab")

DATA_FILE = "sft.npz"
SPLITS = ("train", "val")


def conversation_text(conversations) -> str:
    return "\n".join(message["content"] for conversation in conversations for message in conversation)


class SFTTask(Task):
    families = ("gpt",)

    def _tokenizer(self, run_dir: pathlib.Path, conversations):
        tok_dir = run_dir / "tokenizer"
        copy_init_tokenizers(self.config, run_dir)
        if (tok_dir / "tokenizer.json").exists():
            return load_tokenizer(tok_dir)
        t = self.config.tokenizer
        special = tuple(t.special_tokens) + tuple(tok for tok in (START, END) if tok not in t.special_tokens)
        return train_tokenizer(t.kind, conversation_text(conversations.train), vocab_size=t.vocab_size,
                               special_tokens=special, out_dir=tok_dir)

    def _pack(self, tokenizer, conversations) -> dict:
        chat = chat_format(tokenizer)
        arrays, row_len = {}, self.config.data.seq_len + 1
        for split in SPLITS:
            rows = pack([encode_conversation(tokenizer, chat, c) for c in getattr(conversations, split)], row_len)
            arrays.update({f"{split}_tokens": rows.tokens, f"{split}_segments": rows.segments,
                           f"{split}_weights": rows.weights, f"{split}_cut": np.asarray(rows.n_cut)})
            log.info("sft %s: %d conversations in %d rows of %d tokens, %d assistant tokens%s", split,
                     len(getattr(conversations, split)), len(rows.tokens), row_len, int(rows.weights.sum()),
                     f"; {rows.n_cut} longer than a row were cut to {row_len} tokens" if rows.n_cut else "")
        return arrays

    def prepare(self, run_dir: pathlib.Path) -> TaskData:
        run_dir = pathlib.Path(run_dir)
        path = run_dir / "data" / DATA_FILE
        if path.exists() and (run_dir / "tokenizer" / "tokenizer.json").exists():
            tokenizer = load_tokenizer(run_dir / "tokenizer")
            with np.load(path) as f:
                arrays = dict(f)
        else:
            conversations = get_conversations(self.config.data.corpus)
            tokenizer = self._tokenizer(run_dir, conversations)
            arrays = self._pack(tokenizer, conversations)
            with atomic_write(path) as f:
                np.savez(f, **arrays)
            (run_dir / "data" / "sft.json").write_text(json.dumps(
                {"corpus": self.config.data.corpus, **{f"{s}_conversations": len(getattr(conversations, s))
                                                       for s in SPLITS},
                 **{f"{s}_cut": int(arrays[f"{s}_cut"]) for s in SPLITS}}) + "\n")
        if int(np.asarray(arrays["train_weights"]).sum()) == 0:
            raise ValueError(f"data.corpus={self.config.data.corpus}: no assistant tokens to train on")
        train = {k: arrays[f"train_{k}"] for k in ("tokens", "segments", "weights")}
        val = {k: arrays[f"val_{k}"] for k in ("tokens", "segments", "weights")}
        return TaskData(tokenizer, train, val)

    def frozen_sources(self) -> dict[str, str]:
        return teacher_source(self.config)

    def sample_batch(self, train_arrays, key):
        n = train_arrays["tokens"].shape[0]
        rows_B = jax.random.randint(key, (self.config.data.batch_size,), 0, n)
        return {k: v[rows_B] for k, v in train_arrays.items()}

    def synthetic_train_arrays(self, vocab_size: int, key: jax.Array) -> dict:
        """Rows of two conversations each, the second half of each weighted (`lmlab bench train`)."""
        n, L = 256, self.config.data.seq_len + 1
        tokens = np.asarray(jax.random.randint(key, (n, L), 0, vocab_size), np.int32)
        segments = np.broadcast_to(np.where(np.arange(L) < L // 2, 1, 2), (n, L)).astype(np.int32)
        weights = (np.arange(L) % (L // 2) >= L // 4).astype(np.float32)[None].repeat(n, 0)
        return {"tokens": tokens, "segments": segments, "weights": weights}

    def loss(self, model, batch, dropout_key, frozen):
        t = self.config.train
        tokens_BL, segments_BL = batch["tokens"], batch["segments"]
        return next_token_loss(model, tokens_BL[:, :-1], tokens_BL[:, 1:], dropout_key,
                               weights_BT=target_weights(segments_BL, batch["weights"]),
                               segment_ids_BT=segments_BL[:, :-1], label_smoothing=t.label_smoothing,
                               z_loss=t.z_loss, **distill_settings(self.config, frozen))

    def flops_per_token(self, vocab_size: int) -> float:
        return flops.flops_per_token(self.config.model, vocab_size, self.config.data.seq_len)

    def make_evaluator(self, graphdef, data: TaskData, frozen=None):
        c = self.config
        val = data.val

        @batching.data_parallel_eval  # split over the mesh's batch axes, sums over the global batch
        def eval_step(params, tokens_BL, segments_BL, weights_BL):
            model = nnx.merge(graphdef, nnx.State(params))
            logits_BTV, _ = model(tokens_BL[:, :-1], segment_ids_BT=segments_BL[:, :-1])
            _, nll_BT = token_cross_entropy(logits_BTV, tokens_BL[:, 1:])
            weights_BT = target_weights(segments_BL, weights_BL)
            return (nll_BT * weights_BT).sum(), weights_BT.sum()

        n_periodic = c.train.eval_batches * c.data.batch_size
        keep = slice(None)
        if 0 < n_periodic < len(val["tokens"]):
            keep = np.linspace(0, len(val["tokens"]) - 1, n_periodic).round().astype(int)

        def evaluator(params, full: bool = False, batch_size: int = 0) -> dict:
            rows = slice(None) if full else keep
            arrays = (val["tokens"][rows], val["segments"][rows], val["weights"][rows])
            nll, n = batching.eval_sums(eval_step, params, arrays, batch_size or c.data.batch_size)
            loss = nll / max(n, 1.0)
            return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)), "val_tokens": int(n), "eval/nll": loss}

        return evaluator
