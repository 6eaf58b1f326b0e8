"""Where the viewer listens: checked before anything is served, so a bad address fails in seconds.

viser binds its server in a background thread and retries the next port on any
``OSError``, up to 1000 times; an address that can never be bound (one that is not
this machine's, a name that does not resolve) made ``sharp-rt view`` wait forever
without a word, and a port past 65535 crashed that thread.  :func:`listen_port`
does what the server's ``bind`` will do, first, in the calling thread:

1. resolve the host as asyncio's server does (``getaddrinfo`` with ``AI_PASSIVE``,
   every address family), within :data:`RESOLVE_SECONDS`;
2. bind a TCP socket to every resolved address with the options asyncio sets
   (``SO_REUSEADDR`` on POSIX, ``IPV6_V6ONLY`` for IPv6), then close it.

A failure is a :class:`ListenError` with one line that says why (not an address of
this machine, no such host, port in use, permission) and what to do.  A busy
default port moves on to the next free one (:data:`PORT_TRIES`); a busy port the
user chose is an error.  No packet leaves the machine: binding is local, and the
only lookup is the resolver's for a name (an IP address is not looked up).
"""

from __future__ import annotations

import errno
import os
import socket
import threading

from sharp_rt.core.errors import SharpError

RESOLVE_SECONDS = 10.0  # a name lookup that takes longer fails (a resolver that does not answer)
PORT_TRIES = 20  # ports tried from the default one when it is busy
MAX_PORT = 65535


class ListenError(SharpError):
    """The viewer cannot listen on the requested host and port."""


def resolve(host: str, port: int, timeout: float = RESOLVE_SECONDS) -> list[tuple]:
    """``getaddrinfo`` results for a listening TCP socket on ``host`` (all families), within ``timeout`` s.

    Raises :class:`ListenError` for a name that does not resolve or a lookup that does
    not finish in time (it runs in a daemon thread, so a stuck resolver cannot hang us).
    """
    result: list = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            result.extend(
                socket.getaddrinfo(
                    host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
                )
            )
        except (OSError, UnicodeError) as exc:
            failure.append(exc)

    worker = threading.Thread(target=lookup, name="sharp-rt-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    hint = "give an address of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (all networks)"
    if worker.is_alive():
        raise ListenError(f"Cannot listen on {host}: looking up the name took over {timeout:g} s.", hint)
    if failure:
        reason = getattr(failure[0], "strerror", None) or str(failure[0])
        raise ListenError(f"Cannot listen on {host}: no such host ({reason}).", hint)
    if not result:
        raise ListenError(f"Cannot listen on {host}: the name has no address.", hint)
    return result


def _bind_all(addresses: list[tuple], port: int) -> None:
    """Bind (then close) a socket on every address at ``port``, as asyncio's ``create_server`` does."""
    sockets = []
    try:
        for family, kind, proto, _name, address in addresses:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name == "posix":  # asyncio's default (reuse_address) on POSIX
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
    finally:
        for sock in sockets:
            sock.close()


def listen_port(host: str, port: int, *, next_free: bool = False) -> int:
    """Check that the viewer can listen on ``host``:``port`` and return the port to use.

    port: 0 lets the system pick one when serving.  next_free: when ``port`` is busy, try
    the next :data:`PORT_TRIES` ports (for the default port; a chosen one is an error).
    Raises :class:`ListenError` (one line and a hint) when it cannot listen.
    """
    if not 0 <= port <= MAX_PORT:
        raise ListenError(
            f"Port {port} is out of range.", hint="use a port of 1 to 65535, or 0 for any free one"
        )
    addresses = resolve(host, port)
    last = min(port + (PORT_TRIES if next_free and port else 1), MAX_PORT + 1)
    for candidate in range(port, last):
        try:
            _bind_all(addresses, candidate)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and candidate + 1 < last:
                continue
            raise _bind_error(host, candidate, exc, next_free and candidate != port) from None
        return candidate
    raise _bind_error(host, port, OSError(errno.EADDRINUSE, "Address already in use"), False)  # not reached


def _bind_error(host: str, port: int, exc: OSError, tried_more: bool) -> ListenError:
    shown = f"[{host}]" if ":" in host else host
    if exc.errno == errno.EADDRINUSE:
        busy = f"ports {port - PORT_TRIES + 1} to {port} are all" if tried_more else "the port is"
        return ListenError(
            f"Cannot listen on {shown}:{port}: {busy} in use.",
            hint="choose another --port, or --port 0 for any free one",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(
            f"Cannot listen on {host}: it is not an address of this machine.",
            hint="use 127.0.0.1 (this machine only), 0.0.0.0 (all networks) or an address of this machine",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ListenError(
            f"Cannot listen on {shown}:{port}: permission denied ({exc.strerror}).",
            hint="ports below 1024 need administrator rights: use a port of 1024 or more",
        )
    return ListenError(f"Cannot listen on {shown}:{port}: {exc.strerror or exc}.")
