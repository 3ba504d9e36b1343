"""The one mask reader (lstc_gait.data.frames): each rule on small hand-made inputs."""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from mask_walk import binary_iou, walk_frame
from PIL import Image

from lstc_gait.data import open_cache, prepare_cache
from lstc_gait.data.frames import (
    FrameError,
    check_mask_threshold,
    read_mask,
    read_masks,
    read_pickle_sequence,
    to_mask,
)
from lstc_gait.data.pretreat import center_crop_width, pretreat_frame


def _box(h: int = 16, w: int = 12) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:12, 3:9] = 255
    return m


# ------------------------------------------------------------------------------ alpha
def test_varying_alpha_is_the_mask_whatever_the_colour(tmp_path):
    m = _box()
    for rgb in (0, 255, 90):  # black, white or grey underneath: only the alpha counts
        arr = np.full((*m.shape, 4), rgb, np.uint8)
        arr[..., 3] = m
        Image.fromarray(arr, "RGBA").save(tmp_path / f"rgba{rgb}.png")
        assert np.array_equal(read_mask(tmp_path / f"rgba{rgb}.png"), m)
    la = np.stack([np.full_like(m, 255), m], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_mask(tmp_path / "la.png"), m)
    # soft alpha is binarised too: 127 -> background, 128 -> foreground
    arr = np.zeros((*m.shape, 4), np.uint8)
    arr[..., 3] = np.where(m > 0, 128, 127)
    arr[0, 0, 3] = 0
    assert np.array_equal(to_mask(arr), m)


def test_constant_alpha_reads_the_grey_values(tmp_path):
    m = _box()
    for alpha in (255, 0):  # fully opaque, or (oddly) fully transparent everywhere: alpha says nothing
        arr = np.stack([m, m, m, np.full_like(m, alpha)], -1)
        Image.fromarray(arr, "RGBA").save(tmp_path / f"rgba{alpha}.png")
        assert np.array_equal(read_mask(tmp_path / f"rgba{alpha}.png"), m)
        Image.fromarray(np.stack([m, np.full_like(m, alpha)], -1), "LA").save(tmp_path / f"la{alpha}.png")
        assert np.array_equal(read_mask(tmp_path / f"la{alpha}.png"), m)


def test_colour_masks_use_the_brightest_channel():
    m = _box()
    for channel in range(3):  # a pure red, green or blue figure on black is a figure
        rgb = np.zeros((*m.shape, 3), np.uint8)
        rgb[..., channel] = m
        assert np.array_equal(to_mask(Image.fromarray(rgb)), m)


# ------------------------------------------------------------------------------ ranges
def test_16bit_masks_and_their_threshold(tmp_path):
    m = _box()
    for level, expect in ((65535, m), (32768, m), (32767, np.zeros_like(m))):
        Image.fromarray((m > 0).astype(np.uint16) * np.uint16(level)).save(tmp_path / "m16.png")
        with Image.open(tmp_path / "m16.png") as im:
            assert im.mode == "I;16"
        assert np.array_equal(read_mask(tmp_path / "m16.png"), expect), level
    big_endian = Image.frombytes("I;16B", m.shape[::-1], ((m > 0).astype(np.uint16) * 40000).astype(">u2").tobytes())
    big_endian.save(tmp_path / "m16b.tif")
    assert np.array_equal(read_mask(tmp_path / "m16b.tif"), m)
    Image.fromarray((m > 0).astype(np.int32) * 50000).save(tmp_path / "m32.tif")  # mode I, 16-bit values
    assert np.array_equal(read_mask(tmp_path / "m32.tif"), m)
    Image.fromarray((m > 0).astype(np.int32) * 70000).save(tmp_path / "big.tif")
    with pytest.raises(FrameError, match="big.tif.*not a 16-bit mask"):
        read_mask(tmp_path / "big.tif")


def test_threshold_is_a_share_of_the_encoding_maximum():
    grey = np.array([[0, 63, 64, 127, 128, 255]], np.uint8)
    assert to_mask(grey).tolist() == [[0, 0, 0, 0, 255, 255]]  # default 0.5: 128 of 255
    assert to_mask(grey, 0.25).tolist() == [[0, 0, 255, 255, 255, 255]]  # ceil(63.75) = 64
    g16 = np.array([[0, 16383, 16384, 32767, 32768, 65535]], np.uint16)
    assert to_mask(g16).tolist() == [[0, 0, 0, 0, 255, 255]]
    assert to_mask(g16, 0.25).tolist() == [[0, 0, 255, 255, 255, 255]]
    floats = np.array([[0.0, 0.49, 0.5, 1.0]], np.float32)
    assert to_mask(floats).tolist() == [[0, 0, 255, 255]]


def test_zero_one_images_are_scaled_first(tmp_path):
    m = _box()
    for dtype in (np.uint8, np.uint16):
        Image.fromarray((m > 0).astype(dtype)).save(tmp_path / "01.png")
        assert np.array_equal(read_mask(tmp_path / "01.png"), m), dtype
    assert np.array_equal(to_mask((m > 0).astype(np.int64)), m)
    assert np.array_equal(to_mask(m > 0), m)  # bool arrays


def test_zero_one_rule_is_decided_per_sequence(tmp_path):
    m = _box()
    noise = (np.random.default_rng(0).random(m.shape) < 0.3).astype(np.uint8)  # faint 0/1 background
    Image.fromarray(m).save(tmp_path / "a.png")
    Image.fromarray(noise).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"broken")
    a, b, c = read_masks([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"])
    assert np.array_equal(a, m)
    assert not b.any()  # a 0..255 sequence: the frame's 1s are noise, not a figure
    assert isinstance(c, FrameError) and c.cause == "unreadable image"
    Image.fromarray((m > 0).astype(np.uint8)).save(tmp_path / "d.png")
    d, b = read_masks([tmp_path / "d.png", tmp_path / "b.png"])  # an all-0/1 sequence: scaled
    assert np.array_equal(d, m) and np.array_equal(b, noise * 255)
    assert np.array_equal(read_mask(tmp_path / "b.png"), noise * 255)  # a lone file: 0/1 mask


def test_soft_mask_is_binarised_before_the_crop(tmp_path):
    clean = walk_frame(3)
    soft = np.maximum(np.asarray(Image.fromarray(clean).resize((48, 60)).resize(clean.shape[::-1])), 2)
    soft = soft.astype(np.uint8)  # blurry edges and a faint background everywhere
    Image.fromarray(soft).save(tmp_path / "soft.png")
    mask = read_mask(tmp_path / "soft.png")
    assert set(np.unique(mask)) == {0, 255}
    out = pretreat_frame(mask)
    rows = np.flatnonzero(out.any(axis=1))
    assert rows[0] == 0 and rows[-1] == 63  # the crop found the figure, not the faint background
    assert binary_iou(out, pretreat_frame(clean)) >= 0.9


def test_jpeg_ringing_does_not_widen_the_crop(tmp_path):
    clean = walk_frame(5)
    Image.fromarray(clean).save(tmp_path / "f.jpg", quality=50)
    with Image.open(tmp_path / "f.jpg") as im:
        raw = np.asarray(im)
    assert len(np.unique(raw)) > 2  # the decoded JPEG really rings
    mask = read_mask(tmp_path / "f.jpg")
    assert set(np.unique(mask)) <= {0, 255}
    assert binary_iou(mask, clean) >= 0.95
    assert binary_iou(pretreat_frame(mask), pretreat_frame(clean)) >= 0.9


# ------------------------------------------------------------------------------ errors
def test_refused_modes_and_corrupt_files(tmp_path):
    Image.new("CMYK", (8, 8)).save(tmp_path / "cmyk.tif")
    with pytest.raises(FrameError, match="cmyk.tif.*unsupported image mode 'CMYK'") as info:
        read_mask(tmp_path / "cmyk.tif")
    assert info.value.cause == "unsupported image mode CMYK"
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(FrameError, match="bad.png.*corrupt") as info:
        read_mask(tmp_path / "bad.png")
    assert info.value.cause == "unreadable image"
    with pytest.raises(FrameError, match="shape"):
        to_mask(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(FrameError, match="NaN"):
        to_mask(np.full((4, 4), np.nan, np.float32))


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, math.nan, "half", None])
def test_mask_threshold_validation_names_the_key(bad):
    with pytest.raises(ValueError, match="dataset.mask_threshold"):
        check_mask_threshold(bad, "dataset.mask_threshold")
    assert check_mask_threshold(0.3) == 0.3


def test_dataset_config_key_is_validated_and_in_the_yamls():
    from conftest import compose

    from lstc_gait.data.config import dataset_config_from

    for name in ("casia_b", "flat", "ou_mvlp"):
        cfg = compose([f"dataset={name}", "dataset.root=/x"])
        assert cfg.dataset.mask_threshold == 0.5
    cfg = compose(["dataset=flat", "dataset.root=/x", "dataset.mask_threshold=0.25"])
    assert dataset_config_from(cfg.dataset).mask_threshold == 0.25
    with pytest.raises(ValueError, match=r"dataset\.mask_threshold=1\.5"):
        dataset_config_from({"name": "flat", "root": "/x", "mask_threshold": 1.5})
    with pytest.raises(ValueError, match=r"dataset\.mask_threshold=0\.3 would do nothing with layout=opengait"):
        dataset_config_from(compose(["dataset=opengait", "dataset.root=/x", "dataset.mask_threshold=0.3"]).dataset)


def test_mask_threshold_reaches_the_cache(tmp_path):
    from lstc_gait.data.cache import read_meta
    from lstc_gait.data.config import resolve_cache

    d = tmp_path / "raw" / "001" / "walk"
    d.mkdir(parents=True)
    for t in range(3):  # a grey figure at 100 of 255: background at 0.5, foreground at 0.25
        Image.fromarray((walk_frame(t) > 0).astype(np.uint8) * 100).save(d / f"{t}.png")
    cfg = {"name": "flat", "layout": "flat", "root": str(tmp_path / "raw"), "workers": 0, "min_frames": 1,
           "mask_threshold": 0.25}
    path = resolve_cache(cfg, tmp_path / "data", progress=False)
    assert read_meta(path)["mask_threshold"] == 0.25 and open_cache(path).total_frames == 3
    with pytest.raises(ValueError, match="no usable sequence"):  # another threshold: prepared again
        resolve_cache({**cfg, "mask_threshold": 0.5}, tmp_path / "data", progress=False)


# ------------------------------------------------------------------------------ pickles
def _pickle(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(arr, fh)
    return path


def _pretreated(n: int = 4) -> np.ndarray:
    return np.stack([pretreat_frame(walk_frame(t)) for t in range(n)])


def test_pickle_value_encodings_mean_the_same_silhouette(tmp_path):
    u8 = _pretreated()
    binary = (u8 >= 128).astype(np.uint8)
    f = read_pickle_sequence(_pickle(tmp_path / "float.pkl", u8.astype(np.float32) / 255.0))
    assert np.array_equal(f, u8)  # float [0, 1] is the 0..255 pickle scaled: read back exactly
    assert np.array_equal(read_pickle_sequence(_pickle(tmp_path / "u8.pkl", u8)), u8)  # kept as is
    zero_one = read_pickle_sequence(_pickle(tmp_path / "01.pkl", binary))
    assert np.array_equal(zero_one, binary * 255)
    assert np.array_equal(read_pickle_sequence(_pickle(tmp_path / "bool.pkl", binary.astype(bool))), binary * 255)
    assert all(binary_iou(a, b) >= 0.99 for a, b in zip(zero_one, u8))


def test_pickle_64x44_is_centred_into_64x64(tmp_path):
    u8 = _pretreated()
    narrow = np.ascontiguousarray(center_crop_width(u8, 44))  # Gait3D-sils-64-44 style
    out = read_pickle_sequence(_pickle(tmp_path / "n.pkl", narrow))
    assert out.shape == (4, 64, 64) and out.dtype == np.uint8
    assert np.array_equal(center_crop_width(out, 44), narrow)  # the datasets' central 44 returns it
    # off-centre figure: moved so the median column of its mass is column 32, as the pretreatment does
    off = np.zeros((2, 64, 44), np.uint8)
    off[:, :, 34:40] = 255
    moved = read_pickle_sequence(_pickle(tmp_path / "off.pkl", off))
    assert np.flatnonzero(moved[0, 0]).tolist() == list(range(29, 35))


@pytest.mark.parametrize("shape", [(3, 64, 32), (3, 32, 32), (64, 64), (3, 64, 64, 1), (3, 44, 64)])
def test_pickle_of_another_shape_is_refused_naming_shape_and_file(tmp_path, shape):
    path = _pickle(tmp_path / "odd_name.pkl", np.zeros(shape, np.uint8))
    with pytest.raises(FrameError, match=r"odd_name\.pkl.*" + re_shape(shape)) as info:
        read_pickle_sequence(path)
    assert info.value.cause == "bad pickle shape"


def re_shape(shape) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_pickle_values_outside_a_mask_encoding_are_refused(tmp_path):
    with pytest.raises(FrameError, match="values up to 300"):
        read_pickle_sequence(_pickle(tmp_path / "a.pkl", np.full((2, 64, 64), 300, np.int32)))
    with pytest.raises(FrameError, match="from -1"):
        read_pickle_sequence(_pickle(tmp_path / "b.pkl", np.full((2, 64, 64), -1.0, np.float32)))


def test_pickles_in_three_encodings_and_64x44_through_prepare(tmp_path):
    u8 = _pretreated(6)
    root = tmp_path / "og"
    variants = {
        "001": u8,  # uint8 0..255
        "002": u8.astype(np.float32) / 255.0,  # float [0, 1]
        "003": (u8 >= 128).astype(np.uint8),  # uint8 0/1
        "004": np.ascontiguousarray(center_crop_width(u8, 44)),  # (T, 64, 44)
        "005": np.zeros((6, 48, 48), np.uint8),  # refused
    }
    for subject, arr in variants.items():
        _pickle(root / subject / "nm-01" / "090" / "090.pkl", arr)
    summary = prepare_cache(root, "opengait", tmp_path / "c", workers=0, min_frames=1, progress=False)
    cache = open_cache(tmp_path / "c")
    assert cache.index.subject.tolist() == ["001", "002", "003", "004"]
    ref = cache.frames(0)
    for i in range(1, 4):
        assert all(binary_iou(a, b) >= 0.9 for a, b in zip(cache.frames(i), ref)), i
    report = pd.read_csv(summary.report_path, dtype=str, keep_default_na=False)
    (reason,) = report[report.level == "sequence"].reason
    assert "005" in reason and "(6, 48, 48)" in reason
    assert "bad pickle shape" in str(summary)
