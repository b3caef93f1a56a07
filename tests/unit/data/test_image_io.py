"""The built-in PNG and JPEG decoders used when Pillow is not installed."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from _dense_files import encode_jpeg, encode_png

from taskprio.data import _image_io
from taskprio.data._image_io import decode_jpeg, decode_png, read_image, read_rgb

# A 21x13 RGB image written by libjpeg-turbo 2.1.5's cjpeg (-quality 80 -sample 2x2
# -restart 1B: 4:2:0 chroma, a restart marker after every MCU), and the pixels its djpeg
# decodes with -dct float (zlib-compressed [13, 21, 3] uint8).
JPEG_B64 = (
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsj"
    "HBYWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo"
    "KCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAARCAANABUDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAA"
    "AAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAk"
    "M2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKT"
    "lJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QA"
    "HwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdh"
    "cRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hp"
    "anN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk"
    "5ebn6Onq8vP09fb3+Pn6/90ABAAB/9oADAMBAAIRAxEAPwDze08OxxLumQhegx61q6fpEElwkUact/hmvTrbRbSR"
    "QJEVh1wyg1taf4fsEdXS3iVx0YRgEVtn/EuJlXdRVGo9ieFuLsHHBexqUm6uvveu33H/0KNv4Z+T7n6UV7Jb6Rb7"
    "P/rUV8PV4tnzvU++o8RT9mj/2Q=="
)
REF_B64 = (
    "eNoBMwPM/A0A8REA7xsA7SIG5ioI2zAHzTsIxUoKwFcHuGEAr3MDrX4BpY4Co5wHoaECnK0Ek7kFgsQFd80HdtYJ"
    "cuAIaxAJ9RQN8RoQ6iQR3TMQz0IPxFMOt2ALrm8QrHcNo4gNo5MLnZ8MmqgQmagQlrESkMEThMwTe9UVet4WducW"
    "cQwi8hEn7hUq3yMkzEQfumkfsIQaoI8Tj5gcjJ8dh6kag7QYg7oXgLscgrAmhbIpgcMkfs8jedckduElcusmbgQ1"
    "6gk85Q0/0iQ4u1kwqo8vnbcmi8EddL0haMMnZschYdAhZNQeaMgjZ7c6crQ/dMU2dNA0c9k2b+I3a+w2ZwBJ4wNO"
    "3QhTyCdLrGo8lqwzgt0jauobUdweQOIqQuAfPOchQugdSNMlSr9JYbRRZsVMa9FKa9pLZ+NOZO5MYQBc4wJf2Ahl"
    "wi5eqHVHiLExauUdTPcWNugcJ+8rLeUcIu4gLO0eMtUmN8VXWLdiX8ZfY89eYtleYOFgW+pgVgdw5Qlw1xF3wjtx"
    "rXpViKw0YdsdQfIaL+QeH+4vJ+AdGeojJugjLdIrMspjWr1xYcRyXcxyWNZzVt90Uuh0TQmC3QiAzhWGvj2FrXRp"
    "i5hEXsAtQNwsNswpIto6Ks0nG9YvJtQvK8I3MMdwXLyAXsWFWcyGU9SHT92JS+eIRgiUzwyUxhWWtjKOo1h4hXRd"
    "ZZJISaU/OqZAMaxDLbFDLK4+KK0/KLBSOLN5VL+VY8OWVcmYTNKZSNycReabQAarwQuruxqusjWuqVSkmW6XhYmN"
    "dp+Kb6qMarSNZr2NZcCNYL+MXb2UXr2jZsKuZcOpUsurSNOsRdytQeatOgC9rQW8qBK8oSa9nDi7kUm3hl61gHO0"
    "fIOudpCucpyxcKW1bqu6aa27ZKy5XbC2UsK8TMu9Q9W9Qd2/Pei+NgbYqwzVpxnToiTTnCzSkjTSiEPRhVTPf2fI"
    "eXXEcYDEbYvJaJTPY53SYKjPWrLMT8PNSM7NQdnOPuHQOuzPNQbipQ7ipR3koyflnyznmDPqkD/qjEzmhGflgnbg"
    "fH/fc4bfaYzhYJjiWaniV7rhUsndRtXcQN3eO+fgOPHfM6TmhnI="
)


def _pixels(seed, shape, high=256, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def test_libjpeg_file_decodes_as_libjpeg_float_idct():
    data = base64.b64decode(JPEG_B64)
    assert b"\xff\xd0" in data and b"\xff\xdd" in data  # restart markers and interval
    expected = np.frombuffer(zlib.decompress(base64.b64decode(REF_B64)), np.uint8)
    decoded = decode_jpeg(data)
    assert decoded.shape == (13, 21, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, expected.reshape(13, 21, 3))


@pytest.mark.parametrize(
    "options", [{}, {"subsample": True}, {"restart_interval": 1}, {"quality": 100}]
)
def test_jpeg_round_trip_is_close(options):
    y, x = np.mgrid[0:19, 0:27]
    pixels = np.stack([x * 9, y * 13, 200 - x * 5], axis=2).astype(np.uint8)  # smooth
    decoded = decode_jpeg(encode_jpeg(pixels, **options))
    assert decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels).mean() < 3


def test_greyscale_jpeg_is_two_dimensional():
    pixels = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (9, 1))
    decoded = decode_jpeg(encode_jpeg(pixels, quality=100))
    assert decoded.shape == (9, 20)
    assert np.abs(decoded.astype(int) - pixels).max() <= 2


def test_progressive_jpeg_asks_for_pillow():
    data = encode_jpeg(_pixels(0, (8, 8, 3))).replace(b"\xff\xc0", b"\xff\xc2")
    with pytest.raises(ValueError, match=r"progressive JPEG.*pip install pillow"):
        decode_jpeg(data)


@pytest.mark.parametrize(
    "pixels",
    [
        _pixels(1, (7, 9)),  # grey
        _pixels(2, (7, 9), 65536, np.uint16),  # 16-bit grey
        _pixels(3, (7, 9, 3)),  # RGB
        _pixels(4, (7, 9, 4)),  # RGBA
        _pixels(5, (7, 9, 2)),  # grey + alpha
    ],
    ids=["grey", "grey16", "rgb", "rgba", "grey_alpha"],
)
def test_png_round_trip_with_every_filter(pixels):
    for row_filter in range(5):
        decoded = decode_png(encode_png(pixels, filters=(row_filter,)))
        assert decoded.dtype == pixels.dtype
        np.testing.assert_array_equal(decoded, pixels)
    np.testing.assert_array_equal(decode_png(encode_png(pixels)), pixels)  # mixed filters


def test_palette_png_gives_indices_and_rgb_gives_colours(tmp_path):
    indices = _pixels(6, (5, 6), 21)
    palette = _pixels(7, (21, 3))
    path = tmp_path / "labels.png"
    path.write_bytes(encode_png(indices, palette=palette))
    np.testing.assert_array_equal(read_image(path), indices)
    np.testing.assert_array_equal(read_rgb(path), palette[indices])


def test_read_rgb_repeats_grey(tmp_path):
    grey = _pixels(8, (4, 5))
    path = tmp_path / "grey.png"
    path.write_bytes(encode_png(grey))
    np.testing.assert_array_equal(read_rgb(path), np.repeat(grey[:, :, None], 3, axis=2))


def test_unknown_format_and_damage_are_errors(tmp_path):
    path = tmp_path / "image.bmp"
    path.write_bytes(b"BM" + bytes(20))
    if not _image_io._HAS_PILLOW:
        with pytest.raises(ValueError, match="neither a PNG nor a JPEG"):
            read_image(path)
    truncated = encode_png(_pixels(9, (6, 6)))
    with pytest.raises(ValueError, match="damaged"):
        decode_png(truncated[:-40])
