"""Fixtures of the search tests: a trained cnn-s on digits, and a PostgreSQL server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn-s trained 3 epochs on digits: ``cnn.onnx`` with its state dict ``cnn.pt`` beside it."""
    from edgeopt import TrainConfig
    from edgeopt import save_trained
    from edgeopt import train

    out = tmp_path_factory.mktemp("trained") / "cnn.onnx"
    result = train("zoo:cnn-s", "digits", TrainConfig(epochs=3, seed=0))
    save_trained(result, "digits", out)
    return out


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``$EDGEOPT_TEST_POSTGRES_URL``, or a throwaway server started with initdb + pg_ctl.

    initdb refuses to run as root, so as root the server runs as the ``postgres`` user (which
    Debian's postgresql package creates). Skips, saying why, where no server can start.
    """
    given = os.environ.get("EDGEOPT_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL: initdb is not installed; set EDGEOPT_TEST_POSTGRES_URL")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no PostgreSQL: running as root and there is no 'postgres' user")
        if shutil.which("runuser") is None:
            pytest.skip("no PostgreSQL: running as root and runuser is missing")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="edgeopt-pg-"))
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, check=False, timeout=120
        )

    init = run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "edgeopt", "-N")
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no PostgreSQL: initdb failed ({init.stderr.strip()[-200:]})")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    if start.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no PostgreSQL: pg_ctl start failed ({start.stderr.strip()[-200:]})")
    try:
        yield f"postgresql://edgeopt:secret-pw@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
