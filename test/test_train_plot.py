"""Loss plots of one run or of consecutive stages (mirage_core.train.plot)."""

from __future__ import annotations

import json

from mirage_core.train.plot import main, stage_records


def _run(d, steps, loss):
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": loss, "lr": 1e-4, "memory_dropped": s % 3 == 0}) + "\n"
        for s in steps))
    return d


def test_stages_follow_each_other_on_one_step_axis(tmp_path):
    a = _run(tmp_path / "a", range(10, 101, 10), 1.0)
    b = _run(tmp_path / "b", range(10, 51, 10), 0.5)
    recs, starts = stage_records([a, b])
    assert starts == [0, 100]
    assert [r["step"] for r in recs] == [*range(10, 101, 10), *range(110, 151, 10)]
    assert [r["loss"] for r in recs[-5:]] == [0.5] * 5
    out = tmp_path / "loss.png"
    assert main([str(a), str(b), str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
