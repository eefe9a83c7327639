"""The chat example against pypomelo, the pomelo client on PyPI.

pypomelo reads pomelo 2.x's handshake keys (useDict, dictVersion, routeToCode, codeToRoute),
compresses the routes it sends with routeToCode, and cannot decode a compressed push (it looks
codeToRoute up with an integer key; JSON object keys are strings). So this checks that the
server offers the pomelo form, accepts pypomelo's compressed requests, and sends it every push
with its string route.

pypomelo ships only a Tornado (< 6) transport; the test drives pypomelo's own Client (its
handshake, encoding, decoding and dispatch) over a plain blocking socket.

Usage: python test_chat_pypomelo.py HOST:PORT   (the chat example's TCP address)
Prints one line per check and a closing "N passed, M failed"; exits non-zero on failure.
"""

import signal
import socket
import sys
import time

from pypomelo.client import Client
from pypomelo.protocol import Protocol

# Failure bounds: one wait, and the whole run.
WAIT = 10.0
TOTAL = 60


class SocketClient(Client):
    """pypomelo's Client over a blocking TCP socket."""

    def __init__(self, handler):
        super().__init__(handler)
        self.sock = None
        self.buf = b""

    def connect(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.send_sync()

    def send(self, data):
        if not isinstance(data, bytes):
            data = bytes(data, encoding="utf8")
        self.sock.sendall(data)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def pump_until(self, done, what):
        """Reads packets and hands them to pypomelo until done() holds."""
        deadline = time.monotonic() + WAIT
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for " + what)
            if len(self.buf) >= 4:
                length = int.from_bytes(self.buf[1:4], "big")
                if len(self.buf) >= 4 + length:
                    packet, self.buf = self.buf[: 4 + length], self.buf[4 + length :]
                    self.on_protocol(Protocol.unpack(packet))
                    continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("server closed while waiting for " + what)
            self.buf += chunk


class Recorder:
    """A pypomelo handler that records what arrives."""

    def __init__(self):
        self.connected = False
        self.responses = []
        self.pushes = []

    def on_connected(self, client, user_data):
        self.connected = True

    def on_heartbeat(self, client):
        pass

    def on_response(self, client, route, request, response):
        self.responses.append((route, response))

    def on_push(self, client, route, push_data):
        self.pushes.append((route, push_data))

    def on_disconnect(self, client):
        pass

    def push(self, client, route):
        """Waits for the next push of `route`; returns its body."""
        def seen():
            return any(r == route for r, _ in self.pushes)

        client.pump_until(seen, "push " + route)
        for i, (r, body) in enumerate(self.pushes):
            if r == route:
                del self.pushes[i]
                return body
        raise AssertionError("unreachable")


def connect(host, port):
    handler = Recorder()
    client = SocketClient(handler)
    client.connect(host, port)
    client.pump_until(lambda: handler.connected, "the handshake")
    return client, handler


def join(client, handler):
    client.send_request("room.join", {})
    client.pump_until(lambda: handler.responses, "the room.join response")
    route, response = handler.responses.pop(0)
    assert route == "room.join", route
    assert response == {"code": 0, "result": "success"}, response
    return handler.push(client, "onMembers")


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    port = int(port)
    state = {}
    checks = []

    def check(name):
        def register(fn):
            checks.append((name, fn))
            return fn
        return register

    @check("pypomelo completes the handshake and reads the pomelo 2.x dictionary")
    def _():
        a, ha = connect(host, port)
        state["a"], state["ha"] = a, ha
        assert isinstance(a.route_to_code, dict) and a.route_to_code, a.route_to_code
        assert isinstance(a.code_to_route, dict) and a.code_to_route, a.code_to_route
        assert a.dict_version, a.dict_version
        # pypomelo compresses a route it finds in routeToCode: its requests go out as codes.
        assert a.route_to_code.get("room.join", 0) > 0
        assert a.route_to_code.get("room.message", 0) > 0
        for route, code in a.route_to_code.items():
            assert a.code_to_route[str(code)] == route, (route, code)

    @check("a compressed room.join is answered, and onMembers arrives")
    def _():
        members = join(state["a"], state["ha"])
        assert members == {"members": []}, members

    @check("a second pypomelo client joins: it gets onMembers, the first gets onNewUser")
    def _():
        b, hb = connect(host, port)
        state["b"], state["hb"] = b, hb
        members = join(b, hb)
        assert len(members["members"]) == 1, members
        notice = state["ha"].push(state["a"], "onNewUser")
        assert notice["content"].startswith("New user: "), notice

    @check("a compressed room.message notify reaches everyone as onMessage")
    def _():
        hello = {"name": "py", "content": "hello from pypomelo"}
        state["a"].send_notify("room.message", hello)
        for c, h in ((state["a"], state["ha"]), (state["b"], state["hb"])):
            got = h.push(c, "onMessage")
            assert got == hello, got

    @check("when a member leaves, the other gets onLeave")
    def _():
        state["b"].close()
        notice = state["ha"].push(state["a"], "onLeave")
        assert notice["content"].startswith("User left: "), notice

    passed = failed = 0
    for name, fn in checks:
        if failed:
            print("SKIPPED AS FAILED (an earlier check failed): " + name)
            failed += 1
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            failed += 1
            print("FAIL: %s: %s: %s" % (name, type(e).__name__, e))
        else:
            passed += 1
            print("ok: " + name)
    for key in ("a", "b"):
        if key in state:
            state[key].close()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, lambda *_: (print("0 passed, 1 failed (timed out)"), sys.exit(1)))
    signal.alarm(TOTAL)
    sys.exit(main())
