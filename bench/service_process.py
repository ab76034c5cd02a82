"""A service started as a separate process for the benchmarks (imported by sibling
scripts: python puts bench/ on sys.path when running one of them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


class Service:
    """``python -m MODULE --listen 127.0.0.1:0 ARGS`` with its reported address; logs
    (at WARNING) go to ``logfile``."""

    def __init__(self, module: str, *args: str, logfile: Path) -> None:
        self.logfile = logfile
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=logfile.open("a"),
            text=True,
            env={**os.environ, "DATADOG_LOG_LEVEL": "WARNING"},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"{module} did not start (log: {logfile}):\n{logfile.read_text()}")
        self.address = match.group(1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
