"""A TCP proxy that breaks links on purpose: cuts, stalls and delays (fault-injection tests).

Put a :class:`FaultProxy` between a party and the address its peers dial, and
the link can be cut (every connection reset, new ones refused for a while),
stalled (connections stay open but no byte moves) or slowed (each chunk held
back), while the parties' TLS runs end to end through it unchanged. The test
suite (``tests/faults/``) and the soak benchmark (``benchmarks/soak.py``) use
it to show that a link that fails for less than ``[job] link_grace_seconds``
costs nothing and a longer outage stops the job cleanly.

Only for tests and benchmarks on one machine: it listens on loopback, holds
every connection in two threads, and has no limits of its own.

Example::

    with FaultProxy(target="127.0.0.1:50052") as proxy:   # bank_b's real address
        ...  # peers dial proxy.address for bank_b
        proxy.cut(for_seconds=3)   # reset every connection; refuse new ones for 3 s
        proxy.stall(for_seconds=2) # hold every byte for 2 s
        proxy.delay = 0.01         # 10 ms on every chunk from now on
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from types import TracebackType

__all__ = ["FaultProxy"]

_CHUNK = 1 << 16


class FaultProxy:
    """Forward TCP connections from a loopback port to ``target``, breaking them on demand.

    Parameters
    ----------
    target : str
        ``host:port`` the connections go to.
    listen_port : int
        Local port to listen on (0: any free port; see :attr:`address`).

    Attributes
    ----------
    delay : float
        Seconds each forwarded chunk is held back (0: none).
    connections, cuts, stalls : int
        Connections accepted (and forwarded), cuts and stalls made so far.
    """

    def __init__(self, target: str, listen_port: int = 0) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host.strip("[]"), int(port))
        self.delay = 0.0
        self.connections = self.cuts = self.stalls = 0
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._stall_until = 0.0
        self._closed = threading.Event()
        self._server = socket.create_server(("127.0.0.1", listen_port))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="vfl-proxy-accept",
                                          daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        """``127.0.0.1:port`` where the proxy listens: give it to the peers."""
        return f"127.0.0.1:{self.port}"

    # ------------------------------------------------------------ faults
    def cut(self, for_seconds: float = 0.0) -> None:
        """Reset every open connection now and refuse new ones for ``for_seconds``."""
        with self._lock:
            self.cuts += 1
            self._refuse_until = max(self._refuse_until, time.monotonic() + for_seconds)
        self._reset_all()

    def _reset_all(self) -> None:
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
        for s in socks:
            _reset(s)

    def stall(self, for_seconds: float) -> None:
        """Hold every byte on every connection for ``for_seconds`` (connections stay open)."""
        with self._lock:
            self.stalls += 1
            self._stall_until = max(self._stall_until, time.monotonic() + for_seconds)

    def restore(self) -> None:
        """End a cut or a stall now."""
        with self._lock:
            self._refuse_until = self._stall_until = 0.0

    # ------------------------------------------------------------ forwarding
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                _reset(client)
                continue
            # dialled in its own thread: a target slow to answer does not hold up other accepts
            threading.Thread(target=self._connect, args=(client,), daemon=True,
                             name="vfl-proxy-connect").start()

    def _connect(self, client: socket.socket) -> None:
        """Dial the target for ``client`` and start the two pumps (or reset ``client``)."""
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        client.settimeout(None)
        with self._lock:  # a cut or close since the accept: this connection is cut too
            refused = self._closed.is_set() or time.monotonic() < self._refuse_until
            if not refused:
                self.connections += 1
                self._socks.update((client, upstream))
        if refused:
            _reset(client)
            _reset(upstream)
            return
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True,
                             name="vfl-proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                while time.monotonic() < self._stall_until and not self._closed.is_set():
                    time.sleep(0.01)
                if self.delay > 0:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._socks.discard(src)
                self._socks.discard(dst)
            _reset(src)
            _reset(dst)

    def close(self) -> None:
        """Stop listening and reset every connection."""
        self._closed.set()
        self._server.close()
        self._reset_all()  # not counted as a cut
        self._acceptor.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (as a dropped link looks), ignoring errors.

    ``shutdown`` first: it wakes a thread blocked reading the socket, which
    ``close`` alone does not.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
