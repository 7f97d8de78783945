"""Issue 25: a second process writing into a running party's output folder is refused at
once, naming the holder; the same process (the one-machine demo) may nest; the lock goes
with the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from vfl.exceptions import ConfigError
from vfl.outputs import output_lock

HOLD = textwrap.dedent("""
    import sys, time
    from vfl.outputs import output_lock
    with output_lock(sys.argv[1], "bank_b", sys.argv[2]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_process_is_refused_while_the_first_runs(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "run"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by another 'vfl run' \(pid "
                                              rf"{holder.pid}, bank_b\): is bank_b already"):
            with output_lock(tmp_path, "bank_b", "run"):
                pass
        # serving the current model while it trains the next one is allowed, and so is
        # another party in the same folder
        with output_lock(tmp_path, "bank_b", "serve"), output_lock(tmp_path, "bank_a", "run"):
            pass
    finally:
        holder.kill()
        holder.wait()
    # the lock went with the process
    with output_lock(tmp_path, "bank_b", "run"):
        with output_lock(tmp_path, "bank_b", "run"):  # one process: parties may share
            pass


def test_an_unusable_folder_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="Cannot use the output folder"):
        with output_lock(f, "bank_b"):
            pass
