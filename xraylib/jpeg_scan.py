"""Whether a baseline JPEG's scans hold every block its frame declares: the decoder-level truncation check.

libjpeg (Pillow's decoder) meets a marker where entropy-coded data should continue (a file cut short and closed
with an end-of-image marker, or a frame header declaring more rows than its scan holds) with a warning only, and
pads the missing blocks with mid-grey. This module walks the scans' Huffman codes, as the decoder does, and counts
the blocks each one holds; no pixel is decoded and no pixel value is looked at.
"""

from __future__ import annotations

import math

SOF_BASELINE = (0xC0, 0xC1)  # Huffman-coded, sequential: the only frames walked here
SOF_OTHER = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
RESTARTS = range(0xD0, 0xD8)


class _Short(Exception):
    """The entropy-coded data ended before the blocks it must hold."""


def scan_is_short(data: bytes) -> bool | None:
    """Whether the entropy-coded data of a baseline JPEG ends before the blocks its frame declares (True), holds
    them all (False), or cannot be told here (None: progressive, arithmetic-coded or lossless JPEGs, or a header
    the decoder would refuse itself)."""
    try:
        return _walk(data)
    except (IndexError, KeyError, ValueError, ZeroDivisionError):
        return None


def _walk(data: bytes) -> bool | None:
    """Follow the markers; walk each scan's blocks. See `scan_is_short`."""
    tables: dict[tuple[int, int], tuple[dict[str, int], list[int]]] = {}
    frame, restart, pos = None, 0, 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker in SOF_OTHER:
            return None
        if marker in SOF_BASELINE:
            frame = _frame(body)
        elif marker == 0xC4:
            tables.update(_huffman_tables(body))
        elif marker == 0xDD:
            restart = int.from_bytes(body[:2], "big")
        elif marker == 0xDA:
            if frame is None:
                return None
            pos, complete = _scan(data, pos + 2 + length, body, frame, tables, restart)
            if not complete:
                return True
            continue
        pos += 2 + length
    return True  # the data ended without an end-of-image marker


def _frame(body: bytes) -> dict:
    """Height, width and each component's sampling factors (id -> (H, V)) of a start-of-frame segment."""
    height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
    components = {body[6 + 3 * i]: (body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(body[5])}
    return {"height": height, "width": width, "components": components}


def _huffman_tables(body: bytes) -> dict:
    """(class, id) -> (code string -> symbol, the code lengths in use) for each table of a DHT segment."""
    out, pos = {}, 0
    while pos < len(body):
        key, counts = (body[pos] >> 4, body[pos] & 15), body[pos + 1 : pos + 17]
        symbols, pos = body[pos + 17 : pos + 17 + sum(counts)], pos + 17 + sum(counts)
        codes, code, k = {}, 0, 0
        for length, count in enumerate(counts, start=1):
            for _ in range(count):
                codes[format(code, f"0{length}b")] = symbols[k]
                code, k = code + 1, k + 1
            code <<= 1
        out[key] = (codes, sorted({len(c) for c in codes}))
    return out


def _segments(data: bytes, pos: int) -> tuple[list[str], int]:
    """The entropy-coded data from `pos` as bit strings, one per restart interval (stuffed zero bytes removed), and
    the position of the marker that ends it."""
    segments, current = [], bytearray()
    while True:
        ff = data.find(b"\xff", pos)
        if ff < 0 or ff + 1 >= len(data):
            current += data[pos:]
            segments.append(current)
            return [_bits(s) for s in segments], len(data)
        current += data[pos:ff]
        following = data[ff + 1]
        if following == 0:
            current.append(0xFF)
            pos = ff + 2
        elif following in RESTARTS:
            segments.append(current)
            current, pos = bytearray(), ff + 2
        elif following == 0xFF:
            pos = ff + 1
        else:
            segments.append(current)
            return [_bits(s) for s in segments], ff


def _bits(chunk: bytes) -> str:
    return "".join(format(b, "08b") for b in chunk)


def _blocks(frame: dict, ids: list[int]) -> tuple[int, list[int]]:
    """The MCUs of a scan over components `ids`, and each MCU's blocks per component (in scan order)."""
    sampling = frame["components"]
    hmax, vmax = max(h for h, _ in sampling.values()), max(v for _, v in sampling.values())
    if len(ids) == 1:
        h, v = sampling[ids[0]]
        across = math.ceil(math.ceil(frame["width"] * h / hmax) / 8)
        down = math.ceil(math.ceil(frame["height"] * v / vmax) / 8)
        return across * down, [1]
    mcus = math.ceil(frame["width"] / (8 * hmax)) * math.ceil(frame["height"] / (8 * vmax))
    return mcus, [sampling[i][0] * sampling[i][1] for i in ids]


def _scan(data: bytes, start: int, header: bytes, frame: dict, tables: dict, restart: int) -> tuple[int, bool]:
    """Walk one scan: (the position after its entropy-coded data, whether it held every block)."""
    ids = [header[1 + 2 * i] for i in range(header[0])]
    selectors = [(header[2 + 2 * i] >> 4, header[2 + 2 * i] & 15) for i in range(header[0])]
    mcus, per_mcu = _blocks(frame, ids)
    segments, end = _segments(data, start)
    interval = restart or mcus
    done = 0
    for bits in segments:
        pos = 0
        try:
            for _ in range(min(interval, mcus - done)):
                for (dc, ac), count in zip(selectors, per_mcu, strict=True):
                    for _ in range(count):
                        pos = _block(bits, pos, tables[(0, dc)], tables[(1, ac)])
                done += 1
        except _Short:
            return end, False
        if done == mcus:
            return end, True
    return end, False


def _symbol(bits: str, pos: int, table: tuple[dict[str, int], list[int]]) -> tuple[int, int]:
    codes, lengths = table
    for n in lengths:
        symbol = codes.get(bits[pos : pos + n])
        if symbol is not None and pos + n <= len(bits):
            return symbol, pos + n
    raise _Short


def _block(bits: str, pos: int, dc: tuple, ac: tuple) -> int:
    """The position after one 8x8 block's codes: a DC difference, then AC run/size codes up to end-of-block."""
    size, pos = _symbol(bits, pos, dc)
    pos += size
    k = 1
    while k < 64:
        rs, pos = _symbol(bits, pos, ac)
        run, size = rs >> 4, rs & 15
        if size == 0 and run != 15:
            break
        pos += size
        k += run + 1
    if pos > len(bits):
        raise _Short
    return pos
