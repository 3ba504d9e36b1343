"""Splits, frame sampling, datasets and padded collate."""

import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lstc_gait.data import (
    AugmentConfig,
    TestSequenceDataset,
    TrainSequenceDataset,
    collate_padded,
    sample_frame_indices,
    split_subjects,
    write_cache_from_arrays,
)
from lstc_gait.data.config import DatasetConfig, dataset_config_from


def _numbered(n: int, h: int = 64, w: int = 64) -> np.ndarray:
    """Frame t has the value t in every pixel (so a clip shows which frames were picked)."""
    arr = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], h, 1).repeat(w, 2)
    return arr


@pytest.fixture()
def cache(tmp_path):
    lengths = [40, 12, 3, 30]
    records = [({"subject": f"{i:03d}", "type": "nm-01", "view": "090", "seq": "nm-01", "source": f"s{i}"},
                _numbered(n)) for i, n in enumerate(lengths)]
    return write_cache_from_arrays(tmp_path / "c", records)


# ---------------------------------------------------------------------------------- splits
def test_casia_b_split_real_and_scaled():
    subjects = [f"{i:03d}" for i in range(1, 125)]
    train, test = split_subjects(subjects, "casia_b")
    assert train == subjects[:74] and test == subjects[74:]
    # synthetic-size dataset: round(24 * 74 / 124) = 14 train
    small = [f"{i:03d}" for i in range(1, 25)]
    train, test = split_subjects(reversed(small), "casia_b")
    assert train == small[:14] and test == small[14:]


def test_ou_mvlp_split():
    train, test = split_subjects(["00001", "00002", "00003", "00010"], "ou_mvlp")
    assert train == ["00001", "00003"] and test == ["00002", "00010"]
    with pytest.raises(ValueError, match="numeric"):
        split_subjects(["a", "b"], "ou_mvlp")


def test_partition_split(tmp_path):
    part = tmp_path / "p.json"
    part.write_text(json.dumps({"TRAIN_SET": ["001", "002"], "TEST_SET": [3, "009"]}))
    train, test = split_subjects(["001", "002", "003", "004"], "partition", partition_file=part)
    assert train == ["001", "002"] and test == ["003"]  # 3 matches 003 across zero padding
    with pytest.raises(ValueError, match="partition_file"):
        split_subjects(["001", "002"], "partition")
    part.write_text(json.dumps({"TRAIN_SET": ["001"], "TEST_SET": ["001"]}))
    with pytest.raises(ValueError, match="both"):
        split_subjects(["001", "002"], "partition", partition_file=part)


def test_random_split_seeded_and_disjoint():
    subjects = [f"p{i}" for i in range(20)]
    a = split_subjects(subjects, "random", test_fraction=0.25, seed=3)
    assert a == split_subjects(subjects, "random", test_fraction=0.25, seed=3)
    assert a != split_subjects(subjects, "random", test_fraction=0.25, seed=4)
    train, test = a
    assert len(test) == 5 and not set(train) & set(test) and sorted(train + test) == sorted(subjects)
    with pytest.raises(ValueError, match="unknown split"):
        split_subjects(subjects, "nope")


# -------------------------------------------------------------------------------- sampling
def test_ordered_window_and_repeat_when_short():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = sample_frame_indices(40, 30, "ordered", rng)
        assert np.array_equal(np.diff(idx), np.ones(29)) and 0 <= idx[0] <= 10
    idx = sample_frame_indices(3, 8, "ordered", np.random.default_rng(1))
    assert len(idx) == 8 and set(idx.tolist()) == {0, 1, 2}
    assert all((b - a) % 3 == 1 for a, b in zip(idx[:-1], idx[1:]))  # cyclic walk through the sequence


def test_random_pick_distinct_then_repeats():
    idx = sample_frame_indices(40, 30, "random", np.random.default_rng(0))
    assert len(set(idx.tolist())) == 30 and not np.array_equal(idx, np.sort(idx))
    idx = sample_frame_indices(12, 30, "random", np.random.default_rng(0))
    counts = np.bincount(idx, minlength=12)
    assert counts.min() >= 2 and counts.max() <= 3  # every frame used before any repeats again


def test_sorted_pick_is_the_random_pick_in_time_order():
    for n, t in ((40, 16), (30, 30), (12, 30), (1, 4)):
        idx = sample_frame_indices(n, t, "sorted", np.random.default_rng(3))
        same = sample_frame_indices(n, t, "random", np.random.default_rng(3))
        assert np.array_equal(idx, np.sort(same)) and len(idx) == t
    idx = sample_frame_indices(30, 16, "sorted", np.random.default_rng(0))
    assert np.all(np.diff(idx) > 0) and idx[-1] - idx[0] > 15  # distinct, ordered, spread past one window
    with pytest.raises(ValueError, match="sorted"):
        sample_frame_indices(30, 16, "sideways", np.random.default_rng(0))


# -------------------------------------------------------------------------------- datasets
def test_train_item_is_pure_function_of_key(cache):
    ds = TrainSequenceDataset(cache, rows=[0, 1, 2, 3], labels=[5, 6, 7, 8], num_frames=30)
    x, y = ds[(0, 1234)]
    assert x.dtype == torch.uint8 and x.shape == (30, 64, 44) and y == 5
    assert torch.equal(x, ds[(0, 1234)][0])
    starts = {int(ds[(0, s)][0][0, 0, 0]) for s in range(30)}
    assert len(starts) > 3  # the window start varies with the seed
    frames = x[:, 0, 0].numpy()
    assert np.array_equal(np.diff(frames), np.ones(29))  # ordered, contiguous
    short, _ = ds[(2, 7)]  # 3 frames -> repeated to 30
    assert short.shape == (30, 64, 44) and set(short[:, 0, 0].tolist()) == {0, 1, 2}
    # same keys -> same batches whatever the number of workers
    keys = [(i % 4, 100 + i) for i in range(8)]
    a = torch.stack([x for x, _ in DataLoader(ds, batch_size=None, sampler=keys, num_workers=0)])
    b = torch.stack([x for x, _ in DataLoader(ds, batch_size=None, sampler=keys, num_workers=2)])
    assert torch.equal(a, b)


def test_width_crop_is_central(tmp_path):
    arr = np.repeat(np.arange(64, dtype=np.uint8)[None, None, :], 64, 1).repeat(5, 0)
    c = write_cache_from_arrays(tmp_path / "w", [({"subject": "1", "type": "a", "view": "0", "seq": "a",
                                                   "source": "x"}, arr)])
    x, _ = TrainSequenceDataset(c, [0], [0], num_frames=2)[(0, 0)]
    assert x[0, 0, 0] == 10 and x[0, 0, -1] == 53


def test_augment_off_by_default_and_seeded(cache):
    plain = TrainSequenceDataset(cache, [0], [0], num_frames=30)
    assert plain.augment is None
    aug = TrainSequenceDataset(cache, [0], [0], num_frames=30, augment={"flip_prob": 1.0})
    x0, x1 = plain[(0, 9)][0], aug[(0, 9)][0]
    assert torch.equal(x1, x0.flip(-1))  # frame choice unchanged, then mirrored
    cfg = AugmentConfig(erase_prob=1.0, dilate_prob=0.5, frame_dropout=0.3)
    ds = TrainSequenceDataset(cache, [0], [0], num_frames=30, augment=cfg)
    assert torch.equal(ds[(0, 5)][0], ds[(0, 5)][0])
    assert (ds[(0, 5)][0] == 0).any()  # the erased rectangle
    with pytest.raises(ValueError):
        AugmentConfig(flip_prob=2.0)


def test_test_dataset_and_padded_collate(cache):
    ds = TestSequenceDataset(cache, rows=[1, 2, 0], width=44)
    x, pos = ds[1]
    assert x.shape == (3, 64, 44) and pos == 1
    batch = [ds[i] for i in range(3)]
    xs, lengths, positions = collate_padded(batch)
    assert xs.shape == (3, 40, 64, 44) and xs.dtype == torch.uint8
    assert lengths.tolist() == [12, 3, 40] and positions.tolist() == [0, 1, 2]
    assert lengths.dtype == torch.int64 and positions.dtype == torch.int64
    assert torch.equal(xs[1, :3], batch[1][0]) and (xs[1, 3:] == 0).all()
    assert xs[2, 39, 0, 0] == 39
    capped = TestSequenceDataset(cache, rows=[0], max_frames=16)
    assert capped[0][0].shape == (16, 64, 44)


# ----------------------------------------------------------------------------------- config
def test_dataset_config_rejects_bad_keys_and_values():
    cfg = dataset_config_from({"name": "x", "layout": "flat", "root": "/data", "augment": {"flip_prob": 0.5}})
    assert isinstance(cfg, DatasetConfig) and cfg.all_roots() == ["/data"] and cfg.augment.flip_prob == 0.5
    with pytest.raises(ValueError, match="lyout"):
        dataset_config_from({"lyout": "flat", "root": "/d"})
    with pytest.raises(ValueError, match="dataset.layout"):
        dataset_config_from({"layout": "weird", "root": "/d"})
    with pytest.raises(ValueError, match="dataset.root"):
        dataset_config_from({"name": "casia_b", "layout": "casia_b"})
    syn = dataset_config_from({"synthetic": {"num_subjects": 6}})
    assert syn.synthetic.num_subjects == 6


def test_cache_pickles_for_spawned_workers(cache):
    clone = pickle.loads(pickle.dumps(cache))
    assert np.array_equal(clone.frames(3), cache.frames(3))


def test_build_datasets_from_config(tmp_path):
    from lstc_gait.data.config import build_datasets

    records = [({"subject": f"{s:03d}", "type": t, "view": "090", "seq": t, "source": f"{s}{t}"}, _numbered(8))
               for s in range(1, 9) for t in ("nm-01", "nm-02")]
    cache = write_cache_from_arrays(tmp_path / "c", records)
    train, test, split = build_datasets(cache, {"name": "x", "root": "/unused", "split": "casia_b",
                                                "num_frames": 4})
    # round(8 * 74 / 124) = 5 training subjects, labels 0..4 in subject order
    assert split.train_subjects == ["001", "002", "003", "004", "005"] and split.num_classes == 5
    assert len(train) == 10 and sorted(set(split.train_labels.tolist())) == [0, 1, 2, 3, 4]
    subjects = cache.index.subject.to_numpy()
    assert all(split.train_subjects[lab] == subjects[r] for r, lab in zip(split.train_rows, split.train_labels))
    assert set(subjects[test.rows]) == {"006", "007", "008"} and len(test) == 6
    assert train[(0, 1)][0].shape == (4, 64, 44)


def test_dilate_and_frame_dropout_by_hand():
    from lstc_gait.data.augment import apply_augment, dilate3x3

    x = np.zeros((1, 5, 5), np.uint8)
    x[0, 2, 2] = 255
    d = dilate3x3(x)
    assert (d[0, 1:4, 1:4] == 255).all() and d.sum() == 9 * 255
    clip = np.arange(6, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    out = apply_augment(clip, AugmentConfig(frame_dropout=0.5), np.random.default_rng(3))
    vals = out[:, 0, 0]
    assert vals[0] == 0 and np.all(np.diff(vals.astype(int)) >= 0)  # a dropped frame repeats its predecessor
    assert set(vals.tolist()) < set(range(6))  # with p=0.5 over 5 frames this seed drops at least one


def test_array_keys_accepted(cache):
    ds = TrainSequenceDataset(cache, [0, 1], [0, 1], num_frames=5)
    assert torch.equal(ds[np.array([1, 42])][0], ds[(1, 42)][0])
    assert torch.equal(ds[torch.tensor([1, 42])][0], ds[(1, 42)][0])
