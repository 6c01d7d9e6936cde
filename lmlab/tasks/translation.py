"""Translation with an encoder-decoder model (family "encdec"): teacher forcing, label smoothing, BLEU.

Data: a parallel corpus (`lmlab.data.bitext`, e.g. ``ui_en_fr``) with fixed train / dev / test
splits. `prepare` trains the tokenizer on the training pairs only and writes padded id arrays:

  * source [N, data.src_len]: x + [eos], right-padded with pad (id 0);
  * target [N, data.tgt_len]: [bos] + y + [eos], right-padded. Teacher forcing: the decoder reads
    target[:, :-1] and predicts target[:, 1:]; padded positions carry no loss.

Training pairs that do not fit are dropped; dev/test sources are truncated (their references stay
whole, so BLEU is never flattered by the length limit).

Packing (`data.pack_pairs`, default on): UI strings are short (median ~10 tokens), so a row padded
to src_len / tgt_len would be mostly padding. Training rows instead hold several pairs back to
back, each with its segment number and its own positions; the model keeps attention inside each
pair (lmlab.models.encdec), so the loss equals that of the pairs in separate rows at a third of
the compute. The packing is fixed at preparation (first fit over a seeded shuffle), and
`data.batch_size` then counts rows. Evaluation and decoding use one pair per row.

Vocabularies (`model.shared_vocab`): True (default, as in the original Transformer) trains one BPE
on source and target text, shared by the encoder and decoder embeddings (and the output layer with
`model.tie_embeddings`). False trains one BPE per language, each with exactly tokenizer.vocab_size
ids: the target's is the run's `tokenizer/` (what decoding detokenizes with), the source's is
`tokenizer_src/`, and the model gets a separate source embedding table.

Metrics: `val_loss` / `val_ppl` / `val_tokens` are teacher-forced NLL per target token on the dev
split (periodic evaluations and checkpoint selection see dev only). The final evaluation
(`full=True`, also `lmlab eval`) adds `test_loss` / `test_ppl` and corpus BLEU (sacrebleu, 13a) of
detokenized translations of the test split: `bleu_greedy`, `bleu_beam<K>` (beam size
sample.beam_size, GNMT length penalty sample.length_penalty, fixed a priori, not tuned on test),
and `bleu`, the beam-search one.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from lmlab import flops
from lmlab.config import ConfigError
from lmlab.data.bitext import get_parallel_corpus
from lmlab.data.prepare import copy_init_tokenizers
from lmlab.decode.beam import beam_search
from lmlab.decode.sampling import generate
from lmlab.eval import batching
from lmlab.eval.bleu import corpus_bleu
from lmlab.models.encdec import PAD_ID
from lmlab.tasks.base import LossOutput, Task, TaskData
from lmlab.tokenizers import load_tokenizer, train_tokenizer
from lmlab.train.losses import token_cross_entropy

log = logging.getLogger("lmlab")

SPLITS = ("train", "dev", "test")
ARRAYS_FILE, TEXTS_FILE = "pairs.npz", "pairs_text.json"
DECODE_BATCH = 64  # sources per decoding call (beam search runs K times as many rows)


def encode_pairs(src_tok, tgt_tok, pairs, src_len: int, tgt_len: int, *, drop_long: bool):
    """Padded id arrays for (source, target) pairs; returns (src_NS, tgt_NT, kept indices)."""
    pad = tgt_tok.pad_id
    src_rows, tgt_rows, kept = [], [], []
    for i, (source, target) in enumerate(pairs):
        src_ids = src_tok.encode(source) + [src_tok.eos_id]
        tgt_ids = [tgt_tok.bos_id] + tgt_tok.encode(target) + [tgt_tok.eos_id]
        if len(src_ids) > src_len or len(tgt_ids) > tgt_len:
            if drop_long:
                continue
            src_ids = src_ids[: src_len - 1] + [src_tok.eos_id]
            tgt_ids = tgt_ids[: tgt_len - 1] + [tgt_tok.eos_id]
        src_rows.append(src_ids + [pad] * (src_len - len(src_ids)))
        tgt_rows.append(tgt_ids + [pad] * (tgt_len - len(tgt_ids)))
        kept.append(i)
    src_NS = np.asarray(src_rows, np.int32).reshape(-1, src_len)
    tgt_NT = np.asarray(tgt_rows, np.int32).reshape(-1, tgt_len)
    return src_NS, tgt_NT, kept


def pack_rows(src_NS, tgt_NT, seed: int = 0, open_rows: int = 16):
    """Packs one-pair rows into rows of several pairs; returns a dict of [R, S] / [R, T] arrays.

    "src"/"tgt": ids; "src_seg"/"tgt_seg": 1, 2, ... per pair, 0 for padding; "src_pos"/"tgt_pos":
    each token's position within its pair. First fit into the last `open_rows` rows, over a
    seeded shuffle of the pairs: deterministic, and ~90% of the positions are real tokens.
    """
    S, T = src_NS.shape[1], tgt_NT.shape[1]
    src_lens, tgt_lens = (src_NS != 0).sum(1), (tgt_NT != 0).sum(1)
    rows: list[list[int]] = []
    used: list[list[int]] = []  # [source, target] tokens used per row
    for i in np.random.default_rng(seed).permutation(len(src_NS)):
        for r in range(max(0, len(rows) - open_rows), len(rows)):
            if used[r][0] + src_lens[i] <= S and used[r][1] + tgt_lens[i] <= T:
                break
        else:
            rows.append([])
            used.append([0, 0])
            r = len(rows) - 1
        rows[r].append(int(i))
        used[r][0] += int(src_lens[i])
        used[r][1] += int(tgt_lens[i])
    out = {k: np.zeros((len(rows), n), np.int32) for k, n in
           (("src", S), ("src_seg", S), ("src_pos", S), ("tgt", T), ("tgt_seg", T), ("tgt_pos", T))}
    for r, members in enumerate(rows):
        at = {"src": 0, "tgt": 0}
        for segment, i in enumerate(members, 1):
            for side, ids, n in (("src", src_NS[i], src_lens[i]), ("tgt", tgt_NT[i], tgt_lens[i])):
                a = at[side]
                out[side][r, a:a + n] = ids[:n]
                out[f"{side}_seg"][r, a:a + n] = segment
                out[f"{side}_pos"][r, a:a + n] = np.arange(n)
                at[side] = a + n
    return out


def unpacked_rows(src_NS, tgt_NT):
    """The arrays of `pack_rows` with one pair per row."""
    src_seg, tgt_seg = (src_NS != 0).astype(np.int32), (tgt_NT != 0).astype(np.int32)
    positions = lambda a: np.broadcast_to(np.arange(a.shape[1], dtype=np.int32), a.shape).copy()  # noqa: E731
    return {"src": src_NS, "src_seg": src_seg, "src_pos": positions(src_NS),
            "tgt": tgt_NT, "tgt_seg": tgt_seg, "tgt_pos": positions(tgt_NT)}


def teacher_forced_losses(model, batch, dropout_key=None, *, label_smoothing=0.0, z_loss=0.0):
    """(objective summed, nll summed, target tokens) over the non-pad targets of a batch.

    A batch is {"src", "tgt"} (one pair per row) or packed rows with "*_seg" / "*_pos" as well;
    then a target counts only if its input token belongs to the same pair (the step from one
    pair's eos to the next pair's bos is not a prediction).
    """

    src_BS, tgt_BT = batch["src"], batch["tgt"]
    targets_BT = tgt_BT[:, 1:]
    weights_BT = targets_BT != PAD_ID
    packed = {}
    if "src_seg" in batch:
        packed = dict(src_segments=batch["src_seg"], tgt_segments=batch["tgt_seg"][:, :-1],
                      src_positions=batch["src_pos"], tgt_positions=batch["tgt_pos"][:, :-1])
        weights_BT = weights_BT & (batch["tgt_seg"][:, 1:] == batch["tgt_seg"][:, :-1])
    logits_BTV, _ = model(tgt_BT[:, :-1], source=src_BS, dropout_key=dropout_key, **packed)
    objective_BT, nll_BT = token_cross_entropy(logits_BTV, targets_BT, label_smoothing=label_smoothing,
                                               z_loss=z_loss)
    weights_BT = weights_BT.astype(jnp.float32)
    return (objective_BT * weights_BT).sum(), (nll_BT * weights_BT).sum(), weights_BT.sum()


class TranslationTask(Task):
    families = ("encdec",)

    # ------------------------------------------------------------------ data
    def prepare(self, run_dir: pathlib.Path) -> TaskData:
        c = self.config
        run_dir = pathlib.Path(run_dir)
        tok_dir, src_tok_dir, data_dir = run_dir / "tokenizer", run_dir / "tokenizer_src", run_dir / "data"
        arrays_path, texts_path = data_dir / ARRAYS_FILE, data_dir / TEXTS_FILE
        separate = not c.model.shared_vocab
        if separate and c.tokenizer.kind != "bpe":
            raise ConfigError("model.shared_vocab=false needs tokenizer.kind=bpe (both vocabularies get "
                              "exactly tokenizer.vocab_size ids)")
        if arrays_path.exists() and texts_path.exists() and (tok_dir / "tokenizer.json").exists():
            tgt_tok = load_tokenizer(tok_dir)
            src_tok = load_tokenizer(src_tok_dir) if separate else tgt_tok
            with np.load(arrays_path) as f:
                arrays = {k: f[k] for k in f.files}
            texts = json.loads(texts_path.read_text(encoding="utf-8"))
            return self._task_data(src_tok, tgt_tok, arrays, texts)


        t0 = time.time()
        corpus = get_parallel_corpus(c.data.corpus)
        log.info("parallel corpus %s (%s -> %s): %d train, %d dev, %d test pairs [%.1fs]", corpus.name,
                 corpus.source_lang, corpus.target_lang, len(corpus.train), len(corpus.dev), len(corpus.test),
                 time.time() - t0)
        t0 = time.time()
        sources = "\n".join(s for s, _ in corpus.train)
        targets = "\n".join(t for _, t in corpus.train)
        kwargs = dict(vocab_size=c.tokenizer.vocab_size, special_tokens=tuple(c.tokenizer.special_tokens))
        copy_init_tokenizers(c, run_dir, ("tokenizer", "tokenizer_src") if separate else ("tokenizer",))
        if (tok_dir / "tokenizer.json").exists() and (not separate or (src_tok_dir / "tokenizer.json").exists()):
            tgt_tok = load_tokenizer(tok_dir)  # the init_from run's (or an interrupted preparation's)
            src_tok = load_tokenizer(src_tok_dir) if separate else tgt_tok
        elif separate:
            tgt_tok = train_tokenizer(c.tokenizer.kind, targets, out_dir=tok_dir, **kwargs)
            src_tok = train_tokenizer(c.tokenizer.kind, sources, out_dir=src_tok_dir, **kwargs)
        else:
            tgt_tok = src_tok = train_tokenizer(c.tokenizer.kind, sources + "\n" + targets, out_dir=tok_dir, **kwargs)

        if tgt_tok.pad_id != PAD_ID or src_tok.pad_id != PAD_ID:
            raise ValueError(f"the encdec model treats id {PAD_ID} as padding; this tokenizer pads with {tgt_tok.pad_id}")
        log.info("tokenizer %s (%s): vocab %d [%.1fs]", tgt_tok.kind, "separate" if separate else "shared",
                 tgt_tok.vocab_size, time.time() - t0)

        arrays, texts = {}, {}
        for split in SPLITS:
            pairs = getattr(corpus, split)
            src_NS, tgt_NT, kept = encode_pairs(src_tok, tgt_tok, pairs, c.data.src_len, c.data.tgt_len,
                                                drop_long=split == "train")
            if split == "train" and len(kept) < len(pairs):
                log.info("dropped %d of %d training pairs longer than data.src_len=%d / data.tgt_len=%d tokens",
                         len(pairs) - len(kept), len(pairs), c.data.src_len, c.data.tgt_len)
            arrays[f"{split}_src"], arrays[f"{split}_tgt"] = src_NS, tgt_NT
            if split != "train":
                texts[split] = [list(pairs[i]) for i in kept]
        if len(arrays["train_src"]) == 0 or len(arrays["test_src"]) == 0:
            raise ValueError(f"parallel corpus {corpus.name}: no usable training or test pairs")
        pairs = len(arrays["train_src"])
        rows = (pack_rows if c.data.pack_pairs else unpacked_rows)(arrays.pop("train_src"), arrays.pop("train_tgt"))
        arrays.update({f"train_{k}": v for k, v in rows.items()})
        fill = [float((rows[side] != 0).mean()) for side in ("src", "tgt")]
        log.info("training data: %d pairs in %d rows (%.0f%% / %.0f%% of source / target positions are tokens)",
                 pairs, len(rows["src"]), 100 * fill[0], 100 * fill[1])
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / ("tmp-" + ARRAYS_FILE)
        np.savez(tmp, **arrays)
        tmp.replace(arrays_path)
        texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        return self._task_data(src_tok, tgt_tok, arrays, texts)

    def _task_data(self, src_tok, tgt_tok, arrays, texts) -> TaskData:
        val = {split: {"src": arrays[f"{split}_src"], "tgt": arrays[f"{split}_tgt"], "pairs": texts[split]}
               for split in ("dev", "test")}
        train = {k[len("train_"):]: v for k, v in arrays.items() if k.startswith("train_")}
        return TaskData(tgt_tok, train, val, {"src_tokenizer": src_tok})

    # ------------------------------------------------------------------ training
    def sample_batch(self, train_arrays, key):
        n = train_arrays["src"].shape[0]
        rows_B = jax.random.randint(key, (self.config.data.batch_size,), 0, n)
        return {k: v[rows_B].astype(jnp.int32) for k, v in train_arrays.items()}

    def loss(self, model, batch, dropout_key, frozen):
        t = self.config.train
        objective, nll, n_tokens = teacher_forced_losses(model, batch, dropout_key, label_smoothing=t.label_smoothing,
                                                         z_loss=t.z_loss)
        count = jnp.maximum(n_tokens, 1.0)
        return LossOutput(objective / count, n_tokens, {"nll": nll / count})

    def synthetic_train_arrays(self, vocab_size: int, key: jax.Array) -> dict:
        d = self.config.data
        k1, k2 = jax.random.split(key)
        n = 4096
        src = np.asarray(jax.random.randint(k1, (n, d.src_len), 4, vocab_size, jnp.int32))
        tgt = np.asarray(jax.random.randint(k2, (n, d.tgt_len), 4, vocab_size, jnp.int32))
        return {k: jnp.asarray(v) for k, v in unpacked_rows(src, tgt).items()}

    def tokens_per_batch(self) -> int:
        """Positions the model processes per micro-batch: source plus decoder input (pads included)."""
        d = self.config.data
        return d.batch_size * (d.src_len + d.tgt_len - 1)

    def flops_per_token(self, vocab_size: int) -> float:
        d = self.config.data
        return flops.encoder_decoder_flops_per_token(self.config.model, vocab_size, d.src_len, d.tgt_len - 1)

    # ------------------------------------------------------------------ evaluation
    def make_evaluator(self, graphdef, data: TaskData, frozen=None):
        from flax import nnx


        c = self.config
        tokenizer = data.tokenizer

        @batching.data_parallel_eval  # split over the mesh's batch axes, sums over the global batch
        def eval_step(params, src_BS, tgt_BT):
            _, nll, n_tokens = teacher_forced_losses(nnx.merge(graphdef, nnx.State(params)), {"src": src_BS, "tgt": tgt_BT})
            return nll, n_tokens

        def nll(params, split, batch_size):
            src, tgt = data.val[split]["src"], data.val[split]["tgt"]
            # One compiled shape: all-pad rows (pad id 0: no targets) fill the last batch.
            total, count = batching.eval_sums(eval_step, params, (src, tgt), batch_size)
            return total / max(count, 1.0), int(count)

        def evaluator(params, full: bool = False, batch_size: int = 0) -> dict:
            batch_size = batch_size or c.data.batch_size
            loss, n_tokens = nll(params, "dev", batch_size)
            result = {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)), "val_tokens": n_tokens,
                      "eval/nll": loss}
            if not full:
                return result
            test_loss, _ = nll(params, "test", batch_size)
            result.update(test_loss=test_loss, test_ppl=math.exp(min(test_loss, 700.0)))
            model = nnx.merge(graphdef, nnx.State(params))
            test = data.val["test"]
            references = [target for _, target in test["pairs"]]
            t0 = time.time()
            greedy = translate(model, tokenizer, test["src"], max_len=c.data.tgt_len, beam_size=1)
            result["bleu_greedy"] = corpus_bleu(greedy, references).score
            t1 = time.time()
            K = c.sample.beam_size
            beam = translate(model, tokenizer, test["src"], max_len=c.data.tgt_len, beam_size=K,
                             length_penalty=c.sample.length_penalty)
            result[f"bleu_beam{K}"] = result["bleu"] = corpus_bleu(beam, references).score
            log.info("BLEU on %d test pairs: greedy %.2f [%.1fs], beam %d (alpha %.2f) %.2f [%.1fs]", len(references),
                     result["bleu_greedy"], t1 - t0, K, c.sample.length_penalty, result["bleu"], time.time() - t1)
            result["test_pairs"] = len(references)
            return result

        return evaluator


def translate(model, tokenizer, src_NS, *, max_len: int, beam_size: int = 1, length_penalty: float = 0.6,
              batch_size: int = DECODE_BATCH) -> list[str]:
    """Detokenized translations of padded source rows: greedy (beam_size 1) or the best beam.

    Decoding starts from [bos] and emits at most max_len - 1 tokens; text stops at the first eos.
    """

    src_NS = np.asarray(src_NS, np.int32)
    n = len(src_NS)
    batch_size = min(batch_size, n)
    pad = (-n) % batch_size  # one compiled shape; all-pad sources decode to something unused
    src_NS = np.concatenate([src_NS, np.zeros((pad, src_NS.shape[1]), np.int32)])
    prompt_B1 = np.full((batch_size, 1), tokenizer.bos_id, np.int32)
    out = []
    for i in range(0, len(src_NS), batch_size):
        source = src_NS[i:i + batch_size]
        if beam_size == 1:
            ids = generate(model, prompt_B1, max_new_tokens=max_len - 1, key=jax.random.key(0), temperature=0.0,
                           source=source, eos_id=tokenizer.eos_id)  # stops once every row has ended
        else:
            ids = beam_search(model, prompt_B1, beam_size=beam_size, max_new_tokens=max_len - 1,
                              eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                              length_penalty_alpha=length_penalty, source=source).sequences[:, 0]
        out.extend(np.asarray(ids)[:, 1:].tolist())
    return [detokenize(tokenizer, row) for row in out[:n]]


def detokenize(tokenizer, ids) -> str:
    ids = list(ids)
    if tokenizer.eos_id in ids:
        ids = ids[: ids.index(tokenizer.eos_id)]
    return tokenizer.decode(ids)


def encode_source(src_tokenizer, text: str, src_len: int) -> np.ndarray:
    """[1, src_len] padded source ids of one sentence (as in training: text + eos)."""
    src, _, _ = encode_pairs(src_tokenizer, src_tokenizer, [(text, "")], src_len, 2, drop_long=False)
    return src
