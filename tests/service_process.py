"""A service started as a real process, for crash and end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path


class ServiceProcess:
    """``python -m MODULE --listen 127.0.0.1:0 ARGS``; ``address`` is what it reported."""

    def __init__(
        self,
        module: str,
        *args: str,
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--listen", "127.0.0.1:0", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log.open("a"),
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"{module} did not start: {line!r}\n{log.read_text()}")
        self.address = match.group(1)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM, then wait for the graceful exit; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)

    def stop(self) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def connector_process(*args: str, log: Path) -> ServiceProcess:
    """A connector service process (``--config FILE`` or ``--root DIR`` in ``args``)."""
    return ServiceProcess("datadog_platform.connector.main", *args, log=log)
