"""The data CLI end to end, as a user runs it: toysim → ingest --json → urls → stock webdataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import webdataset as wds

CLI = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_toysim_ingest_urls(tmp_path: Path):
    env = {**os.environ, "SIM2REAL_ROOT": str(tmp_path / "root")}
    out = tmp_path / "export"
    made = run(
        "toysim", "--style", "real", "--frames", "5", "--size", "24x48", "--out", str(out), "--json", env=env
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout.strip().splitlines()[-1])["frames"] == 5

    ingested = run("ingest", str(out), "--name", "toy-real", "--json", env=env)
    assert ingested.returncode == 0, ingested.stderr
    result = json.loads(ingested.stdout.strip().splitlines()[-1])
    assert set(result) >= {"name", "version", "samples", "quarantined", "shards", "path"}
    assert result["samples"] == 5 and result["quarantined"] == 0
    assert "Traceback" not in ingested.stderr and "ERROR" not in ingested.stderr

    urls = run("urls", f"toy-real@{result['version']}", "--json", env=env)
    located = json.loads(urls.stdout.strip().splitlines()[-1])
    assert located["wids"].endswith("index.json")
    assert len(list(wds.WebDataset(located["webdataset"], shardshuffle=False))) == 5

    listed = json.loads(run("versions", "--json", env=env).stdout.strip().splitlines()[-1])
    assert [v["ref"] for v in listed["versions"]] == [f"toy-real@{result['version']}"]

    missing = run("urls", "toy-real@nope", env=env)
    assert missing.returncode == 2 and "error: toy-real@nope" in missing.stderr
