"""Pretreatment numbers on hand-built frames."""

import numpy as np
import pytest

from lstc_gait.data.pretreat import center_crop_width, centre_columns, pretreat_frame


def test_empty_threshold_matches_opengait():
    img = np.zeros((240, 320), np.uint8)
    img[100:140, 100:101] = 250  # sum 40 * 250 = 10000: still "nearly empty"
    assert pretreat_frame(img) is None
    img[100, 101] = 1  # sum 10001: kept
    assert pretreat_frame(img) is not None


def test_crop_resize_and_centre_on_a_box():
    # A 128-row x 32-column block: rows crop to the block, height 128 -> 64 halves the width
    # (320 -> 160 columns, block 16 wide), the median column is the block's middle.
    img = np.zeros((240, 320), np.uint8)
    img[50:178, 200:232] = 255
    out = pretreat_frame(img)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    cols = np.flatnonzero(out.sum(axis=0) > 64 * 128)  # columns at least half full
    assert cols.min() == 24 and cols.max() == 39  # 16 columns, centred: [32 - 8, 32 + 8)
    assert (out[:, 26:38] == 255).all()  # block interior untouched by the resize
    assert (out[:, :20] == 0).all() and (out[:, 44:] == 0).all()
    # rows: the block fills the full height after the crop
    assert (out[0, 26:38] == 255).all() and (out[63, 26:38] == 255).all()


def test_centre_is_median_of_mass_not_bbox_middle():
    # A tall bar plus a long thin arm to the right: the bounding box middle is far right of the
    # median column of the mass, which stays on the bar.
    img = np.zeros((64, 400), np.uint8)
    img[:, 100:110] = 255  # bar: 640 pixels
    img[30:32, 110:300] = 255  # arm: 380 pixels
    out = pretreat_frame(img)
    bar_cols = np.flatnonzero(out[0] == 255)  # top row holds only the bar
    # No resize (height already 64). Mass: bar 10 x 64 = 640 px, arm 190 x 2 = 380 px; half = 510.
    # The running sum passes 510 at column 107 (8 x 64 = 512), so the window is [75, 139) and the
    # bar (100..109) lands on 25..34. The bounding-box middle (200) would have missed the bar.
    assert bar_cols.tolist() == list(range(25, 35))


def test_pad_when_person_at_image_border():
    img = np.zeros((64, 100), np.uint8)
    img[:, 0:6] = 255  # person touching the left edge: left of the window is zero padding
    out = pretreat_frame(img)
    cols = np.flatnonzero(out[10])
    assert cols.tolist() == list(range(29, 35))


def test_center_crop_width():
    x = np.arange(64)[None, None, :].repeat(2, 1)
    y = center_crop_width(x, 44)
    assert y.shape[-1] == 44 and y[0, 0, 0] == 10 and y[0, 0, -1] == 53
    with pytest.raises(ValueError):
        center_crop_width(x, 70)


def test_centre_columns_pads_a_narrow_frame_symmetrically():
    frame = np.zeros((64, 44), np.uint8)
    frame[:, 20:24] = 255  # mass centred on the 44-wide frame's middle
    out = centre_columns(frame, 64)
    assert out.shape == (64, 64)
    assert np.array_equal(center_crop_width(out, 44), frame)  # the datasets' central 44 gives it back
    assert np.array_equal(centre_columns(np.zeros((64, 44), np.uint8)), np.zeros((64, 64), np.uint8))
