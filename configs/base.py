"""Defaults shared by every lmlab run. Variant configs import this and change what differs."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "lm"                   # the objective (lmlab/tasks): lm | mlm | classify | translate | sft | dpo | reward

    c.data = ml_collections.ConfigDict()
    c.data.corpus = "shakespeare"   # a name from lmlab.data.available_corpora(), or a path: a text file, a folder
                                    # or glob of them, a .jsonl(.gz) of {"text": ...} lines; task sft: conversations
                                    # (a .jsonl file of {"messages": [...]}, translate_en_fr, chatterbot[:LANGUAGE])
    c.data.mixture = ""             # task lm: "corpus:weight,..." (e.g. "shakespeare:0.7,python_stdlib:0.3"),
                                    # training windows drawn by weight; replaces data.corpus when set
    c.data.loader = "auto"          # task lm: device (token array on every device, windows drawn there) | host
                                    # (windows read from the memory-mapped token files) | auto (device up to 256 MiB)
    c.data.dedupe = False           # drop exact duplicate documents (and training copies of held-out ones)
    c.data.min_chars = 0            # drop documents shorter than this many characters
    c.data.min_printable = 0.0      # drop documents whose share of printable characters is below this
    c.data.seq_len = 128            # tokens per training window (the model's context)
    c.data.batch_size = 16          # windows per optimizer micro-step
    c.data.src_len = 64             # encdec: source tokens per pair (longer training pairs are dropped)
    c.data.tgt_len = 64             # encdec: target tokens per pair, bos and eos included
    c.data.pack_pairs = True        # encdec: several short pairs per training row (batch_size counts rows)
    c.data.mlm_rate = 0.15          # BERT masked LM: share of tokens selected (80% [MASK], 10% random, 10% kept)
    c.data.classify_docs = ()       # BERT classifier: corpus documents (e.g. plays) whose passages are the classes
    c.data.classify_val_fraction = 0.2  # classifier: the last part of each document, held out for evaluation

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "bpe"        # bpe | char
    c.tokenizer.vocab_size = 2048   # ignored by char (its size comes from the corpus)
    c.tokenizer.special_tokens = ("<|endoftext|>",)

    c.model = ml_collections.ConfigDict()
    c.model.family = "gpt"
    c.model.n_layers = 4
    c.model.n_encoder_layers = 4    # encdec: encoder layers (model.n_layers is the decoder's)
    c.model.shared_vocab = True     # encdec: one BPE and embedding for source and target; False: one each
    c.model.d_model = 128
    c.model.n_heads = 4
    c.model.n_kv_heads = 4          # = n_heads: MHA; a divisor: GQA; 1: MQA
    c.model.d_ff = 512
    c.model.max_len = 1024          # longest sequence the positions support (learned table size)
    c.model.positions = "rope"      # learned | sinusoidal | rope | alibi | none (NoPE: causal decoders only)
    c.model.rope_theta = 10000.0
    c.model.norm = "layernorm"      # layernorm | rmsnorm
    c.model.norm_eps = 1e-5
    c.model.norm_position = "pre"   # GPT: pre (x + f(norm(x)), final norm) | post (norm(x + f(x)), GPT-1); BERT: prenorm
    c.model.mlp = "gelu"            # gelu (tanh approximation) | gelu_exact (erf, as in BERT) | swiglu
    c.model.tie_embeddings = True
    c.model.use_bias = True
    c.model.dropout = 0.0
    c.model.attention_impl = "auto"  # auto | naive | blockwise | cudnn | pallas
    c.model.dtype = "float32"       # compute dtype: float32 | bfloat16 (parameters stay float32)
    c.model.remat = "none"          # activation recomputation per block: none | full | dots_saveable
    c.model.reward_head = False     # GPT: a scalar head on the last token's hidden state (task reward)
    # BERT family only (lmlab/models/bert.py):
    c.model.prenorm = True          # True: pre-norm blocks + final norm (like GPT); False: post-norm, original BERT
    c.model.type_vocab_size = 2     # segment (token type) embeddings; 0: none
    c.model.n_classes = 0           # task=classify: classes of the head on the pooled [CLS] (0 otherwise)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.learning_rate = 3e-3
    c.train.min_lr_ratio = 0.1      # cosine decays to learning_rate * min_lr_ratio
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.1      # not applied to norms, biases and embeddings
    c.train.b1 = 0.9
    c.train.b2 = 0.99
    c.train.eps = 1e-8
    c.train.grad_clip = 1.0         # global norm; 0 disables
    c.train.grad_accum = 1          # micro-batches per optimizer step
    c.train.label_smoothing = 0.0
    c.train.z_loss = 0.0            # coefficient of log(Z)^2, keeps logits from drifting
    c.train.steps_per_call = 10     # optimizer steps fused into one jitted call (lax.scan)
    c.train.log_every = 10
    c.train.eval_every = 200
    c.train.eval_batches = 16       # windows of batch_size for periodic evals (0: whole split)
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 3    # the latest N, plus the best by val loss
    c.train.profile_chunks = 0      # >0: jax.profiler trace of that many train calls into <run>/profile
    c.train.init_from = ""          # a run directory whose latest parameters start this run (fine-tuning)

    c.distill = ml_collections.ConfigDict()  # knowledge distillation (lmlab/compress/distill.py), task lm
    c.distill.teacher = ""          # a run directory: its frozen model teaches this one (same tokenizer)
    c.distill.alpha = 0.5           # weight of the teacher's soft targets; 1 - alpha on the labels
    c.distill.temperature = 1.0     # softens both distributions; the soft term is scaled by its square
    c.distill.cache = ""            # offline instead of teacher: a `lmlab distill cache` directory (task lm)

    c.quant = ml_collections.ConfigDict()  # quantization (lmlab/models/quantize.py, lmlab/compress/quant.py)
    c.quant.weights = "none"        # none | int8 (per output channel) | int4 (group-wise): set by `lmlab quantize`
    c.quant.group = 64              # int4: weights per scale along the input dimension (a power of two)
    c.quant.asymmetric = False      # int4: a zero point per group (range [min, max]) instead of +-max
    c.quant.embeddings = "int8"     # int8 (one scale per row) | float: token embeddings and the output head
    c.quant.kv = "none"             # none | int8: the KV cache while decoding (a scale per token and head)
    c.quant.qat = "none"            # none | int4: train with fake int4 weights (quant.group), straight-through

    c.dpo = ml_collections.ConfigDict()  # task dpo (lmlab/tasks/dpo.py)
    c.dpo.beta = 0.1                # strength of the KL anchor to the reference (Rafailov et al. 2023)
    c.dpo.label_smoothing = 0.0     # assumed share of flipped preference labels (conservative DPO)
    c.dpo.reference = ""            # the frozen reference run; empty: train.init_from

    c.lora = ml_collections.ConfigDict()  # LoRA adapters (lmlab/nn/lora.py); needs train.init_from, the base
    c.lora.rank = 0                 # > 0: train rank-r adapters only; the init_from run's weights stay frozen
    c.lora.alpha = 16.0             # the adapter product is scaled by alpha / rank
    c.lora.dropout = 0.0            # dropout on the adapters' input x, in training only (gpt family)
    c.lora.targets = "attn|mlp"     # regex over dense-layer paths (e.g. blocks/0/attn/qkv) that get adapters

    c.mesh = ml_collections.ConfigDict()  # device mesh (lmlab/sharding.py); product = device count
    c.mesh.data = -1                # data parallel; -1: the devices the other axes leave
    c.mesh.fsdp = 1                 # FSDP: batch and parameters/optimizer state split over it
    c.mesh.tensor = 1               # tensor parallel: heads, MLP hidden and vocabulary split over it

    c.sample = ml_collections.ConfigDict()
    c.sample.prompts = ("ROMEO:\n",)
    c.sample.max_new_tokens = 100
    c.sample.temperature = 0.8
    c.sample.top_k = 0              # 0: off
    c.sample.top_p = 1.0            # 1.0: off
    c.sample.beam_size = 4          # encdec: beam search in evaluation (bleu_beam<K>)
    c.sample.length_penalty = 0.6   # encdec: GNMT length penalty alpha of that beam search
    return c
