"""lmlab.profile_summary: per-op time from Chrome/Perfetto trace events."""

import gzip
import json

import pytest

from lmlab.profile_summary import TraceError, op_kind, summarize, summarize_trace


def _op(pid, tid, ts, dur, op, module="jit_train_chunk"):
    return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": op,
            "args": {"hlo_op": op, "hlo_module": module}}


HOST, DEVICE = 1, 2
META = [{"ph": "M", "pid": HOST, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "M", "pid": DEVICE, "name": "process_name", "args": {"name": "/device:GPU:0"}}]


def test_device_kernels_are_summed_per_op_and_per_call():
    events = META + [
        _op(HOST, 7, 0, 100, "fusion.1"),  # host-side launch of the same op: not counted twice
        _op(DEVICE, 9, 0, 30, "fusion.1"), _op(DEVICE, 9, 40, 10, "custom-call.2"),
        _op(DEVICE, 9, 100, 30, "fusion.1"), _op(DEVICE, 9, 140, 10, "custom-call.2"),
        _op(DEVICE, 9, 200, 20, "all-reduce.3", module="jit_other"),
        {"ph": "X", "pid": DEVICE, "tid": 9, "ts": 300, "dur": 50, "name": "memcpy"},  # not an XLA op
    ]
    result = summarize(events, calls=2, module="train_chunk")
    assert result["on_device"] is True
    assert result["op_time_s"] == pytest.approx(80e-6 / 2)
    assert [o["op"] for o in result["ops"]] == ["fusion.1", "custom-call.2"]
    assert result["ops"][0] == {"op": "fusion.1", "time_s": pytest.approx(30e-6), "share": pytest.approx(0.75),
                                "per_call": 1.0}
    assert result["by_kind"] == {"fusion": pytest.approx(0.75), "custom-call": pytest.approx(0.25)}
    assert summarize(events)["by_kind"]["all-reduce"] == pytest.approx(20 / 100)


def test_a_multi_device_trace_counts_one_device():
    other = 3
    meta = META + [{"ph": "M", "pid": other, "name": "process_name", "args": {"name": "/device:GPU:1"}}]
    events = meta + [_op(DEVICE, 9, 0, 100, "fusion.1"), _op(other, 4, 0, 100, "fusion.1")]
    result = summarize(events)
    assert result["op_time_s"] == pytest.approx(100e-6) and result["ops"][0]["per_call"] == 1.0


def test_host_trace_counts_only_innermost_ops():
    # A CPU while-thunk spans the ops of its body: counting both would double the time.
    events = [_op(HOST, 1, 0, 100, "while.5"), _op(HOST, 1, 10, 40, "dot.6"), _op(HOST, 1, 60, 30, "fusion.7"),
              _op(HOST, 2, 10, 25, "fusion.8")]  # another thread, overlapping in time: counted
    result = summarize(events)
    assert result["on_device"] is False
    assert {o["op"] for o in result["ops"]} == {"dot.6", "fusion.7", "fusion.8"}
    assert result["op_time_s"] == pytest.approx(95e-6)


def test_op_kind_and_errors(tmp_path):
    assert op_kind("fusion.12") == "fusion" and op_kind("custom-call.3") == "custom-call"
    assert op_kind("loop_add_fusion") == "loop_add_fusion"
    with pytest.raises(TraceError, match="no timed XLA ops"):
        summarize(META)
    with pytest.raises(TraceError, match="no perfetto_trace"):
        summarize_trace(tmp_path)
    run = tmp_path / "plugins" / "profile" / "1"
    run.mkdir(parents=True)
    (run / "perfetto_trace.json.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(TraceError, match="cannot read"):
        summarize_trace(tmp_path)
    with gzip.open(run / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": [_op(HOST, 1, 0, 5, "dot.1")]}, f)
    assert summarize_trace(tmp_path)["ops"][0]["op"] == "dot.1"
