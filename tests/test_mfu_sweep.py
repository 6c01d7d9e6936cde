"""experiments/mfu_sweep.py: every variant is a valid config, and a tiny sweep writes, resumes and tabulates."""

import importlib.util
import json
from pathlib import Path

import pytest

from lmlab import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mfu_sweep", ROOT / "experiments" / "mfu_sweep.py")
mfu_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mfu_sweep)

TINY = ["data.seq_len=32", "data.batch_size=2", "tokenizer.vocab_size=64", "model.n_layers=1",
        "model.d_model=32", "model.n_heads=2", "model.n_kv_heads=2", "model.d_ff=64", "model.max_len=64"]


@pytest.mark.parametrize("name", sorted(mfu_sweep.VARIANTS))
def test_every_variant_is_a_valid_config(name):
    config, overrides, _ = mfu_sweep.VARIANTS[name]
    loaded = config_lib.load(ROOT / config, overrides)
    for o in overrides:  # the override really took
        key, value = o.split("=")
        section, field = key.split(".")
        assert str(loaded[section][field]) == value


@pytest.mark.slow  # a GPU tuning tool's bookkeeping
def test_sweep_appends_rows_skips_done_variants_and_records_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mfu_sweep, "VARIANTS", {
        "tiny": ("configs/gpt_shakespeare.py", TINY, ""),
        "bad": ("configs/gpt_shakespeare.py", [*TINY, "model.n_heads=3"], "--xla_dump_to=/dev/null"),
    })
    out = tmp_path / "results.jsonl"
    assert mfu_sweep.main(["--out", str(out), "--steps", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["tiny", "bad"]
    tiny, bad = rows
    assert tiny["tokens_per_sec"] == pytest.approx(2 * 32 / tiny["step_time_s"])
    assert tiny["overrides"] == TINY and "error" not in tiny
    assert "n_heads" in bad["error"] and "\n" not in bad["error"]  # the CLI's one-line error

    # A second run skips what succeeded and retries only the failure.
    monkeypatch.setitem(mfu_sweep.VARIANTS, "bad", ("configs/gpt_shakespeare.py", TINY, ""))
    assert mfu_sweep.main(["--out", str(out), "--steps", "2", "--only", "tiny"]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "tiny: already in" in capsys.readouterr().err

    assert mfu_sweep.main(["--out", str(out), "--table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| tiny |") and "tokens/s" not in table[2]
    assert table[3].startswith("| bad |") and "failed:" in table[3]
