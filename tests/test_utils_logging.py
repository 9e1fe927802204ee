"""TensorBoard summaries (gream_jax/utils/logging.py): metric names with '@' become legal tags."""

import glob
import logging
import struct

from tensorboardX.proto import event_pb2

from gream_jax.utils.logging import SummaryWriter


def _scalars(path):
    """(tag, step, value) of every scalar in a TFRecord event file (length, crc, data, crc)."""
    out, data, pos = [], open(path, "rb").read(), 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return out


def test_scalars_are_written_under_legal_tags(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    writer = SummaryWriter(str(tmp_path))
    writer.scalars(3, {"valid/recall@10": 0.25, "train/loss": 1.5})
    writer.scalars(5, {"valid/recall@10": 0.5})
    writer.close()
    assert "illegal" not in caplog.text
    (path,) = glob.glob(str(tmp_path / "*tfevents*"))
    assert _scalars(path) == [("valid/recall_10", 3, 0.25), ("train/loss", 3, 1.5), ("valid/recall_10", 5, 0.5)]
