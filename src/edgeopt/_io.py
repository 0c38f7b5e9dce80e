"""Atomic file writes (a file appears complete under its name, or not at all), and YAML reads
whose errors name the file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Every temporary file and folder edgeopt makes beside its outputs starts with this and the
#: pid of the process that made it, so that one a killed process left behind can be told from
#: one a running process is using, and removed by the next run.
SCRATCH = ".edgeopt-"


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_scratch(folder: Path) -> None:
    """Remove the ``.edgeopt-PID-*`` files and folders in ``folder`` whose process is gone (a
    killed or crashed run's leftovers); those of running processes stay."""
    import shutil

    if not folder.is_dir():
        return
    for entry in folder.glob(f"{SCRATCH}*"):
        pid = entry.name[len(SCRATCH) :].split("-", 1)[0]
        if pid.isdigit() and not _is_alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def check_writable(path: Path) -> None:
    """Refuse, before any work, an output that cannot be written where it goes (a read-only
    file system, a path under /proc): a probe file is made and removed in the nearest folder
    that exists; no folder is made.

    Raises:
        InputError: one sentence naming the output and the folder.
    """
    from edgeopt.errors import InputError

    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=scratch_prefix("probe-"), dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"{path}: cannot write in {folder} ({reason}).") from None


def scratch_prefix(label: str = "") -> str:
    """The name prefix of this process's scratch entries (see :data:`SCRATCH`)."""
    return f"{SCRATCH}{os.getpid()}-{label}"


@contextmanager
def scratch_dir(parent: Path, label: str = "") -> Iterator[Path]:
    """A temporary folder in ``parent`` (made if need be), removed afterwards; what killed
    runs left in ``parent`` is swept first."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep_scratch(parent)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix(label), dir=parent) as folder:
        yield Path(folder)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_scratch(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=scratch_prefix(f"{path.name}."), suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


#: A target profile or a recipe is a few KB; larger YAML is not read.
MAX_YAML_BYTES = 1 << 20
#: YAML aliases (``*name``) a file may use, and the values it may hold once every alias is
#: expanded: nine aliases of nine aliases of ... ("billion laughs": a 1 KB file whose
#: ``description`` expanded to 9^9 strings took 71 s and 3 GB).
MAX_YAML_ALIASES = 100
MAX_YAML_VALUES = 100_000


def _expanded_values(value: Any, budget: int) -> int:
    """How many values ``value`` holds with its shared parts counted each time they are
    reached, stopping as soon as that passes ``budget``."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > budget:
            break
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return count


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path`` (safe loader, at most ``MAX_YAML_BYTES`` and
    ``MAX_YAML_ALIASES`` aliases); a missing, oversized or bad file is one sentence naming it."""
    import yaml

    from edgeopt.errors import InputError

    if not path.is_file():
        raise InputError(f"{path}: {what} file does not exist.")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise InputError(f"{path}: larger than {MAX_YAML_BYTES:,} bytes; not a {what} file.")

    class Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                Loader.aliases += 1
                if Loader.aliases > MAX_YAML_ALIASES:
                    raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases")
            return super().compose_node(parent, index)

    try:
        value = yaml.load(path.read_text(errors="replace"), Loader=Loader)  # noqa: S506 (safe)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}).") from None
    if _expanded_values(value, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise InputError(
            f"{path}: holds more than {MAX_YAML_VALUES:,} values once its aliases are expanded; "
            f"not a {what} file."
        )
    return value


def spec_path(spec: str | Path | None) -> Path | None:
    """The file or folder a model or data spec reads (``npz:FILE?x=1`` -> FILE), if any."""
    if spec is None:
        return None
    text = str(spec)
    kind, sep, rest = text.partition(":")
    if sep and kind in ("npz", "idx", "images", "audio"):
        text = rest.split("?", 1)[0]
    elif sep and kind in ("zoo", "digits"):
        return None
    path = Path(text)
    return path if path.exists() else None


def refuse_overwrite(outputs: Iterable[Path], inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse, before any work, an output that is one of the input files (``inputs`` maps what
    each is, "the model", "the weights", ..., to its spec or path), or that cannot be written
    where it goes (:func:`check_writable`).

    Raises:
        InputError: one sentence naming the output and the input it would replace, or the
            folder it cannot be written in.

    Example:
        >>> refuse_overwrite([Path("out.json")], {"the model": "zoo:lenet5"})
    """
    from edgeopt.errors import InputError

    files = {}
    for what, spec in inputs.items():
        path = spec_path(spec)
        if path is not None and path.is_file():
            files[what] = path
    for output in outputs:
        out = Path(output)
        check_writable(out)
        for what, path in files.items():
            if out.exists() and os.path.samefile(out, path) or out.resolve() == path.resolve():
                raise InputError(
                    f"{out}: the output would overwrite {what} ({path}); pick another path."
                )
