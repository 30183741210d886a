"""``python -m flows.server CMD``: one private Prefect server for a whole job (``make run``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent.parent
PROBE = ("import os, urllib.request; url = os.environ['PREFECT_API_URL']; "
         "print(url.startswith('http://127.0.0.1:'), "
         "urllib.request.urlopen(url + '/health', timeout=10).status); raise SystemExit(3)")


def test_one_server_for_the_whole_command_and_exit_code_passed_through(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "flows.server", sys.executable, "-c", PROBE],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
                          start_new_session=True)
    # the child saw a healthy server on 127.0.0.1, and its exit code is the job's
    assert proc.stdout.split() == ["True", "200"], proc.stderr[-2000:]
    assert proc.returncode == 3
