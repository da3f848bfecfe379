#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (replacing it).

The layouts are those documented at the top of ring_reader_fuzz.cpp; a frame header is
wire::FrameHeader (24 bytes, little-endian). Run it after changing either.
"""
import pathlib
import shutil
import struct

HERE = pathlib.Path(__file__).resolve().parent
HEADER = struct.Struct("<BBHIQiI")  # type, flags, reserved, payload_length, id, status, aux
CONTROL_SIZE = 256                  # sizeof(RingControl): head, producer flags, tail, consumer flags
RING_SLOTS = 64
SLOT_PAYLOAD = 2048 - HEADER.size
ON_SOCKET = 0x80
HELLO, WELCOME, MESSAGE, WITHDRAWN, GET, REPLY, REQUEST, RESPONSE, DRAIN = range(1, 10)
WANTS_REPLY, GET_NEXT = 0x1, 0x2


def frame(type_, id_=0, payload=b"", status=0, aux=0, flags=0, reserved=0, length=None):
    length = len(payload) if length is None else length
    return HEADER.pack(type_, flags, reserved, length, id_, status, aux) + payload


def pattern(n, seed=1):
    return bytes((seed * 131 + i * 7) & 0xFF for i in range(n))


def announce(type_=REQUEST, id_=0, length=0):
    """A ring record saying: the frame is the next datagram."""
    return frame(type_, id_, flags=ON_SOCKET, length=length)


class Synthetic:
    """A datagram of `length` bytes that starts with `start` (at most 24 bytes) and is zero after."""

    def __init__(self, length, start=b""):
        self.length, self.start = length, start


def ring(head, slots=(), datagrams=(), control=b""):
    out = struct.pack("<IB", head, len(datagrams))
    for d in datagrams:
        if isinstance(d, Synthetic):
            out += struct.pack("<I", 0x80000000 | d.length) + d.start
        else:
            out += struct.pack("<I", len(d)) + d
    if control or slots:
        out += control.ljust(CONTROL_SIZE, b"\0")
    for s in slots:
        out += struct.pack("<H", len(s)) + s
    return out


def control_block(producer_sleeping=0, consumer_sleeping=0, tail=0, bells=0):
    block = bytearray(CONTROL_SIZE)
    struct.pack_into("<I", block, 0, 0)                               # head (set by the target)
    struct.pack_into("<II", block, 64, producer_sleeping, bells)      # producer_sleeping, room_bell
    struct.pack_into("<I", block, 128, tail)                          # tail
    struct.pack_into("<II", block, 192, consumer_sleeping, bells)     # consumer_sleeping, data_bell
    return bytes(block)


RING_READER = {
    "empty": ring(0),
    "one_request": ring(1, [frame(REQUEST, 1, pattern(16), aux=16)]),
    "mixed_records": ring(4, [frame(HELLO, 1, pattern(8)), frame(GET, aux=4),
                              frame(REPLY, 9, pattern(10), aux=10, flags=GET_NEXT), frame(REQUEST, 2, aux=100)]),
    "full_slot": ring(1, [frame(REQUEST, 3, pattern(SLOT_PAYLOAD), aux=SLOT_PAYLOAD)]),
    "on_socket": ring(2, [announce(), frame(GET, aux=1)], [frame(REQUEST, 5, pattern(3000), aux=3000)]),
    "on_socket_twice": ring(3, [announce(), frame(GET, aux=2), announce()],
                            [frame(REPLY, 7, pattern(2100), aux=4000), frame(REQUEST, 8, aux=1)]),
    "on_socket_max_size": ring(1, [announce()], [Synthetic(HEADER.size + 128 * 1024,
                                                           frame(REQUEST, 6, aux=128 * 1024, length=128 * 1024))]),
    "on_socket_oversized": ring(1, [announce()], [Synthetic(HEADER.size + 128 * 1024 + 1,
                                                            frame(REQUEST, 6, length=128 * 1024 + 1))]),
    "on_socket_missing": ring(1, [announce()]),
    "on_socket_with_data": ring(1, [announce(length=5) + b"12345"]),
    "on_socket_short_datagram": ring(1, [announce()], [b"\x07\x00\x00\x00\x00"]),
    "on_socket_empty_datagram": ring(2, [announce(), announce()], [b"", frame(GET, aux=1)]),
    "head_beyond_capacity": ring(RING_SLOTS + 1),
    "head_wrapped": ring(0xFFFFFFFF),
    "slot_too_long": ring(1, [frame(REQUEST, 1, length=SLOT_PAYLOAD + 1)]),
    "full_ring": ring(RING_SLOTS, [frame(GET, aux=i + 1) for i in range(RING_SLOTS)]),
    "invalid_frames": ring(3, [frame(MESSAGE, 1), frame(99), frame(GET, aux=1, reserved=1)]),
    "sleeping_flags": ring(2, [frame(GET, aux=1), frame(GET, aux=2)],
                           control=control_block(producer_sleeping=1, consumer_sleeping=1, tail=5, bells=3)),
}

FRAME_DECODE = {
    "hello": frame(HELLO, 1, pattern(100), aux=1),
    "hello_shared_memory": frame(HELLO, 1, aux=3),
    "welcome": frame(WELCOME, status=-1073741790),
    "welcome_shared_memory": frame(WELCOME, aux=1),
    "drain": frame(DRAIN),
    "message": frame(MESSAGE, 4, pattern(64), aux=512, flags=WANTS_REPLY),
    "message_no_reply": frame(MESSAGE, 5, pattern(3)),
    "withdrawn": frame(WITHDRAWN, 4),
    "get": frame(GET, aux=65536),
    "reply": frame(REPLY, 4, pattern(32), aux=40, flags=GET_NEXT),
    "request": frame(REQUEST, 9, pattern(10), aux=128 * 1024),
    "response": frame(RESPONSE, 9, pattern(12), aux=12),
    "short": frame(GET, aux=1)[:10],
    "length_mismatch": frame(REPLY, 1, pattern(4), aux=10, length=10),
    "reserved": frame(GET, aux=1, reserved=1),
    "unknown_type": frame(0x63),
    "unknown_flags": frame(GET, aux=1, flags=GET_NEXT),
    "no_credits": frame(GET, aux=0),
    "reply_too_long": frame(REPLY, 5, pattern(9), aux=2),
    "message_id_zero": frame(MESSAGE, 0),
    "hello_bad_version": frame(HELLO, 99),
}

# fltmgrd's control protocol: requests (NUL-separated fields) and response bodies.
def request(*fields):
    return b"".join(f.encode() + b"\0" for f in fields)


TABLE = (b"FLTCTL/1 next=0\nname\t#events\t@latency_us_log2\n"
         b"scanner\t12\t1,2,3\nprobe\\tx\t0\t\n")

CONTROL_PROTOCOL = {
    "stats": request("FLTCTL/1", "stats"),
    "stats_paged": request("FLTCTL/1", "stats", "7"),
    "stat": request("FLTCTL/1", "stat", "scanner"),
    "attach": request("FLTCTL/1", "attach", "scanner", "/srv/inbox"),
    "host": request("FLTCTL/1", "host"),
    "bad_version": request("FLTCTL/2", "stats"),
    "unknown": request("FLTCTL/1", "reboot"),
    "too_many": request("FLTCTL/1", "load", "a", "b", "c", "d"),
    "no_nul": b"FLTCTL/1\0stats",
    "control_byte": request("FLTCTL/1", "load", "a\x01b"),
    "huge_start": request("FLTCTL/1", "filters", "99999999999"),
    "table": TABLE,
    "table_bad_escape": b"FLTCTL/1 next=0\nname\nbad\\q\n",
    "table_short_row": b"FLTCTL/1 next=3\na\tb\nonly\n",
}

CONFIG = {
    "full": b"""# a comment
[fltmgrd]
plugin_dir = /opt/filters

[filter scanner]
altitude    = 320000
deadline_ms = 3000
default     = deny
attach      = /srv/incoming
attach      = /srv/other
load        = true
""",
    "crlf": b"[filter a]\r\nload = yes\r\n",
    "relative_attach": b"[filter a]\nattach = srv\n",
    "bad_number": b"[filter a]\naltitude = 99999999999\n",
    "key_outside": b"load = true\n",
    "duplicate": b"[filter a]\n[filter a]\n",
    "long_line": b"[filter a]\nattach = /" + b"x" * 5000 + b"\n",
    "control_char": b"[filter a]\nattach = /a\x01b\n",
    "empty_value": b"[filter a]\ndefault =\n",
}


def write(target, inputs):
    directory = HERE / "corpus" / target
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for name, data in inputs.items():
        (directory / name).write_bytes(data)


if __name__ == "__main__":
    write("ring_reader", RING_READER)
    write("frame_decode", FRAME_DECODE)
    write("control_protocol", CONTROL_PROTOCOL)
    write("config", CONFIG)
