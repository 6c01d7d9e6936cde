"""metrics.jsonl and TensorBoard events: the final full evaluation next to the periodic ones."""

import json
import struct

import pytest
from tensorboardX.proto import event_pb2

from lmlab.train.metrics import MetricsWriter, read_metrics, write_final_metrics


def tensorboard_scalars(run_dir) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of every event file under run_dir/tb (TFRecord: length, crc, data, crc)."""
    scalars = {}
    for path in sorted((run_dir / "tb").glob("events.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_final_metrics_are_logged_under_their_own_names(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write(8, {"loss": 2.0})
    writer.write(8, {"val_loss": 1.5, "val_bpb": 2.5})  # periodic: train.eval_batches batches
    writer.close()
    write_final_metrics(tmp_path, 8, {"val_loss": 1.25, "val_bpb": 2.25, "val_tokens": 4096})
    records = read_metrics(tmp_path)
    assert records[-1] == {"step": 8, "final_val_loss": 1.25, "final_val_bpb": 2.25, "final_val_tokens": 4096.0}
    assert records[1] == {"step": 8, "val_loss": 1.5, "val_bpb": 2.5}
    scalars = tensorboard_scalars(tmp_path)
    assert scalars[("val_loss", 8)] == 1.5 and scalars[("final_val_loss", 8)] == 1.25
    assert scalars[("final_val_bpb", 8)] == pytest.approx(2.25)


def test_a_resumed_run_drops_the_final_line_of_the_run_it_continues(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write(8, {"loss": 2.0})
    writer.close()
    write_final_metrics(tmp_path, 8, {"val_loss": 1.25}, tensorboard=False)
    MetricsWriter(tmp_path, resume_step=8, tensorboard=False).close()  # train.steps raised: training goes on
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 8, "loss": 2.0}]
