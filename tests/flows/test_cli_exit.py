"""How the ``sim2real`` process ends: everything a normal exit does for Python code (non-daemon threads
joined, ``atexit`` hooks run, output flushed, the command's exit status), without the interpreter's
final teardown, where pyarrow's thread pools now and then abort a finished command with
"terminate called without an active exception" (exit -6; seen in CI after ``sim2real metrics``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Run in a fresh interpreter: a hook, a late thread and an object finalised only at teardown record
# what the exit did, then the CLI runs as the console script does (main() without argv).
PROBE = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from sim2real.flows.cli import main

    atexit.register(lambda: print("atexit hook ran", file=sys.stderr))

    def late():
        time.sleep(0.3)
        print("late thread finished", file=sys.stderr)

    threading.Thread(target=late).start()
    from concurrent.futures import ThreadPoolExecutor
    idle = ThreadPoolExecutor(1)  # never shut down: its worker thread waits for the exit to stop it
    idle.submit(time.sleep, 0.1)

    class Teardown:
        def __del__(self):
            print("interpreter teardown ran", file=sys.stderr)

    keep = Teardown()  # a module global: only the interpreter's final teardown finalises it
    print("buffered stdout line", end="")  # no newline and no flush: the exit must flush it
    sys.argv = ["sim2real", *sys.argv[1:]]
    main()
    """
)


def run_probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["metrics"], 0),
        (["metrics", "--version", "no-such-dataset@latest"], 2),  # a user error: one line, exit 2
    ],
)
def test_the_cli_process_exits_like_python_without_the_final_teardown(
    tmp_path: Path, args: list[str], status: int
) -> None:
    done = run_probe(*args, "--root", str(tmp_path / "root"))
    said = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == status, said
    assert done.stdout.startswith("buffered stdout line"), said
    assert "late thread finished" in done.stderr and "atexit hook ran" in done.stderr, said
    # the thread is joined before the hooks run, as the interpreter orders them
    assert done.stderr.index("late thread finished") < done.stderr.index("atexit hook ran"), said
    assert "interpreter teardown ran" not in done.stderr, said
    assert "Traceback" not in done.stderr, said


def test_an_unexpected_error_prints_its_traceback_and_exits_1(tmp_path: Path) -> None:
    broken = textwrap.dedent(
        """
        import sys
        from sim2real.storage import metrics_store
        from sim2real.flows.cli import main

        def fail(self, version=None):
            raise RuntimeError("a bug, not a user error")

        metrics_store.MetricsStore.latest_rows = fail
        sys.argv = ["sim2real", *sys.argv[1:]]
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", broken, "metrics", "--root", str(tmp_path / "root")],
        capture_output=True, text=True, timeout=120,
    )
    said = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 1, said
    assert "Traceback" in done.stderr and "RuntimeError: a bug, not a user error" in done.stderr, said


def test_a_command_started_with_stdout_closed_exits_0(tmp_path: Path) -> None:
    # `sim2real versions >&-`: Python sets sys.stdout to None; the exit must not trip over it
    cli = f'"{sys.executable}" -c "from sim2real.flows.cli import main; main()"'
    command = f'{cli} versions --root "{tmp_path}" >&-'
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
