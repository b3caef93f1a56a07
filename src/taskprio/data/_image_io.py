"""Read the PNG and JPEG files of the dense benchmarks, with Pillow when it is installed.

The loaders read images as ``np.asarray(Image.open(path))`` does with Pillow: a palette PNG
gives its palette *indices* (the class ids of PASCAL's label PNGs), a greyscale file ``[H, W]``,
a colour file ``[H, W, 3]``. When Pillow is missing, two small decoders written here with
numpy take over, so the loaders and their tests work without it:

- PNG: every colour type at 8 bits, 16-bit greyscale and RGB, 1/2/4-bit palettes; not
  interlaced (Adam7) files.
- JPEG: baseline and extended sequential Huffman files (SOF0/SOF1), 8-bit, greyscale or
  YCbCr with any chroma subsampling, restart markers; not progressive or arithmetic files.
  Chroma is upsampled like libjpeg's default "fancy" upsampling for 2x1, 1x2 and 2x2
  subsampling (replication otherwise). The IDCT is exact (float): the output equals
  ``djpeg -dct float`` of libjpeg-turbo 2.1 bit for bit on the files we tried, and differs from
  its default integer IDCT, which Pillow uses, by at most 3 levels.

The fallback decodes entropy-coded data in pure Python: about 0.15 s for a 500x375 JPEG, and
up to a second for a large PNG whose rows use the Paeth or Average filters. Install Pillow
(``pip install pillow``) to train on the real data sets.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HAS_PILLOW = importlib.util.find_spec("PIL") is not None
_warned_no_pillow = False


def read_image(path: Path) -> NDArray[Any]:
    """Read a PNG or JPEG file as ``np.asarray(PIL.Image.open(path))`` would.

    Args:
        path: the file; PNG and JPEG are recognised by their first bytes, not their suffix.

    Returns:
        ``[H, W]`` for greyscale files and palette PNGs (palette indices), ``[H, W, C]``
        otherwise (C = 2 grey+alpha, 3 RGB, 4 RGBA); uint8, or uint16 for 16-bit greyscale.

    Raises:
        ValueError: the file is neither PNG nor JPEG, is damaged, or uses a feature the
            fallback decoder lacks (the message says to install Pillow).
    """
    if _HAS_PILLOW:
        with _pillow_image().open(path) as image:
            return np.asarray(image)
    _warn_no_pillow()
    data = Path(path).read_bytes()
    if data.startswith(_PNG_SIGNATURE):
        return decode_png(data, name=str(path))
    if data.startswith(b"\xff\xd8"):
        return decode_jpeg(data, name=str(path))
    raise ValueError(f"{path} is neither a PNG nor a JPEG file (its first bytes are {data[:8]!r}).")


def read_rgb(path: Path) -> NDArray[np.uint8]:
    """Read an image file as ``[H, W, 3]`` uint8 RGB, like Pillow's ``.convert("RGB")``.

    Greyscale is repeated on the three channels, alpha dropped, palettes applied.
    """
    if _HAS_PILLOW:
        with _pillow_image().open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    _warn_no_pillow()
    data = Path(path).read_bytes()
    if data.startswith(_PNG_SIGNATURE):
        info: dict[str, Any] = {}
        pixels = decode_png(data, name=str(path), info=info)
        if info["color_type"] == 3:
            return np.asarray(info["palette"][pixels], dtype=np.uint8)
    else:
        pixels = read_image(path)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 2:  # grey + alpha
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _pillow_image() -> Any:
    """The ``PIL.Image`` module (imported on use: Pillow is optional and has no stubs here)."""
    return importlib.import_module("PIL.Image")


def _warn_no_pillow() -> None:
    global _warned_no_pillow
    if not _warned_no_pillow:
        _warned_no_pillow = True
        logger.warning(
            "Pillow is not installed: PNG and JPEG files are decoded by a pure-Python fallback, "
            "up to a second per image. Run `pip install pillow` to train on the real data sets."
        )


def _unsupported(name: str, what: str) -> ValueError:
    return ValueError(
        f"{name}: {what}, which the built-in decoder does not read. Install Pillow "
        "(`pip install pillow`); taskprio uses it when present."
    )


# -- PNG ---------------------------------------------------------------------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def decode_png(
    data: bytes, *, name: str = "PNG", info: dict[str, Any] | None = None
) -> NDArray[Any]:
    """Decode a PNG file's bytes (see :func:`read_image` for the output).

    Args:
        data: the whole file.
        name: the file name, for error messages.
        info: if given, receives ``color_type``, ``bit_depth`` and, for palette files,
            ``palette`` ([entries, 3] uint8).
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{name} is not a PNG file.")
    pos = len(_PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    palette = np.zeros((0, 3), dtype=np.uint8)
    compressed = bytearray()
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    if header is None or not compressed:
        raise ValueError(f"{name} is damaged: no IHDR or IDAT chunk.")
    width, height, bit_depth, color_type, _, _, interlace = header
    if interlace:
        raise _unsupported(name, "an interlaced (Adam7) PNG")
    if color_type not in _PNG_CHANNELS:
        raise ValueError(f"{name} is damaged: PNG colour type {color_type} does not exist.")
    channels = _PNG_CHANNELS[color_type]
    supported = bit_depth == 8 or (bit_depth == 16 and color_type in (0, 2))
    supported |= color_type == 3 and bit_depth in (1, 2, 4)
    if not supported:
        raise _unsupported(name, f"a {bit_depth}-bit PNG of colour type {color_type}")
    if info is not None:
        info.update(color_type=color_type, bit_depth=bit_depth, palette=palette)
    try:
        raw = zlib.decompress(bytes(compressed))
    except zlib.error as error:
        raise ValueError(f"{name} is damaged: {error}.") from error
    bits_per_pixel = channels * bit_depth
    stride = math.ceil(width * bits_per_pixel / 8)
    if len(raw) < height * (stride + 1):
        raise ValueError(f"{name} is damaged: its image data is truncated.")
    rows = _unfilter_png(raw, height, stride, max(1, bits_per_pixel // 8), name)  # [H, stride]
    samples: NDArray[Any]
    if bit_depth == 16:
        samples = rows.view(">u2").astype(np.uint16).reshape(height, width, channels)
        if color_type == 2:  # Pillow reads 16-bit RGB as 8-bit RGB (the high bytes).
            samples = (samples >> 8).astype(np.uint8)
    elif bit_depth < 8:
        bits = np.unpackbits(rows, axis=1)[:, : width * bit_depth].reshape(height, width, bit_depth)
        weights = (1 << np.arange(bit_depth - 1, -1, -1)).astype(np.uint8)
        samples = (bits * weights).sum(axis=2, dtype=np.uint8)[:, :, None]
    else:
        samples = rows.reshape(height, width, channels)
    return samples[:, :, 0] if channels == 1 else samples


def _unfilter_png(raw: bytes, height: int, stride: int, bpp: int, name: str) -> NDArray[np.uint8]:
    """Undo the per-row PNG filters; returns [height, stride] bytes."""
    scanlines = np.frombuffer(raw, dtype=np.uint8, count=height * (stride + 1)).reshape(height, -1)
    filters = scanlines[:, 0]
    rows: NDArray[np.uint8] = np.array(scanlines[:, 1:], dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        row, kind = rows[y], filters[y]
        if kind == 1:  # Sub: a running sum along the row, per byte of a pixel, modulo 256.
            pixels = row[: stride - stride % bpp].reshape(-1, bpp)
            row[: pixels.size] = np.cumsum(pixels, axis=0, dtype=np.uint8).ravel()
        elif kind == 2:  # Up
            row += previous
        elif kind in (3, 4):  # Average, Paeth: each byte needs the one just decoded.
            row[:] = _unfilter_sequential(row.tolist(), previous.tolist(), bpp, int(kind))
        elif kind != 0:
            raise ValueError(f"{name} is damaged: PNG filter type {kind} does not exist.")
        previous = row
    return rows


def _unfilter_sequential(row: list[int], prior: list[int], bpp: int, kind: int) -> list[int]:
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 3:
            row[i] = (row[i] + ((left + up) >> 1)) & 0xFF
        else:
            up_left = prior[i - bpp] if i >= bpp else 0
            estimate = left + up - up_left
            dist_left, dist_up = abs(estimate - left), abs(estimate - up)
            dist_up_left = abs(estimate - up_left)
            if dist_left <= dist_up and dist_left <= dist_up_left:
                predictor = left
            elif dist_up <= dist_up_left:
                predictor = up
            else:
                predictor = up_left
            row[i] = (row[i] + predictor) & 0xFF
    return row


# -- JPEG --------------------------------------------------------------------------------------


def _zigzag() -> NDArray[np.int64]:
    """Natural (row-major) index of each zigzag position of an 8x8 block."""
    order: list[int] = []
    for diagonal in range(15):
        rows = range(max(0, diagonal - 7), min(diagonal, 7) + 1)
        ordered = reversed(rows) if diagonal % 2 == 0 else rows
        order.extend(row * 8 + diagonal - row for row in ordered)
    return np.array(order, dtype=np.int64)


ZIGZAG = _zigzag()
# IDCT basis: _IDCT[u, x] = c(u)/2 cos((2x + 1)uπ/16), c(0) = 1/√2, so a block is Aᵀ F A.
_IDCT = np.array(
    [
        [
            (math.sqrt(0.5) if u == 0 else 1.0) / 2 * math.cos((2 * x + 1) * u * math.pi / 16)
            for x in range(8)
        ]
        for u in range(8)
    ]
)


class _Huffman:
    """A Huffman table as a 16-bit lookahead: ``lut[next 16 bits] = (length << 8) | symbol``."""

    def __init__(self, counts: bytes, symbols: bytes) -> None:
        self.lut = [0] * 65536
        code, k = 0, 0
        for length in range(1, 17):
            for _ in range(counts[length - 1]):
                start = code << (16 - length)
                entry = (length << 8) | symbols[k]
                self.lut[start : start + (1 << (16 - length))] = [entry] * (1 << (16 - length))
                code += 1
                k += 1
            code <<= 1


class _Component:
    def __init__(self, ident: int, h: int, v: int, table: int) -> None:
        self.ident, self.h, self.v, self.table = ident, h, v, table
        self.blocks: NDArray[np.int64] = np.zeros(0, dtype=np.int64)  # [rows, cols, 64] zigzag
        self.dc_table: _Huffman | None = None
        self.ac_table: _Huffman | None = None


def decode_jpeg(data: bytes, *, name: str = "JPEG") -> NDArray[np.uint8]:
    """Decode a baseline or extended sequential JPEG (see :func:`read_image` for the output)."""
    try:
        return _decode_jpeg(data, name)
    except (IndexError, KeyError, struct.error) as error:
        raise ValueError(f"{name} is damaged: {type(error).__name__} while decoding.") from error


def _decode_jpeg(data: bytes, name: str) -> NDArray[np.uint8]:
    quant: dict[int, NDArray[np.float64]] = {}
    huffman: dict[tuple[int, int], _Huffman] = {}
    components: list[_Component] = []
    width = height = restart_interval = 0
    is_adobe_rgb = False
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"{name} is damaged: no marker at byte {pos}.")
        marker = data[pos + 1]
        pos += 2
        if marker == 0xFF:  # fill byte
            pos -= 1
            continue
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        segment = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xDB:  # DQT
            i = 0
            while i < len(segment):
                precision, table = segment[i] >> 4, segment[i] & 15
                dtype, size = (">u2", 128) if precision else ("u1", 64)
                quant[table] = np.frombuffer(segment[i + 1 : i + 1 + size], dtype=dtype).astype(
                    np.float64
                )
                i += 1 + size
        elif marker == 0xC4:  # DHT
            i = 0
            while i < len(segment):
                counts = segment[i + 1 : i + 17]
                total = sum(counts)
                huffman[(segment[i] >> 4, segment[i] & 15)] = _Huffman(
                    counts, segment[i + 17 : i + 17 + total]
                )
                i += 17 + total
        elif marker in (0xC0, 0xC1):  # SOF0 baseline, SOF1 extended sequential
            precision, height, width, count = struct.unpack(">BHHB", segment[:6])
            if precision != 8:
                raise _unsupported(name, f"a {precision}-bit JPEG")
            for c in range(count):
                ident, sampling, table = segment[6 + 3 * c : 9 + 3 * c]
                components.append(_Component(ident, sampling >> 4, sampling & 15, table))
            if height == 0:
                raise _unsupported(name, "a JPEG whose height is given by a DNL marker")
            _allocate_blocks(components, width, height)
        elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            kind = (
                "a progressive JPEG" if marker in (0xC2, 0xC6) else f"a JPEG (SOF{marker - 0xC0})"
            )
            raise _unsupported(name, kind)
        elif marker == 0xDD:  # DRI
            (restart_interval,) = struct.unpack(">H", segment[:2])
        elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
            is_adobe_rgb = segment[11] == 0
        elif marker == 0xDA:  # SOS
            if not components:
                raise ValueError(f"{name} is damaged: a scan comes before the frame header.")
            pos = _decode_scan(
                data, pos, segment, components, huffman, width, height, restart_interval, name
            )
    if not components:
        raise ValueError(f"{name} is damaged: no frame header (SOF0/SOF1).")
    return _to_pixels(components, quant, width, height, is_adobe_rgb, name)


def _allocate_blocks(components: list[_Component], width: int, height: int) -> None:
    h_max = max(c.h for c in components)
    v_max = max(c.v for c in components)
    mcus_x, mcus_y = math.ceil(width / (8 * h_max)), math.ceil(height / (8 * v_max))
    for c in components:
        c.blocks = np.zeros((mcus_y * c.v, mcus_x * c.h, 64), dtype=np.int64)


def _entropy_segments(data: bytes, pos: int) -> tuple[list[bytes], int]:
    """Split the entropy-coded data from `pos` at restart markers, removing stuffed zeros.

    Returns the segments and the position of the marker that ends the scan.
    """
    segments, current, start = [], bytearray(), pos
    while True:
        found = data.find(b"\xff", pos)
        if found < 0 or found + 1 >= len(data):
            current += data[start:]
            segments.append(bytes(current))
            return segments, len(data)
        following = data[found + 1]
        if following == 0x00:
            current += data[start : found + 1]
            pos = start = found + 2
        elif 0xD0 <= following <= 0xD7:
            current += data[start:found]
            segments.append(bytes(current))
            current = bytearray()
            pos = start = found + 2
        elif following == 0xFF:
            pos = found + 1
        else:
            current += data[start:found]
            segments.append(bytes(current))
            return segments, found


def _decode_scan(
    data: bytes,
    pos: int,
    header: bytes,
    components: list[_Component],
    huffman: dict[tuple[int, int], _Huffman],
    width: int,
    height: int,
    restart_interval: int,
    name: str,
) -> int:
    by_id = {c.ident: c for c in components}
    scan = []
    for i in range(header[0]):
        component = by_id[header[1 + 2 * i]]
        tables = header[2 + 2 * i]
        component.dc_table = huffman[(0, tables >> 4)]
        component.ac_table = huffman[(1, tables & 15)]
        scan.append(component)
    segments, end = _entropy_segments(data, pos)
    h_max = max(c.h for c in components)
    v_max = max(c.v for c in components)
    # Each unit is one MCU: a list of (component, block row, block column).
    if len(scan) == 1:
        c = scan[0]
        cols = math.ceil(math.ceil(width * c.h / h_max) / 8)
        rows = math.ceil(math.ceil(height * c.v / v_max) / 8)
        units = [[(c, r, q)] for r in range(rows) for q in range(cols)]
    else:
        mcus_x, mcus_y = math.ceil(width / (8 * h_max)), math.ceil(height / (8 * v_max))
        units = [
            [
                (c, my * c.v + dy, mx * c.h + dx)
                for c in scan
                for dy in range(c.v)
                for dx in range(c.h)
            ]
            for my in range(mcus_y)
            for mx in range(mcus_x)
        ]
    per_segment = restart_interval or len(units)
    for s in range(math.ceil(len(units) / per_segment)):
        if s >= len(segments):
            raise ValueError(f"{name} is damaged: the scan ends before its last restart interval.")
        _decode_units(segments[s], units[s * per_segment : (s + 1) * per_segment])
    return end


def _decode_units(segment: bytes, units: list[list[tuple[_Component, int, int]]]) -> None:
    # The bits as a '0'/'1' string, padded with 1s as libjpeg does past the end of the data.
    bits = bin(int.from_bytes(segment, "big") | (1 << (8 * len(segment))))[3:] if segment else ""
    bits += "1" * 64
    pos = 0
    predictors: dict[int, int] = {}
    for unit in units:
        for component, row, col in unit:
            assert component.dc_table is not None and component.ac_table is not None
            coefficients = [0] * 64
            entry = component.dc_table.lut[int(bits[pos : pos + 16], 2)]
            pos += entry >> 8
            size = entry & 0xFF
            diff = 0
            if size:
                diff = int(bits[pos : pos + size], 2)
                pos += size
                if diff < 1 << (size - 1):
                    diff -= (1 << size) - 1
            dc = predictors.get(component.ident, 0) + diff
            predictors[component.ident] = dc
            coefficients[0] = dc
            ac_lut = component.ac_table.lut
            k = 1
            while k < 64:
                entry = ac_lut[int(bits[pos : pos + 16], 2)]
                pos += entry >> 8
                run, size = (entry >> 4) & 15, entry & 15
                if size == 0:
                    if run != 15:
                        break  # end of block
                    k += 16
                    continue
                k += run
                value = int(bits[pos : pos + size], 2)
                pos += size
                if value < 1 << (size - 1):
                    value -= (1 << size) - 1
                if k < 64:
                    coefficients[k] = value
                k += 1
            component.blocks[row, col] = coefficients


def _to_pixels(
    components: list[_Component],
    quant: dict[int, NDArray[np.float64]],
    width: int,
    height: int,
    is_adobe_rgb: bool,
    name: str,
) -> NDArray[np.uint8]:
    h_max = max(c.h for c in components)
    v_max = max(c.v for c in components)
    planes = []
    for c in components:
        if c.table not in quant:
            raise ValueError(f"{name} is damaged: quantization table {c.table} is missing.")
        rows, cols, _ = c.blocks.shape
        zigzagged = np.zeros((rows, cols, 64))
        zigzagged[:, :, ZIGZAG] = c.blocks * quant[c.table]
        natural = zigzagged.reshape(rows, cols, 8, 8)  # [rows, cols, v, u]
        spatial = np.einsum("vy,rcvu,ux->rcyx", _IDCT, natural, _IDCT)
        plane = spatial.transpose(0, 2, 1, 3).reshape(rows * 8, cols * 8) + 128.0
        # Samples are whole numbers in 0..255 before colour conversion, as in libjpeg.
        plane = np.clip(np.rint(plane), 0.0, 255.0)
        # The rows and columns that hold image data, at this component's sampling.
        real = plane[: math.ceil(height * c.v / v_max), : math.ceil(width * c.h / h_max)]
        planes.append(_upsample(real, v_max // c.v, h_max // c.h)[:height, :width])
    if len(planes) == 1:
        return _to_uint8(planes[0])
    if len(planes) != 3:
        raise _unsupported(name, f"a JPEG with {len(planes)} components (CMYK?)")
    if is_adobe_rgb:
        return _to_uint8(np.stack(planes, axis=2))
    y, cb, cr = planes[0], planes[1] - 128.0, planes[2] - 128.0
    rgb = np.stack(
        [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=2
    )  # JFIF YCbCr → RGB
    return _to_uint8(rgb)


def _upsample(plane: NDArray[np.float64], factor_v: int, factor_h: int) -> NDArray[np.float64]:
    """Upsample a chroma plane as libjpeg's "fancy" upsampling does for 2x1, 1x2 and 2x2.

    Each output sample is a 3:1 triangle-filter mix of its nearest input samples (9:3:3:1 in
    two dimensions) with libjpeg's rounding; the first and last samples repeat their neighbour.
    Other factors repeat each sample.
    """
    if factor_h == 2 and factor_v in (1, 2) and plane.shape[1] > 1:
        samples = plane.astype(np.int64)
        if factor_v == 2:  # columns sums over the nearer row (x3) and the farther one
            above = np.concatenate([samples[:1], samples[:-1]])
            below = np.concatenate([samples[1:], samples[-1:]])
            sums = np.stack([3 * samples + above, 3 * samples + below], axis=1)
            sums = sums.reshape(-1, samples.shape[1])  # [2 rows, cols]
            scale, bias_even, bias_odd = 16, 8, 7
        else:
            sums = samples
            scale, bias_even, bias_odd = 4, 1, 2
        left = np.concatenate([sums[:, :1], sums[:, :-1]], axis=1)
        right = np.concatenate([sums[:, 1:], sums[:, -1:]], axis=1)
        even = (3 * sums + left + bias_even) // scale
        odd = (3 * sums + right + bias_odd) // scale
        # The outermost samples copy their own column: (4·sum + bias) / scale.
        even[:, 0] = (4 * sums[:, 0] + bias_even) // scale
        odd[:, -1] = (4 * sums[:, -1] + bias_odd) // scale
        return np.stack([even, odd], axis=2).reshape(sums.shape[0], -1).astype(np.float64)
    if factor_h == 1 and factor_v == 2 and plane.shape[0] > 1:
        samples = plane.astype(np.int64)
        above = np.concatenate([samples[:1], samples[:-1]])
        below = np.concatenate([samples[1:], samples[-1:]])
        upper, lower = (3 * samples + above + 1) // 4, (3 * samples + below + 2) // 4
        return np.stack([upper, lower], axis=1).reshape(-1, samples.shape[1]).astype(np.float64)
    return np.repeat(np.repeat(plane, factor_v, axis=0), factor_h, axis=1)


def _to_uint8(values: NDArray[np.float64]) -> NDArray[np.uint8]:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
