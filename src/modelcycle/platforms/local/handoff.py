"""Hand a serving socket from a running endpoint to its successor, so a redeploy drops nothing.

Every endpoint of a use case (its *slot*, a directory) offers its listening socket on a Unix
socket ``<slot>/serving.sock``. A new endpoint for the same slot first asks for it
(:func:`take`): both processes then accept from the one kernel queue, so when the old one is
stopped no connection waiting in that queue is reset and the URL stays the same (port 0
included). Only once the new endpoint answers does it take over the slot's path
(:meth:`SocketOffer.publish`, an atomic rename), so a deployment that fails leaves the old one
reachable for the next attempt.

Binding a fixed port twice with ``SO_REUSEPORT`` would also let two servers overlap, but the
kernel resets the connections queued on the listener that closes, and it would let an unrelated
process of the same user silently share the port; the handoff has neither problem. Only
processes of the same user get the socket (``SO_PEERCRED``).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import uuid
from pathlib import Path

__all__ = ["SLOT_SOCKET", "take", "SocketOffer"]

#: The file name of a slot's offer socket.
SLOT_SOCKET = "serving.sock"


class _Directory:
    """An ``O_PATH`` handle on ``directory`` so Unix socket paths stay short (the kernel limits
    them to 108 bytes; ``/proc/self/fd/N/name`` always fits)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def path(self, name: str) -> str:
        return f"/proc/self/fd/{self.fd}/{name}"

    def close(self) -> None:
        os.close(self.fd)


def _matches(sock: socket.socket, host: str, port: int) -> bool:
    """The inherited listener serves ``host`` and ``port`` (port 0: any port)."""
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        wanted = socket.getaddrinfo(host, None, sock.family, socket.SOCK_STREAM)[0][4][0]
    except (OSError, ValueError):
        return False
    return bound_host == wanted and (port == 0 or bound_port == port)


def take(slot: Path, host: str, port: int, timeout: float = 5.0) -> tuple[socket.socket, int] | None:
    """The listening socket the slot's live endpoint offers, with that endpoint's pid.

    Returns ``None`` when no endpoint offers one, or when its socket serves another host or port
    (the configuration changed): the caller then binds its own.
    """
    directory = _Directory(Path(slot))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            try:
                client.connect(directory.path(SLOT_SOCKET))
                _, fds, _, _ = socket.recv_fds(client, 1, 1)
                creds = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            except OSError:
                return None
    finally:
        directory.close()
    if not fds:
        return None
    listener = socket.socket(fileno=fds[0])
    if not _matches(listener, host, port):
        listener.close()
        return None
    return listener, struct.unpack("3i", creds)[0]


class SocketOffer:
    """Offers ``listener`` to successors at ``<slot>/serving.sock`` from a daemon thread.

    Call :meth:`publish` once the endpoint answers requests and :meth:`close` when it stops.
    """

    def __init__(self, slot: Path, listener: socket.socket) -> None:
        self.slot = Path(slot)
        self.listener = listener
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        """Bind a fresh Unix socket and rename it over the slot's path (atomic: a successor
        reaches either the previous endpoint or this one), then serve requests for the socket."""
        directory = _Directory(self.slot)
        temporary = f".{SLOT_SOCKET}.{uuid.uuid4().hex[:12]}"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(directory.path(temporary))
            os.chmod(self.slot / temporary, 0o600)
            server.listen(8)
            os.replace(self.slot / temporary, self.slot / SLOT_SOCKET)
        except OSError:
            server.close()
            (self.slot / temporary).unlink(missing_ok=True)
            raise
        finally:
            directory.close()
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="socket-offer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        server = self._server
        while server is not None:
            try:
                connection, _ = server.accept()
            except OSError:  # closed
                return
            with connection:
                try:
                    uid = struct.unpack("3i", connection.getsockopt(
                        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
                    if uid == os.getuid():
                        socket.send_fds(connection, [b"L"], [self.listener.fileno()])
                except OSError:
                    continue

    def close(self) -> None:
        """Stop offering (the slot's path is left for a successor to replace)."""
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()

