"""Property checks shared by the dense data-set tests."""

from __future__ import annotations

import numpy as np
import torch

from taskprio.data._dense import IGNORE_INDEX, hflip_sample, scale_crop_sample

# A block image: the image is constant on blocks of BLOCK x BLOCK pixels, red encoding the
# block's column and green its row, so the block a pixel comes from can be read back from the
# image after any flip and zoom (bilinear mixes only adjacent blocks, whose colours differ).
BLOCK = 4
RED_STEP, GREEN_STEP = 30, 50


def block_image(height, width):
    """[H, W, 3] float32 in [0, 1] and the [H, W] block column and row of each pixel."""
    rows, cols = np.mgrid[0:height, 0:width] // BLOCK
    image = np.stack(
        [(cols + 1) * RED_STEP / 255, (rows + 1) * GREEN_STEP / 255, np.full(cols.shape, 0.5)],
        axis=2,
    ).astype(np.float32)
    return image, cols, rows


def decode_blocks(image):
    """From a [3, H, W] raw (un-normalized) image: block column, row, and the pixels where
    both were read exactly (inside a block, not mixed with a neighbour)."""
    col = image[0] * 255 / RED_STEP - 1
    row = image[1] * 255 / GREEN_STEP - 1
    is_exact = ((col - col.round()).abs() < 1e-3) & ((row - row.round()).abs() < 1e-3)
    return col.round().long(), row.round().long(), is_exact


def assert_consistent_blocks(image, targets, expected, *, scales):
    """Each target at each exactly-read pixel equals `expected(task, col, row)`, up to the
    zoom (depth divided by one scale of `scales`) and the flip (normals' x negated).

    Returns:
        (scale, is_flipped) of the sample.
    """
    col, row, is_exact = decode_blocks(image)
    assert is_exact.float().mean() > 0.3
    is_flipped = bool(col[is_exact][0] > col[is_exact][-1]) if col.shape[-1] > 1 else False
    found_scale = 1.0
    for task, target in targets.items():
        want = expected(task, col, row)  # same layout as the target
        if task == "depth":
            valid = is_exact & (want[0] > 0)
            ratio = want[0][valid] / target[0][valid]
            assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
            matches = [s for s in scales if abs(float(ratio[0]) - s) < 1e-5]
            assert matches, f"depth is divided by {float(ratio[0])}, not one of {scales}"
            found_scale = matches[0]
            assert (target[0][is_exact & (want[0] == 0)] == 0).all()
        elif task == "normals":
            if is_flipped:
                want = torch.cat([-want[:1], want[1:]])
            torch.testing.assert_close(target[:, is_exact], want[:, is_exact])
        elif target.ndim == 2:
            assert torch.equal(target[is_exact], want[is_exact]), task
        else:
            torch.testing.assert_close(target[:, is_exact], want[:, is_exact])
    return found_scale, is_flipped


def assert_is_augmented(augmented, plain, kinds, *, scales):
    """`augmented` is `plain` after one scale-crop window of one of `scales` and maybe a flip.

    Returns:
        (scale, top, left, is_flipped) of the match.
    """
    image, targets = augmented
    plain_image, plain_targets = plain
    height, width = plain_image.shape[-2:]
    for scale in scales:
        crop_h, crop_w = int(height / scale), int(width / scale)
        for top in range(height - crop_h + 1):
            for left in range(width - crop_w + 1):
                zoomed = (plain_image, plain_targets)
                if scale != 1.0:
                    zoomed = scale_crop_sample(*zoomed, kinds, scale, top, left)
                for is_flipped in (False, True):
                    want = hflip_sample(*zoomed, kinds) if is_flipped else zoomed
                    if _same(want, (image, targets)):
                        return scale, top, left, is_flipped
    raise AssertionError("the augmented sample is no scale-crop and flip of the plain one")


def _same(first, second):
    if not torch.allclose(first[0], second[0], atol=1e-6):
        return False
    first_targets, second_targets = first[1], second[1]
    if set(first_targets) != set(second_targets):
        return False
    for task, target in first_targets.items():
        other = second_targets[task]
        if task == "human_parts" and (other == IGNORE_INDEX).all():
            other = torch.zeros_like(other)  # the all-background rule applies after transforms
            if not (target == 0).all():
                return False
            continue
        if target.dtype != other.dtype or not torch.allclose(target.float(), other.float()):
            return False
    return True


def raw_image(image, mean, std):
    """Undo the normalization of a [3, H, W] image."""
    return image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
