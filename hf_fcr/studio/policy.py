"""What the studio's page may do on the machine that serves it. Anyone who reaches the port can use the page, so
the server's folders and credentials are out of its reach unless the person who starts it says otherwise:

* saves go only under ``save_root`` (a folder chosen at start; a path that leaves it is refused), and replace only a
  folder that holds an hf-fcr checkpoint (``hub.check_replaceable``);
* a push uses the token typed on the page, never the server's own login or ``HF_TOKEN``, unless the studio was
  started with ``allow_server_token``;
* serving beyond this machine (a host other than a loopback address) needs a login (``auth``) or the explicit
  ``public`` acknowledgement.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StudioPolicy", "check_host"]

DEFAULT_SAVE_ROOT = "studio-saves"


@dataclass(frozen=True)
class StudioPolicy:
    """The studio's limits (see the module docstring).

    Attributes:
        save_root: the only folder saves may write under (relative to the working directory when relative).
        allow_server_token: let a push with an empty token field use the server's own credentials.
    """

    save_root: str | os.PathLike = DEFAULT_SAVE_ROOT
    allow_server_token: bool = False

    def save_path(self, typed: str) -> Path:
        """The folder a save to ``typed`` (a path relative to ``save_root``, or an absolute one inside it) writes.

        Raises:
            ValueError: an empty path, or one that leaves ``save_root`` (``..``, an absolute path elsewhere, a
                symbolic link out of it).
        """
        typed = typed.strip()
        if not typed:
            raise ValueError("give a folder to save to.")
        root = Path(self.save_root).resolve()
        target = (root / typed).resolve()  # an absolute `typed` replaces root: checked like any other
        if target == root or not target.is_relative_to(root):
            raise ValueError(
                f"the studio saves only into sub-folders of its save root {root}: {typed!r} is outside it. Give a "
                "folder name (e.g. my-model), or start the studio with another --save_root."
            )
        return target

    def push_token(self, typed: str | None) -> str | None:
        """The token a push uses: the one typed on the page; None (the server's credentials) only when allowed.

        Raises:
            ValueError: no token typed, and the server's own credentials are not allowed.
        """
        if typed and typed.strip():
            return typed.strip()
        if self.allow_server_token:
            return None
        raise ValueError(
            "type a Hub token (write access) to push: this studio does not push with the server's own credentials "
            "(start it with --allow_server_token to allow that)."
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, auth: tuple[str, str] | None, public: bool) -> str | None:
    """Whether the studio may serve on ``host``: None on a loopback address or with a login (``auth``); else, with
    ``public``, the warning to print; else ValueError.

    Raises:
        ValueError: a host other than this machine without ``auth`` and without ``public``.
    """
    if _is_loopback(host) or auth is not None:
        return None
    what = (
        f"the studio on {host} is reachable by anyone who reaches the port, without a login: they can save under "
        "its save root and push with the tokens they type"
    )
    if public:
        return f"WARNING: {what}."
    raise ValueError(
        f"{what}. Give a login with --auth user:password, serve on 127.0.0.1, or pass --i_understand_this_is_public."
    )
