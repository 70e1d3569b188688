"""Issue 16 items 4 and 7 through the real CLI: every expected error is one line on stderr naming the
file and the reason, exit code 2, no traceback, and with ``--json`` a JSON error object as the last
stdout line; degenerate versions fail fast instead of spinning or hiding the good one."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from sim2real.flows.cli import main
from sim2real.storage.shards import write_shard
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.versions import DatasetStore

CLI = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]


def run_cli(args: list[str], capfd) -> tuple[int, list[str], list[str]]:
    """``sim2real ARGS`` run in this process (the Prefect harness): exit code, stdout and stderr lines."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return code, out.strip().splitlines(), [line for line in err.strip().splitlines() if line.strip()]


def assert_user_error(code: int, out: list[str], err: list[str], *needles: str) -> dict:
    assert code == 2, (out, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    error = json.loads(out[-1])
    assert error["error"] == err[0][len("error: "):] and error["exit_code"] == 2
    return error


def test_cityscapes_without_split_folder_subprocess(tmp_path: Path):
    """The report, as a user runs it: a Cityscapes tree without leftImg8bit/val, with --json."""
    (tmp_path / "cs" / "leftImg8bit" / "train").mkdir(parents=True)
    env = {**os.environ, "SIM2REAL_ROOT": str(tmp_path / "root")}
    done = subprocess.run([*CLI, "ingest", str(tmp_path / "cs"), "--name", "cs", "--format", "cityscapes",
                           "--split", "val", "--json"], capture_output=True, text=True, env=env, timeout=600)
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert_user_error(done.returncode, done.stdout.strip().splitlines(), err,
                      str(tmp_path / "cs" / "leftImg8bit" / "val"), "no such folder")


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["ingest", "{export}", "--name", "x", "--option", "tags"], ["--option", "expected KEY=VALUE"]),
        (["ingest", "{tmp}/nowhere", "--name", "x"], ["nowhere", "does not exist"]),
        (["ingest", "{export}", "--name", "x", "--format", "nosuch"], ["unknown source format 'nosuch'"]),
        (["ingest", "{export}", "--name", "Bad/Name"], ["dataset name 'Bad/Name'"]),
        (["ingest", "{tmp}/carla", "--name", "x", "--format", "carla", "--option", "tags=newest"],
         ["tags='newest'", "expected a CARLA release"]),
        (["ingest", "{tmp}/gta5", "--name", "x", "--format", "gta5"], ["gta5", "images", "no such folder"]),
        (["urls", "nope@latest"], ["nope@latest", "no committed version"]),
        (["urls", "toy@0123456789abcdef"], ["toy@0123456789abcdef", "no committed version"]),
        (["toysim", "--out", "{tmp}/t", "--size", "4x4"], ["size '4x4'"]),
        (["nosuchcommand"], ["No such command"]),
        (["evaluate", "--real", "toy@latest", "--val", "toy@latest", "--profile", "{tmp}/none.yaml"],
         ["none.yaml"]),
        (["evaluate", "--real", "toy@latest", "--val", "toy@latest", "--task", "nosuch"],
         ["unknown perception task 'nosuch'"]),
        (["versions", "Bad/Name"], ["dataset name 'Bad/Name'"]),
        (["metrics", "--version", "nope@v1"], ["nope@v1", "no committed version"]),
        (["translate", "nope@latest", "--translator", "abc"], ["nope@latest", "no committed version"]),
        (["promote", "nope@v1", "--alias", "production"], ["nope@v1", "no committed version"]),
        (["gate", "nope@v1"], ["nope@v1", "no committed version"]),
        (["nightly", "--config", "{tmp}/none.yaml"], ["none.yaml", "does not exist"]),
        (["distill", "--teacher", "nope", "--source", "nope@latest"], ["no translators entry 'nope'"]),
    ],
)
def test_user_errors_are_one_line_with_json(args, needles, tmp_path: Path, capfd, monkeypatch):
    monkeypatch.setenv("SIM2REAL_ROOT", str(tmp_path / "root"))
    export = tmp_path / "export"
    write_export(export, ToySimConfig(style="sim", height=16, width=32, seed=1), 2)
    (tmp_path / "carla" / "rgb").mkdir(parents=True)
    (tmp_path / "gta5").mkdir()
    args = [a.format(tmp=tmp_path, export=export) for a in args]
    code, out, err = run_cli([*args, "--json"], capfd)
    assert_user_error(code, out, err, *(n.format(tmp=tmp_path) for n in needles))


def _bad_gta5(root: Path, frames: int) -> None:
    """A GTA5 export whose every frame is bad: empty images and a label of the wrong size."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(frames):
        (root / "images" / f"{i:05d}.png").write_bytes(b"")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "labels" / f"{i:05d}.png")


@pytest.mark.usefixtures("prefect_harness")
def test_all_quarantined_export_is_not_committed(tmp_path: Path, capfd):
    root = str(tmp_path / "root")
    good = tmp_path / "good"
    write_export(good, ToySimConfig(style="sim", height=16, width=32, seed=2), 3)
    code, out, _ = run_cli(["ingest", str(good), "--name", "cams", "--root", root, "--json"], capfd)
    assert code == 0
    first = json.loads(out[-1])["version"]
    _bad_gta5(tmp_path / "bad", 4)
    code, out, err = run_cli(["ingest", str(tmp_path / "bad"), "--name", "cams", "--format", "gta5",
                              "--root", root, "--json"], capfd)
    error = assert_user_error(code, out, err, "no samples: all 4 frame(s) quarantined", "nothing committed",
                              "rgb file is empty (0 bytes)", "quarantine.parquet")
    where = error["error"].rsplit("every reason in ", 1)[1]
    assert Path(where).exists()
    store = DatasetStore(root)
    assert [v.version for v in store.list_versions("cams")] == [first]
    assert store.open("cams@latest").version == first  # the good version is still @latest


def _legacy_empty_version(root: str, name: str) -> None:
    """A 0-sample version committed by an older release (this one refuses to commit it)."""
    store = DatasetStore(root)
    vdir = store.version_dir(name, "0000000000000000")
    write_shard(fsspec.filesystem("file"), store.shard_path(name, "0000000000000000", 0), [])
    store.write_json(f"{vdir}/version.json", {
        "name": name, "version": "0000000000000000", "samples": 0, "quarantined": 3, "kind": "ingest",
        "shards": [{"file": f"{name}-000000.tar", "nsamples": 0, "filesize": 10240, "md5": ""}],
        "created_at": 0})


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("command", ["evaluate", "train-translator"])
def test_streams_over_an_empty_version_fail_fast(command, tmp_path: Path, capfd):
    """4b: ``evaluate --real EMPTY`` and ``train-translator --source EMPTY`` used to spin at 100 % CPU."""
    root = str(tmp_path / "root")
    export = tmp_path / "export"
    write_export(export, ToySimConfig(style="real", height=32, width=64, seed=4), 4)
    assert run_cli(["ingest", str(export), "--name", "real", "--root", root], capfd)[0] == 0
    _legacy_empty_version(root, "empty")
    if command == "evaluate":
        args = ["evaluate", "--real", "empty@latest", "--val", "real@latest", "--task", "segmentation",
                "--profile", "tiny", "--seeds", "1"]
    else:
        args = ["train-translator", "--source", "empty@latest", "--target", "real@latest", "--steps", "1"]
    code, out, err = run_cli([*args, "--root", root, "--json"], capfd)
    assert_user_error(code, out, err, "empty-000000.tar", "no samples")


@pytest.mark.usefixtures("prefect_harness")
def test_non_utf8_file_names_through_the_flow(tmp_path: Path, capfd):
    """1a, through Prefect and the CLI: a Latin-1 ``ß`` in a GTA5 file name aborted the whole ingest."""
    root = os.path.join(os.fsencode(tmp_path), b"gta5")
    for folder in (b"images", b"labels"):
        os.makedirs(os.path.join(root, folder))
    for stem in (b"stra\xdfe", b"00001", b"two words"):
        rgb = np.random.default_rng(len(stem)).integers(0, 256, (8, 16, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(os.fsdecode(os.path.join(root, b"images", stem + b".PNG")))
        label = os.fsdecode(os.path.join(root, b"labels", stem + b".png"))
        Image.fromarray(np.full((8, 16), 7, np.uint8)).save(label)
    store_root = str(tmp_path / "root")
    code, out, err = run_cli(["ingest", os.fsdecode(root), "--name", "gta", "--format", "gta5",
                              "--root", store_root, "--json"], capfd)
    assert code == 0, err
    result = json.loads(out[-1])
    assert (result["samples"], result["quarantined"]) == (3, 0)
    version = DatasetStore(store_root).open("gta@latest")
    assert sorted(version.manifest()["key"].to_pylist())[0] == "00001"


@pytest.mark.usefixtures("prefect_harness")
def test_failure_logs_are_held_back_only_for_user_errors():
    """A user error's Prefect tracebacks are dropped (the CLI's one line says it); a bug's are printed."""
    from prefect import flow

    from sim2real.flows.runtime import run_quietly

    @flow(name="user-error")
    def user_error() -> None:
        raise FileNotFoundError("/data/x: no such folder")

    @flow(name="bug")
    def bug() -> None:
        raise KeyError("a code bug")

    # A console handler of our own: Prefect's binds the stderr of whichever test set logging up first,
    # so capturing the process's stderr depends on test order.
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    logging.getLogger("prefect").addHandler(handler)
    try:
        with pytest.raises(FileNotFoundError):
            run_quietly(user_error)
        assert "Traceback" not in console.getvalue()
        with pytest.raises(KeyError):
            run_quietly(bug)
        err = console.getvalue()
    finally:
        logging.getLogger("prefect").removeHandler(handler)
    assert "Traceback" in err and "a code bug" in err
