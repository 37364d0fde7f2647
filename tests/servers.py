"""Real `transformers serve` processes on loopback, for the tests of the remote engine, the vision
lane and the pool of generation servers.

`Served` is one process on a fixed port, which a test may kill and start again on that port;
`serving(folder)` is one for the length of a `with` block. Each server's log goes to a file
(a pipe nobody reads would stall a chatty server) and is the error when it fails to start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def free_port() -> int:
    """A loopback port nobody is listening on just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A `transformers serve` process with the model in `folder` preloaded, on a fixed loopback
    port; `threads` caps its torch threads (several servers on a small machine)."""

    def __init__(self, folder: Path, *, threads: int | None = None) -> None:
        self.folder = folder
        self.threads = threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    def start(self) -> None:
        exe = Path(sys.executable).with_name("transformers")
        if self.log is not None:
            self.log.close()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open across calls; see stop)
        env = os.environ | ({"OMP_NUM_THREADS": str(self.threads)} if self.threads else {})
        self.proc = subprocess.Popen(
            [str(exe), "serve", str(self.folder), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=env,
        )

    def wait_ready(self, limit: float = 120) -> None:
        """Until `/health` answers; raises with the server's log if it exits or takes longer."""
        assert self.proc is not None and self.log is not None
        deadline = time.monotonic() + limit
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError(self.log.read().decode(errors="replace")) from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait_stopped(self) -> None:
        if self.proc is not None:
            self.proc.wait(10)
        if self.log is not None:
            self.log.close()


@contextlib.contextmanager
def serving(folder: Path, *, start_timeout: float = 90) -> Iterator[str]:
    """`transformers serve` with the model in `folder` preloaded, on loopback; yields its /v1
    base URL and stops the server after."""
    server = Served(folder)
    server.start()
    try:
        server.wait_ready(start_timeout)
        yield server.url
    finally:
        server.stop()
        server.wait_stopped()
