#!/usr/bin/python3
"""Hand-made torch.save archives that attack the reader rather than describe an adapter: the files
a stranger could hand a user. Each must be refused with a clear error, never crash, abort or make
the server allocate what the file merely claims.

  hostile_checkpoints.py --out DIR     writes DIR/<case>.bin for every case (fuzz seeds)

The pickles are written opcode by opcode (protocol 2, as torch.save does), since PyTorch itself
would never produce them.
"""

import argparse
import io
import os
import struct
import zipfile


def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    raw = v.to_bytes(8, "little", signed=True)
    return b"\x8a\x08" + raw  # LONG1, 8 bytes


def _tuple(items):
    return b"(" + b"".join(items) + b"t"


def _storage(key, numel, kind="FloatStorage"):
    # BINPERSID of ('storage', torch.FloatStorage, key, 'cpu', numel)
    return _tuple([_str("storage"), b"ctorch\n" + kind.encode() + b"\n", _str(key), _str("cpu"),
                   _int(numel)]) + b"Q"


def _tensor(storage, offset, sizes, strides):
    return (b"ctorch._utils\n_rebuild_tensor_v2\n" +
            _tuple([storage, _int(offset), _tuple([_int(s) for s in sizes]),
                    _tuple([_int(s) for s in strides])]) + b"R")


def _state_dict(entries):
    """entries: list of (name, pickled value)."""
    body = b"".join(_str(k) + v for k, v in entries)
    return b"\x80\x02}(" + body + b"u."


def _archive(pickle, storages, deflate=False):
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("archive/data.pkl", pickle)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return buf.getvalue()


def _patch_declared_size(archive, entry, size):
    """Makes `entry` claim `size` uncompressed bytes in the local and central headers."""
    data = bytearray(archive)
    name = entry.encode()
    pos = 0
    while True:
        pos = data.find(name, pos)
        if pos < 0:
            break
        if data[pos - 30:pos - 26] == b"PK\x03\x04":  # local header: size at +22
            struct.pack_into("<I", data, pos - 30 + 22, size)
        elif data[pos - 46:pos - 42] == b"PK\x01\x02":  # central header: size at +24
            struct.pack_into("<I", data, pos - 46 + 24, size)
        pos += len(name)
    return bytes(data)


def cases():
    """{name: archive bytes}."""
    one = struct.pack("<f", 1.0)
    out = {}
    # sizes × strides + offset overflows int64: past an unchecked bound, a read far outside memory.
    out["overflowing_strides"] = _archive(
        _state_dict([("w", _tensor(_storage("0", 1), (1 << 63) - (1 << 39), [2], [1 << 40]))]),
        {"0": one})
    # A storage that claims 2^62 elements over 0 bytes (numel × 4 wraps to 0).
    out["wrapping_storage"] = _archive(
        _state_dict([("w", _tensor(_storage("0", 1 << 62), 0, [1 << 28], [1]))]), {"0": b""})
    # Zero strides over a 1-element storage: a 4 TiB tensor of one repeated value.
    out["zero_strides"] = _archive(
        _state_dict([("w", _tensor(_storage("0", 1), 0, [1 << 20, 1 << 20], [0, 0]))]),
        {"0": one})
    # Overlapping strided views, each legal, that together copy far more than the storage holds.
    views = [(f"w{i}", _tensor(_storage("0", 8192), 0, [4096, 4096], [1, 1])) for i in range(64)]
    out["overlapping_views"] = _archive(_state_dict(views), {"0": b"\0" * 32768})
    # One tensor memoised and named a thousand times: must cost its storage once.
    body = _str("w0") + _tensor(_storage("0", 4096), 0, [4096], [1]) + b"q\x01"
    body += b"".join(_str(f"w{i}") + b"h\x01" for i in range(1, 1000))
    out["memo_aliasing"] = _archive(b"\x80\x02}(" + body + b"u.", {"0": b"\0" * 16384})
    # A zip entry that claims 60 GiB (deflated, so libzip would inflate it) from a few bytes.
    a = _archive(_state_dict([("w", _tensor(_storage("0", 1), 0, [1], [1]))]), {"0": one},
                 deflate=True)
    out["claimed_entry_size"] = _patch_declared_size(a, "archive/data.pkl", 0xF0000000)
    # A real zip bomb: 64 MiB of zeros deflated to about 64 KB.
    n = 1 << 24
    out["zip_bomb"] = _archive(
        _state_dict([("w", _tensor(_storage("0", n), 0, [n], [1]))]), {"0": bytes(4 * n)},
        deflate=True)
    # A million nested tuples: a recursive destructor would overflow the stack.
    out["deep_nesting"] = _archive(b"\x80\x02K\x01" + b"\x85" * 1_000_000 + b".", {})
    # A list that holds itself.
    out["self_reference"] = _archive(b"\x80\x02]q\x00h\x00a.", {})
    # Negative offset, negative stride.
    out["negative_stride"] = _archive(
        _state_dict([("w", _tensor(_storage("0", 4), 3, [4], [-1]))]), {"0": one * 4})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, data in cases().items():
        with open(os.path.join(args.out, name + ".bin"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
