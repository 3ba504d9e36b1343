"""P x K, multi-view P x K and random samplers: structure, determinism, resume and DDP sharding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lstc_gait.data.samplers import MultiViewPKSampler, PKSampler, RandomSampler

VIEWS3 = ["000", "090", "180"]


def dataset(n_ids: int = 6, per_id: int = 9) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(n_ids), per_id)
    views = np.array([VIEWS3[i % 3] for i in range(n_ids * per_id)])
    return labels, views


def test_pk_batches_hold_p_identities_times_k():
    labels, _ = dataset()
    s = PKSampler(labels, p=3, k=4, seed=1)
    assert len(s) == 2  # 6 identities / p
    batches = list(s.epoch_iter(0))
    for b in batches:
        counts = Counter(int(labels[pos]) for pos, _ in b)
        assert len(counts) == 3 and set(counts.values()) == {4}
        assert len({pos for pos, _ in b}) == 12  # 9 sequences per id >= k: no repeats
    seen = Counter(int(labels[pos]) for b in batches for pos, _ in b)
    assert set(seen) == set(range(6)) and set(seen.values()) == {4}  # every identity once per epoch


def test_pk_repeats_when_an_identity_has_fewer_than_k():
    labels = np.array([0, 0, 1, 1, 1, 1])
    s = PKSampler(labels, p=2, k=4, seed=0)
    (b,) = list(s.epoch_iter(0))
    pos0 = [pos for pos, _ in b if labels[pos] == 0]
    assert len(pos0) == 4 and set(pos0) == {0, 1}


def test_batches_are_a_pure_function_of_seed_and_epoch():
    labels, views = dataset()
    for cls in (RandomSampler, PKSampler, MultiViewPKSampler):
        a = cls(labels, 3, 2, seed=5, views=views)
        b = cls(labels, 3, 2, seed=5, views=views)
        assert np.array_equal(a.global_batches(3), b.global_batches(3))
        assert not np.array_equal(a.global_batches(3), a.global_batches(4))
        assert not np.array_equal(a.global_batches(3), cls(labels, 3, 2, seed=6, views=views).global_batches(3))


def test_resume_mid_epoch_and_run_across_epochs():
    labels, _ = dataset()
    s = PKSampler(labels, p=3, k=2, seed=0)
    g0, g1 = s.global_batches(0), s.global_batches(1)
    s.set_epoch(0, start=1)
    it = iter(s)
    first, second = next(it), next(it)
    assert first == [tuple(map(int, r)) for r in g0[1]]
    assert second == [tuple(map(int, r)) for r in g1[0]]  # epoch 0 has 2 batches: on to epoch 1


def test_multiview_pk_spreads_k_over_views():
    labels, views = dataset()
    s = MultiViewPKSampler(labels, p=2, k=3, seed=2, views=views)
    for b in s.epoch_iter(0):
        for ident in {int(labels[pos]) for pos, _ in b}:
            vs = [views[pos] for pos, _ in b if labels[pos] == ident]
            assert sorted(vs) == VIEWS3  # 3 views, k = 3: one each
    s6 = MultiViewPKSampler(labels, p=2, k=6, seed=2, views=views)
    for b in s6.epoch_iter(0):
        for ident in {int(labels[pos]) for pos, _ in b}:
            vs = Counter(views[pos] for pos, _ in b if labels[pos] == ident)
            assert set(vs.values()) == {2}  # every view twice before any third time
            assert len({pos for pos, _ in b if labels[pos] == ident}) == 6  # 3 seqs per view: no repeats
    with pytest.raises(ValueError, match="view"):
        MultiViewPKSampler(labels, 2, 3)


def test_random_sampler_no_repeats_within_epoch():
    labels, _ = dataset()
    s = RandomSampler(labels, p=4, k=2, seed=0)
    positions = [pos for b in s.epoch_iter(0) for pos, _ in b]
    assert len(s) == 54 // 8 and len(positions) == len(set(positions))


def test_ddp_shards_partition_the_global_batch():
    labels, views = dataset()
    for cls in (RandomSampler, PKSampler, MultiViewPKSampler):
        shards = [list(cls(labels, 3, 4, seed=3, rank=r, world_size=2, views=views).epoch_iter(0))
                  for r in range(2)]
        glob = cls(labels, 3, 4, seed=3, views=views).global_batches(0)
        for b, batch in enumerate(glob):
            joined = shards[0][b] + shards[1][b]
            assert joined == [tuple(map(int, r)) for r in batch]
            assert len(shards[0][b]) == len(shards[1][b]) == 6


def test_clear_errors():
    labels, _ = dataset()
    with pytest.raises(ValueError, match="not divisible"):
        PKSampler(labels, p=3, k=1, world_size=2)
    with pytest.raises(ValueError, match="sampler.p=8"):
        list(PKSampler(labels, p=8, k=2).epoch_iter(0))
