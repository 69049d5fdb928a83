"""The state directory, $BRIDGE_HOME: owner-only, because it holds secrets-adjacent data."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bridge_cli.errors import StoreError

DEFAULT_HOME = "~/.local/state/bridge"
HOME_MODE = 0o700


def bridge_home() -> Path:
    """Return the state directory ($BRIDGE_HOME or ~/.local/state/bridge), created mode 0700."""
    path = Path(os.path.expanduser(os.environ.get("BRIDGE_HOME") or DEFAULT_HOME)).absolute()
    ensure_private_dir(path)
    return path


def _unusable(path: Path, reason: str) -> StoreError:
    return StoreError(
        f"state directory {path} is unusable: {reason}; "
        "set BRIDGE_HOME to a directory you own and can write"
    )


def ensure_private_dir(path: Path) -> None:
    """Create path as an owner-only (0700) directory, or tighten an existing one to 0700."""
    try:
        path.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
        st = path.stat()
    except FileExistsError:
        raise _unusable(path, "a file is in the way") from None
    except OSError as e:
        raise _unusable(path, e.strerror or str(e)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _unusable(path, "it is not a directory")
    if stat.S_IMODE(st.st_mode) != HOME_MODE:
        # mkdir's mode is filtered by the umask, and an old directory may be group/world
        # readable: either way, other users must not read spend, cached bodies or tokens.
        if st.st_uid != os.geteuid():
            raise _unusable(
                path, f"its mode is {oct(stat.S_IMODE(st.st_mode))} and another user owns it"
            )
        try:
            path.chmod(HOME_MODE)
        except OSError as e:
            raise _unusable(path, f"cannot restrict it to mode 0700 ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise _unusable(path, "permission denied")
