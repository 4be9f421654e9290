"""Atomic writes: a failed write leaves the old file whole and no temporary file behind."""

import json

import pytest

from videollm_online.utils.files import atomic_path, report_json, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "history.json"
    write_json_atomic(target, {"turns": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"turns": 2, "half of')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"turns": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_report_json_prints_and_writes_the_same_result(tmp_path, capsys):
    result = {"command": "python benchmarks/x.py", "frames_per_s": 12.5, "note": "é"}
    report_json(result, tmp_path / "deep" / "result.json")
    printed = capsys.readouterr().out
    assert json.loads(printed) == result
    assert (tmp_path / "deep" / "result.json").read_text() == printed
    report_json(result)  # no path: printed only
    assert json.loads(capsys.readouterr().out) == result
