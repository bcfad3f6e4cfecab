#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into seeds/<target>/ from RFC 6455 vectors.

Run from fuzz/: python3 make_seeds.py
"""
import os
import struct

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def mask(payload, key=KEY):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(opcode, payload, fin=True, key=None):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, n])
    elif n < 65536:
        head = bytes([first, 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 127]) + struct.pack(">Q", n)
    if key is None:
        return head + payload
    head = bytes([head[0], head[1] | 0x80]) + head[2:]
    return head + key + mask(payload, key)


def close(code, reason=b""):
    return struct.pack(">H", code) + reason


# RFC 6455 §5.7 examples, as a server sends them (unmasked) and a client (masked).
def rfc_frames(key):
    return {
        "hello": frame(0x1, b"Hello", key=key),
        "fragmented": frame(0x1, b"Hel", fin=False, key=key) + frame(0x0, b"lo", key=key),
        "ping": frame(0x9, b"Hello", key=key),
        "pong": frame(0xA, b"Hello", key=key),
        "binary256": frame(0x2, bytes(256), key=key),
        "binary64k_head": frame(0x2, bytes(65536), key=key)[:14 if key else 10] + bytes(64),
        "close": frame(0x8, close(1000, b"bye"), key=key),
        "interleaved": frame(0x1, b"Hel", fin=False, key=key)
        + frame(0x9, b"", key=key)
        + frame(0x0, b"lo", key=key)
        + frame(0x8, close(1001), key=key),
        "utf8_split": frame(0x1, "κό".encode()[:3], fin=False, key=key)
        + frame(0x0, "κό".encode()[3:], key=key),
    }


REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
)


def seeds():
    client_frames = rfc_frames(KEY)
    server_frames = rfc_frames(None)
    out = {}
    out["frame_decode"] = {
        f"{name}_{limit}": bytes([limit]) + data
        for name, data in list(client_frames.items()) + [(n + "_unmasked", d) for n, d in server_frames.items()]
        for limit in (0, 1)
    }
    # Past crashers.
    out["frame_decode"]["crash_33c41a24_huge_claim"] = bytes(
        [0, 1, 255, 1, 0, 0, 0, 0, 0, 0, 0, 255, 131, 55, 250, 33, 61, 249, 64, 238, 128, 129, 55, 250, 33, 61, 187]
    )
    out["mask"] = {
        "hello": KEY + bytes([0, 2]) + b"Hello",
        "offset": KEY + bytes([3, 7]) + bytes(range(64)),
    }
    out["http_request"] = {
        "rfc_sample": bytes([0, 0]) + REQUEST,
        "rfc_sample_bytewise": bytes([0, 1]) + REQUEST,
        "with_frames": bytes([0, 9]) + REQUEST + client_frames["hello"] + client_frames["close"],
        "small_limits": bytes([1, 0]) + REQUEST,
        "rejected": bytes([2, 0]) + REQUEST + client_frames["hello"],
        "post": bytes([0, 0]) + REQUEST.replace(b"GET", b"POST", 1),
        "http10": bytes([0, 0]) + REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        "version8": bytes([0, 0]) + REQUEST.replace(b"Version: 13", b"Version: 8"),
    }
    out["http_response"] = {
        "accepted": bytes([0, 0]) + RESPONSE + b"\r\n" + server_frames["hello"] + server_frames["ping"],
        "accepted_pieces": bytes([0, 5]) + RESPONSE + b"\r\n" + server_frames["fragmented"],
        "subprotocol": bytes([2, 0]) + RESPONSE + b"Sec-WebSocket-Protocol: chat\r\n\r\n",
        "rejected_length": bytes([0, 0]) + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope",
        "rejected_until_eof": bytes([1, 3]) + b"HTTP/1.1 500 Internal Server Error\r\n\r\n" + bytes(40),
        "wrong_accept": bytes([0, 0]) + RESPONSE.replace(b"s3pP", b"AAAA") + b"\r\n",
    }
    h2_connect = (
        b"https://example.com/chat\nsec-websocket-version: 13\n"
        b"sec-websocket-extensions: permessage-deflate; client_max_window_bits\n"
        b"sec-websocket-protocol: chat, superchat"
    )
    h1_upgrade = (
        b"/chat\nhost: example.com\nupgrade: websocket\nconnection: Upgrade\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\nsec-websocket-version: 13\n"
        b"sec-websocket-extensions: permessage-deflate; server_no_context_takeover"
    )
    out["http_parts"] = {
        # HTTP/2, CONNECT, :protocol websocket (hyper's extension, then h2's).
        "h2_connect": bytes([0x16]) + h2_connect,
        "h2_connect_h2_extension": bytes([0x96]) + h2_connect,
        "h2_connect_other_protocol": bytes([0x36]) + b"/chat\nwebtransport\nsec-websocket-version: 13",
        "h2_get": bytes([0x12]) + h2_connect,
        "h1_upgrade": bytes([0x01]) + h1_upgrade,
        "h10_upgrade": bytes([0x00]) + h1_upgrade,
        "h1_small_limits": bytes([0x41]) + h1_upgrade,
    }
    for target, frames, reply_key in (
        ("server_connection", client_frames, None),
        ("client_connection", server_frames, KEY),
    ):
        entries = {}
        for name, data in frames.items():
            entries[name] = bytes([0b10, 0xFF, 0]) + data
            entries[name + "_bytewise"] = bytes([0b10, 0xFF, 1]) + data
        entries["fragments_mode"] = bytes([0b110, 0xFF, 3]) + frames["interleaved"]
        entries["small_limits"] = bytes([0b01000, 0xFF, 0]) + frames["binary256"]
        entries["commands"] = (
            bytes([0b10, 0xF0, 5]) + b"Hello"
            + bytes([0xF2, 1]) + b"p"
            + bytes([0xF8, 0, 3]) + b"Hel" + bytes([0xF9, 1, 2]) + b"lo"
            + bytes([0xF4, 0x03, 0xE8, 3]) + b"bye"
            + bytes([0xFF, 0]) + frames["close"]
        )
        entries["timers"] = bytes([0b100010, 0xF6, 10, 0xF6, 10, 0xF6, 30]) + bytes([0xFF, 0]) + frames["pong"]
        entries["fail"] = bytes([0b10, 0xF5, 0x03, 0xF0]) + bytes([0xFF, 0]) + frames["hello"]
        out[target] = entries
    return out


def main():
    for target, entries in seeds().items():
        directory = os.path.join("seeds", target)
        os.makedirs(directory, exist_ok=True)
        for name, data in entries.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
