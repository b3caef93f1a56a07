"""Writers of tiny fixture files in the real on-disk formats of the dense data sets.

PNG and baseline JPEG are written here with numpy and zlib (Pillow is not a dependency), the
PASCAL-Part and PASCAL-Context ``.mat`` files with scipy. The PNG encoder filters rows with a
vectorized formula, unlike the decoder under test, which undoes them byte by byte.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

# -- PNG ---------------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_row(row, prior, bpp, kind):
    row, prior = row.astype(np.int64), prior.astype(np.int64)
    left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
    up_left = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
    predictor = [0, left, prior, (left + prior) // 2, _paeth(left, prior, up_left)][kind]
    return ((row - predictor) % 256).astype(np.uint8)


def encode_png(pixels, *, palette=None, filters=(0, 1, 2, 3, 4)):
    """PNG bytes of [H, W] grey (uint8/uint16), [H, W, 3] RGB or, with `palette`, indices.

    Row y uses filter ``filters[y % len(filters)]``.
    """
    pixels = np.asarray(pixels)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    color_type = 3 if palette is not None else {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw_rows = pixels.astype(">u2").view(np.uint8) if depth == 16 else pixels.astype(np.uint8)
    raw_rows = raw_rows.reshape(height, -1)
    bpp = max(1, channels * depth // 8)
    body, prior = bytearray(), np.zeros(raw_rows.shape[1], np.uint8)
    for y in range(height):
        kind = filters[y % len(filters)]
        body += bytes([kind]) + _filter_row(raw_rows[y], prior, bpp, kind).tobytes()
        prior = raw_rows[y]
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    chunks = _chunk(b"IHDR", header)
    if palette is not None:
        chunks += _chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunks
        + _chunk(b"IDAT", zlib.compress(bytes(body)))
        + _chunk(b"IEND", b"")
    )


def write_png(path: Path, pixels, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(pixels, **options))
    return path


# -- JPEG (baseline) ---------------------------------------------------------------------------

_LUMA_Q = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)
_CHROMA_Q = np.full((8, 8), 99)
_CHROMA_Q[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def _zigzag():
    order = []
    for diagonal in range(15):
        rows = range(max(0, diagonal - 7), min(diagonal, 7) + 1)
        order.extend(r * 8 + diagonal - r for r in (reversed(rows) if diagonal % 2 == 0 else rows))
    return np.array(order)


_ZIGZAG = _zigzag()
_DCT = np.array(
    [
        [(math.sqrt(0.5) if u == 0 else 1.0) / 2 * math.cos((2 * x + 1) * u * math.pi / 16)
         for x in range(8)]
        for u in range(8)
    ]
)  # fmt: skip
# Huffman tables: (counts of codes of lengths 1..16, symbols). DC: the standard luminance
# counts; AC: 4 codes of 4 bits (EOB and the commonest symbols), the other 158 of 8 bits.
_DC_TABLE = ([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], list(range(12)))
_AC_SHORT = [0x00, 0x01, 0x02, 0x11]
_AC_SYMBOLS = _AC_SHORT + [
    s
    for s in [0xF0] + [(r << 4) | n for r in range(16) for n in range(1, 11)]
    if s not in _AC_SHORT
]
_AC_TABLE = ([0, 0, 0, 4, 0, 0, 0, 158, 0, 0, 0, 0, 0, 0, 0, 0], _AC_SYMBOLS)


def _codes(table):
    counts, symbols = table
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            codes[symbols[k]] = format(code, f"0{length}b")
            code += 1
            k += 1
        code <<= 1
    return codes


def _magnitude(value):
    size = abs(value).bit_length()
    bits = value if value > 0 else value + (1 << size) - 1
    return size, format(bits, f"0{size}b") if size else ""


def _quant(base, quality):
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255).astype(np.int64)


def encode_jpeg(pixels, *, quality=90, subsample=False, restart_interval=0):
    """Baseline JPEG bytes of [H, W] grey or [H, W, 3] RGB uint8 pixels.

    Args:
        subsample: 4:2:0 chroma (luma sampled 2x2), else 4:4:4.
        restart_interval: MCUs between restart markers (0: none).
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    height, width = pixels.shape[:2]
    if pixels.ndim == 2:
        planes, sampling, tables = [pixels], [(1, 1)], [0]
    else:
        r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        planes = [
            0.299 * r + 0.587 * g + 0.114 * b,
            -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
            0.5 * r - 0.418688 * g - 0.081312 * b + 128,
        ]
        sampling = [(2, 2) if subsample else (1, 1), (1, 1), (1, 1)]
        tables = [0, 1, 1]
    h_max, v_max = max(s[0] for s in sampling), max(s[1] for s in sampling)
    mcus_x, mcus_y = math.ceil(width / (8 * h_max)), math.ceil(height / (8 * v_max))
    quant = [_quant(_LUMA_Q, quality), _quant(_CHROMA_Q, quality)]
    blocks = []  # per component: [rows, cols, 64] quantized coefficients, zigzag order
    for plane, (h, v), table in zip(planes, sampling, tables, strict=True):
        padded = np.pad(
            plane,
            ((0, mcus_y * 8 * v_max - height), (0, mcus_x * 8 * h_max - width)),
            mode="edge",
        )
        factor_v, factor_h = v_max // v, h_max // h
        reduced = padded.reshape(
            padded.shape[0] // factor_v, factor_v, padded.shape[1] // factor_h, factor_h
        ).mean(axis=(1, 3))
        rows, cols = reduced.shape[0] // 8, reduced.shape[1] // 8
        tiles = (reduced - 128).reshape(rows, 8, cols, 8).transpose(0, 2, 1, 3)
        coefficients = np.einsum("vy,rcyx,ux->rcvu", _DCT, tiles, _DCT)
        quantized = np.rint(coefficients / quant[table]).astype(np.int64)
        blocks.append(quantized.reshape(rows, cols, 64)[:, :, _ZIGZAG])
    dc_codes, ac_codes = _codes(_DC_TABLE), _codes(_AC_TABLE)
    segments, bits, predictors = [], [], [0] * len(planes)
    mcu_count = mcus_x * mcus_y
    for mcu in range(mcu_count):
        my, mx = divmod(mcu, mcus_x)
        for c, (h, v) in enumerate(sampling):
            for dy in range(v):
                for dx in range(h):
                    block = blocks[c][my * v + dy, mx * h + dx]
                    size, extra = _magnitude(int(block[0]) - predictors[c])
                    predictors[c] = int(block[0])
                    bits += [dc_codes[size], extra]
                    run = 0
                    last = max([k for k in range(1, 64) if block[k] != 0], default=0)
                    for k in range(1, last + 1):
                        if block[k] == 0:
                            run += 1
                            continue
                        while run > 15:
                            bits.append(ac_codes[0xF0])
                            run -= 16
                        size, extra = _magnitude(int(block[k]))
                        bits += [ac_codes[(run << 4) | size], extra]
                        run = 0
                    if last < 63:
                        bits.append(ac_codes[0x00])
        is_last = mcu == mcu_count - 1
        if is_last or (restart_interval and (mcu + 1) % restart_interval == 0):
            segments.append(_pack_bits("".join(bits)))
            bits, predictors = [], [0] * len(planes)
    data = bytearray()
    for i, segment in enumerate(segments):
        data += segment
        if i < len(segments) - 1:
            data += bytes([0xFF, 0xD0 + i % 8])
    return (
        _jpeg_headers(quant, sampling, tables, width, height, restart_interval)
        + bytes(data)
        + b"\xff\xd9"
    )


def _pack_bits(bits):
    bits += "1" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    return raw.replace(b"\xff", b"\xff\x00")


def _segment(marker, body):
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _jpeg_headers(quant, sampling, tables, width, height, restart_interval):
    out = b"\xff\xd8" + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    for t, q in enumerate(quant[: max(tables) + 1]):
        out += _segment(0xDB, bytes([t]) + bytes(q.ravel()[_ZIGZAG].tolist()))
    frame = struct.pack(">BHHB", 8, height, width, len(sampling))
    for c, ((h, v), t) in enumerate(zip(sampling, tables, strict=True)):
        frame += bytes([c + 1, (h << 4) | v, t])
    out += _segment(0xC0, frame)
    for table_class, (counts, symbols) in ((0, _DC_TABLE), (1, _AC_TABLE)):
        out += _segment(0xC4, bytes([table_class << 4]) + bytes(counts) + bytes(symbols))
    if restart_interval:
        out += _segment(0xDD, struct.pack(">H", restart_interval))
    scan = bytes([len(sampling)]) + b"".join(bytes([c + 1, 0x00]) for c in range(len(sampling)))
    return out + _segment(0xDA, scan + b"\x00\x3f\x00")


def write_jpeg(path: Path, pixels, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(pixels, **options))
    return path


# -- MATLAB files (PASCAL-Part, PASCAL-Context) -------------------------------------------------


def write_label_map(path: Path, label_map) -> Path:
    """``pascal-context/trainval/<id>.mat`` with its ``LabelMap`` (uint16, 459-class ids)."""
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"LabelMap": np.asarray(label_map, dtype=np.uint16)})
    return path


def write_part_annotation(path: Path, image_name, objects) -> Path:
    """``human_parts/<id>.mat``: the PASCAL-Part ``anno`` struct.

    Args:
        objects: list of ``(class_name, class_ind, mask [H, W], {part_name: mask})``.
    """
    from scipy.io import savemat

    object_type = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    records = np.zeros((1, len(objects)), dtype=object_type)
    for k, (name, class_ind, mask, parts) in enumerate(objects):
        if parts:
            part_records = np.zeros((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
            for j, (part_name, part_mask) in enumerate(parts.items()):
                part_records[0, j] = (part_name, np.asarray(part_mask, dtype=np.uint8))
        else:
            part_records = np.zeros((0, 0))
        records[0, k] = (name, np.array([[class_ind]], np.uint8), np.asarray(mask, np.uint8),
                         part_records)  # fmt: skip
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (image_name, records if objects else np.zeros((0, 0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"anno": anno})
    return path
