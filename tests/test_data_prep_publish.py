"""Publishing: a dataset is replaced all at once or not at all, never touches another dataset, and every
consumer refuses a publish that was cut short. Workers and temp folders do not outlive a killed build."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep import errors as E
from data_prep.config import SourceConfig
from data_prep.manifest import check_dataset_file, is_complete, read_manifest
from tests.data_prep_builds import run_build

REPO = Path(__file__).resolve().parents[1]


def _write_rows(path: Path, count: int, stem: str = "Question") -> Path:
    lines = (
        json.dumps({"prompt": f"{stem} {i}: what is {i} + {i}?", "reasoning": "Add.", "answer": f"{2 * i}"})
        for i in range(count)
    )
    path.write_text("\n".join(lines) + "\n")
    return path


def _build(out: Path, src: Path, name: str = "t", kind: str = "sft", **overrides) -> dict:
    settings = {"dataset_name": name, "verify_answers": False, "near_dedup": False, **overrides}
    return run_build([SourceConfig(str(src), "simple")], out, kind, **settings)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_building_math_never_touches_math_v2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, _write_rows(tmp_path / "v2.jsonl", 6, "Version two"), name="math.v2", val_size=2)
    theirs = {name: data for name, data in _snapshot(out).items() if name.startswith("math.v2")}
    assert "math.v2.jsonl" in theirs and "math.v2_val.jsonl" in theirs
    _build(out, _write_rows(tmp_path / "m.jsonl", 5), name="math", val_size=1)
    _build(out, _write_rows(tmp_path / "m.jsonl", 4), name="math")  # and again, now without a val split
    after = _snapshot(out)
    assert {name: after.get(name) for name in theirs} == theirs
    assert is_complete(out, "math.v2") and is_complete(out, "math")
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"math.v2", "math.v2_val", "math"}  # math's old val entry went with its file
    assert not (out / "math_val.jsonl").exists()


def test_only_files_listed_by_the_previous_manifest_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, _write_rows(tmp_path / "s.jsonl", 6), val_size=2)
    (out / "t.notes.txt").write_text("my own notes")  # not data_prep's: must survive every rebuild
    _build(out, _write_rows(tmp_path / "s.jsonl", 6))
    assert (out / "t.notes.txt").read_text() == "my own notes"
    assert not (out / "t_val.jsonl").exists()


def test_a_corrupt_dataset_info_stops_the_run_before_any_file_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, _write_rows(tmp_path / "big.jsonl", 300))
    (out / "dataset_info.json").write_text("{not json")
    before = _snapshot(out)
    with pytest.raises(E.DataPrepError, match=r"dataset_info\.json: existing file is not valid JSON"):
        _build(out, _write_rows(tmp_path / "small.jsonl", 2))
    assert _snapshot(out) == before
    assert len((out / "t.jsonl").read_text().splitlines()) == 300


def test_a_name_that_collides_with_another_dataset_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, _write_rows(tmp_path / "a.jsonl", 3), name="foo_val")
    before = _snapshot(out)
    with pytest.raises(E.DataPrepError, match=r"foo_val\.jsonl belongs to dataset 'foo_val'"):
        _build(out, _write_rows(tmp_path / "b.jsonl", 6), name="foo", val_size=2)
    assert _snapshot(out) == before


def test_an_error_while_publishing_restores_the_previous_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _build(out, _write_rows(tmp_path / "old.jsonl", 8), val_size=2)
    before = _snapshot(out)
    real_replace = os.replace

    failed: list[str] = []

    def failing_replace(src, dst):  # type: ignore[no-untyped-def]
        if Path(dst).name == "t.rejects.jsonl" and not failed:  # after t.jsonl was already swapped in
            failed.append(str(dst))
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        _build(out, _write_rows(tmp_path / "new.jsonl", 3))
    monkeypatch.undo()
    assert _snapshot(out) == before
    assert is_complete(out, "t")
    assert not [p for p in out.iterdir() if ".data_prep-tmp-" in p.name]


def test_ctrl_c_during_publishing_waits_until_the_publish_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _build(out, _write_rows(tmp_path / "old.jsonl", 8), val_size=2)
    real_replace = os.replace

    def interrupted_replace(src, dst):  # type: ignore[no-untyped-def]
        if Path(dst).name == "t.jsonl":
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the first and the second file
        return real_replace(src, dst)

    # A shell starts background jobs with SIGINT ignored, and Python keeps that: set Ctrl-C's usual meaning.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(os, "replace", interrupted_replace)
    try:
        with pytest.raises(KeyboardInterrupt):
            _build(out, _write_rows(tmp_path / "new.jsonl", 3))
    finally:
        signal.signal(signal.SIGINT, inherited)
    monkeypatch.undo()
    assert is_complete(out, "t")  # the new dataset, whole: the interrupt came after the last step
    assert len((out / "t.jsonl").read_text().splitlines()) == 3 and not (out / "t_val.jsonl").exists()


_KILL_MID_PUBLISH = """
import os, signal, sys
from pathlib import Path
real_replace = os.replace
def replace(src, dst):
    if Path(dst).name == "t.rejects.jsonl":  # the train file is already new, the rest is not
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
os.replace = replace
from data_prep.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_every_consumer_refuses_a_publish_cut_by_kill(tmp_path: Path) -> None:
    from ring_trl.grpo.data import DatasetFormatError, load_prompt_dataset
    from ring_trl.llamafactory.preflight import check_datasets, load_recipe

    out = tmp_path / "out"
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _build(out, src, kind="rlvr", val_size=2)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"dataset: t\ndataset_dir: {out}\n")
    assert check_datasets(load_recipe(recipe_file)) == []
    assert len(load_prompt_dataset(out / "t.jsonl")) == 4

    src.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    args = ["build-rlvr", "--input", str(src), "--format", "simple", "--output-dir", str(out), "--name", "t"]
    args += ["--cutoff-len", "0", "--workers", "0", "--no-progress", "--no-verify", "--val-size", "1"]
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_PUBLISH, *args], cwd=REPO, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert read_manifest(out / "t.manifest.json")["state"] == "publishing"
    assert not is_complete(out, "t")
    [problem] = check_datasets(load_recipe(recipe_file))
    assert "interrupted while publishing" in problem
    with pytest.raises(DatasetFormatError, match="interrupted while publishing"):
        load_prompt_dataset(out / "t.jsonl")
    assert "interrupted while publishing" in (check_dataset_file(out / "t_val.jsonl") or "")
    # the next build repairs it
    _build(out, src, kind="rlvr", val_size=1)
    assert is_complete(out, "t") and check_datasets(load_recipe(recipe_file)) == []


def test_a_file_edited_after_publishing_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, _write_rows(tmp_path / "s.jsonl", 4))
    manifest = read_manifest(out / "t.manifest.json")
    assert manifest["state"] == "complete" and set(manifest["entries"]) == {"t"}
    assert {"t.jsonl", "t.rejects.jsonl", "t.report.json", "t.report.md", "t.lengths.png"} == set(
        manifest["files"]
    )
    assert check_dataset_file(out / "t.jsonl") is None
    with open(out / "t.jsonl", "a") as handle:
        handle.write('{"messages": []}\n')
    assert "changed since dataset 't' was published" in (check_dataset_file(out / "t.jsonl") or "")
    assert check_dataset_file(tmp_path / "s.jsonl") is None  # a file no manifest claims is the user's own


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, waiting for init to reap it


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_leaves_no_workers_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    args = ["build-sft", "--input", str(fifo), "--format", "simple", "--output-dir", str(out), "--name", "t"]
    args += ["--cutoff-len", "0", "--workers", "2", "--batch-size", "2", "--no-progress", "--no-verify"]
    build = subprocess.Popen([sys.executable, "-m", "data_prep", *args], cwd=REPO)
    writer, workers = None, []
    try:
        deadline = time.monotonic() + 120
        while writer is None:  # the build opens the FIFO once it has started
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert build.poll() is None and time.monotonic() < deadline, (
                    "the build never opened its input"
                )
                time.sleep(0.2)
        line = json.dumps({"prompt": "Streaming question?", "reasoning": "r", "answer": "a"}) + "\n"
        os.write(writer, (line * 6).encode())  # three batches: the pool starts; then the input stays open
        while len(workers) < 2:
            assert time.monotonic() < deadline, "the worker pool never started"
            time.sleep(0.2)
            workers = [pid for pid in _children(build.pid) if _alive(pid)]
        build.send_signal(signal.SIGKILL)
        build.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "pool workers outlived the killed build"
    finally:
        if build.poll() is None:
            build.kill()
        for pid in workers:  # never leave orphans behind, even when the assertion above failed
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if writer is not None:
            os.close(writer)
    assert [p for p in out.iterdir() if p.is_dir()]  # the killed run's temp folder (spools) is left behind
    _build(out, _write_rows(tmp_path / "s.jsonl", 3))
    assert not [p for p in out.iterdir() if p.is_dir()]  # ... and the next run removed it
