"""Fate sharing between the nodes of one job, over a line protocol on TCP.

torchrun alone lets a node whose peer died sit in a collective until its timeout (30 minutes with gloo). Here
every node's entrypoint holds a connection to the master's: a failure anywhere, or a node that vanishes, is
broadcast, and every node stops its workers at once. Messages: HELLO host, DONE host, FAIL host reason,
ABORT host reason, PING, BYE.

Both ends PING every quarter of the peer timeout and count a peer silent for the whole timeout as lost: a closed
connection tells of a dead process, but an instance that vanishes or a network partition closes nothing.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerFailure:
    host: str
    reason: str


_SEND_LOCK = threading.Lock()  # one line at a time on any connection: heartbeats and reports come from two threads


def _send(sock: socket.socket, *words: str) -> None:
    with _SEND_LOCK, contextlib.suppress(OSError):
        sock.sendall((" ".join(words) + "\n").encode())


def _every(interval: float, beat: Callable[[], bool]) -> None:
    """Call ``beat`` every ``interval`` seconds, in a daemon thread, until it returns False."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            if not beat():
                return

    threading.Thread(target=loop, daemon=True).start()


def _interval(timeout: float) -> float:
    return max(min(timeout / 4, 10.0), 0.05)


class Master:
    """Runs on the master node: collects HELLO/DONE/FAIL from workers and broadcasts ABORT."""

    def __init__(self, port: int, workers: Sequence[str], peer_timeout: float) -> None:
        self.expected: set[str] = set(workers)
        self.events: queue.Queue[PeerFailure] = queue.Queue()
        self.done: set[str] = set()
        self.joined: set[str] = set()
        self.conns: dict[str, socket.socket] = {}
        self.heard: dict[str, float] = {}  # when each joined worker last said anything
        self.peer_timeout = peer_timeout
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a worker's DONE, or the abort: wakes wait_all_done at once
        self.aborted = False
        self.failure: PeerFailure | None = None  # the first, which aborted the job
        self.server = socket.create_server(("0.0.0.0", port), reuse_port=False)
        self.server.settimeout(0.5)
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()
        _every(_interval(peer_timeout), self._beat)

    def _beat(self) -> bool:
        now = time.monotonic()
        with self.lock:
            conns = list(self.conns.values())
            silent = sorted(h for h, t in self.heard.items() if h not in self.done and now - t > self.peer_timeout)
        for conn in conns:
            _send(conn, "PING")
        if silent:
            self.abort(PeerFailure(silent[0], _silent(silent[0], self.peer_timeout)))
        return not self.closing

    def _accept(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        host = "?"
        finished = False
        with conn, conn.makefile("r") as lines:
            for line in lines:
                word, _, rest = line.rstrip("\n").partition(" ")
                if host != "?":
                    with self.lock:
                        self.heard[host] = time.monotonic()
                if word == "HELLO":
                    host = rest
                    with self.lock:
                        self.joined.add(host)
                        self.conns[host] = conn
                        self.heard[host] = time.monotonic()
                        if self.aborted:
                            _send(conn, "ABORT", "master", json.dumps("job already aborted"))
                elif word == "DONE":
                    finished = True
                    with self.lock:
                        self.done.add(host)
                        self.changed.notify_all()
                elif word == "FAIL":
                    finished = True
                    name, _, reason = rest.partition(" ")
                    self.abort(PeerFailure(name, json.loads(reason or '""')))
        if not finished and not self.closing:
            self.abort(PeerFailure(host, f"{host} lost its connection to the master (node crashed or was killed)"))

    def abort(self, failure: PeerFailure) -> None:
        with self.lock:
            if self.aborted:
                return
            # Under the lock with the flag: whoever sees the job aborted finds the reason there.
            self.aborted, self.failure = True, failure
            self.changed.notify_all()
            conns = list(self.conns.values())
        self.events.put(failure)
        for conn in conns:
            _send(conn, "ABORT", failure.host, json.dumps(failure.reason))

    def missing(self) -> set[str]:
        with self.lock:
            return self.expected - self.joined

    def wait_all_done(self, join_deadline: float, interrupted: Callable[[], bool]) -> set[str]:
        """Wait for every worker's DONE, however long their jobs run on, unless the job aborts (a failure, a lost
        or silent peer), a worker has not joined by ``join_deadline``, or ``interrupted()`` (a signal); return those
        that never reported."""
        with self.lock:
            while not interrupted():
                if self.expected <= self.done or self.aborted:
                    break
                if time.monotonic() > join_deadline and not self.expected <= self.joined:
                    break
                self.changed.wait(0.05)  # the signal and the deadline are looked at between wake-ups
            return self.expected - self.done

    def close(self) -> None:
        self.closing = True
        with self.lock:
            conns = list(self.conns.values())
        for conn in conns:
            _send(conn, "BYE")
        self.server.close()


class Worker:
    """Runs on every other node: joins the master, reports the outcome, listens for ABORT."""

    def __init__(self, host: str, address: str, port: int, deadline: float, peer_timeout: float) -> None:
        self.host = host
        self.events: queue.Queue[PeerFailure] = queue.Queue()
        self.finished = threading.Event()  # the master said BYE, or this side is done with it
        self.peer_timeout = peer_timeout
        self.sock = self._connect(address, port, deadline)
        self.heard = time.monotonic()
        _send(self.sock, "HELLO", host)
        threading.Thread(target=self._listen, daemon=True).start()
        _every(_interval(peer_timeout), self._beat)

    @staticmethod
    def _connect(address: str, port: int, deadline: float) -> socket.socket:
        while True:
            try:
                return socket.create_connection((address, port), timeout=5)
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"could not reach the master's entrypoint at {address}:{port} ({exc.strerror or exc}): "
                        f"check that the master host is up and that instances may connect to each other on port "
                        f"{port} (the VPC's security group must allow traffic between the job's instances)"
                    ) from None
                # Short: the worker's torchrun starts only once this connection stands.
                time.sleep(0.05)

    def _beat(self) -> bool:
        if self.finished.is_set():
            return False
        _send(self.sock, "PING")
        if time.monotonic() - self.heard > self.peer_timeout:
            self.events.put(PeerFailure("master", _silent("the master node", self.peer_timeout)))
            self.finished.set()
            return False
        return True

    def _listen(self) -> None:
        self.sock.settimeout(None)
        with self.sock.makefile("r") as lines:
            for line in lines:
                self.heard = time.monotonic()
                word, _, rest = line.rstrip("\n").partition(" ")
                if word == "ABORT":
                    host, _, reason = rest.partition(" ")
                    self.events.put(PeerFailure(host, json.loads(reason or '""')))
                elif word == "BYE":
                    self.finished.set()
                    return
        if not self.finished.is_set():
            self.events.put(
                PeerFailure("master", "the master node's entrypoint went away (node crashed or was killed)")
            )
            self.finished.set()

    def report(self, ok: bool, reason: str = "") -> None:
        if ok:
            _send(self.sock, "DONE", self.host)
        else:
            # After a FAIL this node is on its way out: the master closing on us is no news.
            self.finished.set()
            _send(self.sock, "FAIL", self.host, json.dumps(reason))

    def close(self) -> None:
        self.finished.set()
        with contextlib.suppress(OSError):
            self.sock.close()


def _silent(who: str, timeout: float) -> str:
    return (
        f"{who} sent nothing for {timeout:.0f}s (its instance was lost, or the network between the instances is "
        "partitioned)"
    )
