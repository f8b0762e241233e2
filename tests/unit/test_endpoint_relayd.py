"""The endpoint's relay process, on its own: a real process, real sockets, no cygnetd."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from cygnet.endpoint.relay_link import ProcessRelay, relay_pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    return True  # exited; its parent has not reaped it yet
        except OSError:
            return True
        time.sleep(0.05)
    return not Path(f"/proc/{pid}").exists()


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def test_bytes_move_both_ways_and_the_relay_outlives_its_cygnetd(control: Path) -> None:
    relay = ProcessRelay(control, linger=0.5)
    relay.start()
    pid = relay_pid(control)
    assert pid is not None
    client_near, client_far = _pair()   # far: the "client"
    server_near, server_far = _pair()   # far: the "branch"
    relay.add(client_near, server_near)  # both near ends now live in the relay process
    client_far.sendall(b"ping" * 1000)
    got = b""
    while len(got) < 4000:
        got += server_far.recv(65536)
    assert got == b"ping" * 1000
    server_far.sendall(b"pong")
    assert client_far.recv(16) == b"pong"
    assert relay.stats()[:2] == (1, 1)
    relay.close()  # "cygnetd" goes: the connection stays, well past the linger
    time.sleep(1.5)
    client_far.sendall(b"still")
    assert server_far.recv(16) == b"still"
    again = ProcessRelay(control, linger=0.5)  # a new "cygnetd" finds the same relay
    again.start()
    assert relay_pid(control) == pid and again.stats()[0] == 1
    again.close()
    client_far.close()  # the connection ends: nothing relayed, no cygnetd, linger over
    server_far.close()
    assert _wait_gone(pid, 10), "the relay did not exit once idle"
    assert not control.exists()


def test_a_removed_socket_file_sends_an_idle_relay_away(control: Path) -> None:
    relay = ProcessRelay(control, linger=3600)
    relay.start()
    pid = relay_pid(control)
    assert pid is not None
    relay.close()
    control.unlink()  # e.g. the run directory was removed
    assert _wait_gone(pid, 10)


def test_a_second_relay_on_a_served_socket_leaves_at_once(control: Path) -> None:
    relay = ProcessRelay(control, linger=5)
    relay.start()
    done = subprocess.run([sys.executable, "-m", "cygnet.endpoint.relayd", "--socket",
                           str(control)], timeout=30, capture_output=True)
    assert done.returncode == 0
    assert relay_pid(control) is not None
    relay.close()


def test_listening_sockets_are_kept_between_two_cygnetd(control: Path) -> None:
    """A stopping cygnetd leaves its listening socket with the relay: a client that
    connects meanwhile waits in the accept queue, and the next cygnetd accepts it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    relay = ProcessRelay(control, linger=30)
    relay.start()
    relay.keep_listeners([listener])
    listener.close()  # only the relay's copy is left
    relay.close()
    client = socket.create_connection(("127.0.0.1", port), timeout=5)  # not refused
    client.sendall(b"hello")
    again = ProcessRelay(control, linger=30)
    (taken,) = again.take_listeners()
    assert taken.getsockname()[1] == port
    taken.setblocking(True)
    accepted, _ = taken.accept()
    assert accepted.recv(16) == b"hello"
    assert again.take_listeners() == []  # given away once
    for s in (accepted, taken, client):
        s.close()
    again.close()
