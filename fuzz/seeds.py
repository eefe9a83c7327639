#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into CORPUS_DIR/<target>/.

Usage: seeds.py VECTORS_JSON CORPUS_DIR

Seeds come from the byte-exact protocol vectors (nano-core/tests/data/vectors.json, the same
file as shared/protocol/vectors.json), wrapped in each target's input layout (the leading
selector bytes described in each target), plus a few hand-made WebSocket frames and HTTP heads.
Files are named by content hash, so running it again adds nothing new; the fuzzer's own finds
in the same directories are kept.
"""

import hashlib
import json
import os
import struct
import sys

# Selector bytes (see the targets): packet limit 5 = 64 KiB, 6 = 16 MiB, 2 = 5 bytes; split
# seed 7 = whole input, 0 = byte by byte, others = mixed chunk sizes.
SPLITS = [7, 0, 0x13, 0x2A]
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(corpus, target, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ws_frame(opcode, payload, fin=True, masked=True, rsv=0):
    """A client WebSocket frame."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def http_heads():
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    up = (
        "GET /ws HTTP/1.1\r\nHost: localhost:3250\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    return [
        up.format(key=key, extra="").encode(),
        up.format(key=key, extra="Origin: https://game.example\r\n").encode(),
        up.format(key=key, extra="Origin: https://evil.example\r\n").encode(),
        up.format(key=key, extra="").encode() + ws_frame(2, bytes.fromhex("03000000")),
        up.format(key=key, extra="").encode().replace(b"/ws", b"/ws?token=1"),
        b"GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /nope HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"POST /hello HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
    ]


def main():
    vectors_path, corpus = sys.argv[1], sys.argv[2]
    with open(vectors_path) as f:
        vectors = json.load(f)
    packets = [bytes.fromhex(v["hex"]) for v in vectors["valid"] + vectors["invalid"]]
    valid = [bytes.fromhex(v["hex"]) for v in vectors["valid"]]
    stream = b"".join(valid)

    for p in packets + [stream]:
        for limit in (5, 6, 2):
            for split in SPLITS:
                write(corpus, "packet_decoder", bytes([limit, split]) + p)

    for p in packets:
        if len(p) > 4 and p[0] == 4:
            for sel in (0, 1):
                write(corpus, "message_decoder", bytes([sel]) + p[4:])

    server_bodies = [
        b'{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{}},"user":{}}',
        b'{"sys":{"type":"fuzz"},"user":{"refuse":501,"reason":"version \\"0.0.1\\" \\u00e9"}}',
        b'{"sys":{},"user":{"refuse":200}}',
        b"{}",
        b"",
        b"[1,2]",
    ]
    client_bodies = [
        b'{"code":500,"msg":"undecodable handshake"}',
        b'{"code":200,"sys":{"heartbeat":0.5,"dict":{},"serializer":"protobuf"}}',
        b'{"code":200,"sys":{"heartbeat":3,"useDict":true,"dictVersion":"1",'
        b'"routeToCode":{"a.b":1},"codeToRoute":{"1":"a.b"}}}',
        b'{"code":200}',
    ]
    for v in vectors["valid"]:
        if v.get("packet_type") == 1:
            body = v["body_utf8"].encode()
            server_bodies.append(body)
            client_bodies.append(body)
        if v.get("packet_type") == 5 and "body_utf8" in v:
            client_bodies.append(v["body_utf8"].encode())
    for b in server_bodies:
        write(corpus, "handshake_server", b)
    for b in client_bodies:
        write(corpus, "handshake_client", b)

    frames = [ws_frame(2, p) for p in valid]
    frames += [
        ws_frame(2, stream),
        ws_frame(2, valid[6][:7], fin=False) + ws_frame(0, valid[6][7:]),
        ws_frame(2, b"\x03", fin=False) + ws_frame(9, b"ping") + ws_frame(0, b"\x00\x00\x00"),
        ws_frame(9, b"") + ws_frame(10, b"pong"),
        ws_frame(9, bytes(range(125))),
        ws_frame(8, struct.pack(">H", 1000) + b"bye"),
        ws_frame(2, valid[3]) + ws_frame(8, b""),
        ws_frame(8, struct.pack(">H", 1005)),
        ws_frame(8, b"\x03"),
        ws_frame(2, bytes(200)),
        ws_frame(2, bytes(70000)[:300])[:14],  # a 16-bit length header, cut short
        ws_frame(2, b"abc", masked=False),
        ws_frame(1, b"text"),
        ws_frame(2, b"x", rsv=0x40),
        ws_frame(3, b""),
        ws_frame(0, b"stray"),
        bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 40) + MASK,
    ]
    for fr in frames:
        for limit in (5, 2, 7):
            for split in SPLITS:
                write(corpus, "ws_frame", bytes([limit, split]) + fr)
                write(corpus, "ws_source", bytes([limit, split]) + fr)

    # Inputs that once failed a target (fuzz/regressions/<target>-<what>): always seeds.
    regressions = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regressions")
    for name in sorted(os.listdir(regressions)) if os.path.isdir(regressions) else []:
        with open(os.path.join(regressions, name), "rb") as f:
            data = f.read()
        for target in ("packet_decoder", "message_decoder", "handshake_server",
                       "handshake_client", "ws_frame", "ws_source", "http_upgrade"):
            if name.startswith(target + "-"):
                write(corpus, target, data)

    for head in http_heads():
        for cfg in (0, 1):
            for split in SPLITS:
                write(corpus, "http_upgrade", bytes([cfg, split]) + head)


if __name__ == "__main__":
    main()
