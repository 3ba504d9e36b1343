"""LSTP and the mean/max baselines: hand-computed values, stripe rule, length masking, limits."""

from __future__ import annotations

import pytest
import torch

from lstc_gait.models import LSTP
from lstc_gait.models.stripes import stripe_bounds

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stripe_rule():
    assert stripe_bounds(64, 8) == tuple((8 * s, 8 * s + 8) for s in range(8))
    assert stripe_bounds(11, 3) == ((0, 3), (3, 6), (6, 11))  # last stripe takes the leftover rows
    assert stripe_bounds(16, 10)[-1] == (9, 16)
    assert stripe_bounds(5, 1) == ((0, 5),)
    with pytest.raises(ValueError, match="num_stripes=6"):
        stripe_bounds(5, 6)


def _toy():
    # N=1, C=2, T=3, H=3, W=2; S=2 -> stripes rows [0,1) and [1,3)
    x = torch.zeros(1, 2, 3, 3, 2)
    x[0, 0, :, 0, :] = torch.tensor([1.0, 3.0, 2.0]).view(3, 1)  # stripe 0, channel 0
    x[0, 1, :, 0, :] = torch.tensor([0.0, 4.0, 1.0]).view(3, 1)  # stripe 0, channel 1
    x[0, 0, :, 1:, 0] = torch.tensor([6.0, 0.0, 2.0]).view(3, 1)  # stripe 1, channel 0, half the columns
    return x


def test_hand_computed_values():
    x = _toy()
    # stripe 0: f(t) = [(1,0), (3,4), (2,1)]; score = [1, 5, sqrt(5)]
    # stripe 1: f(t) = [(3,0), (0,0), (1,0)]; score = [3, 1e-3, 1]
    flat, parts = LSTP(2, "hard", topk=2)(x)
    assert torch.allclose(parts[0, :, 0], torch.tensor([2.5, 2.5]))  # frames t=1, t=2
    assert torch.allclose(parts[0, :, 1], torch.tensor([2.0, 0.0]))  # frames t=0, t=2
    assert torch.allclose(flat[0], torch.tensor([2.5, 2.5, 2.0, 0.0]))  # stripe-major order
    _, top1 = LSTP(2, "hard", topk=1)(x)
    assert torch.allclose(top1[0].T, torch.tensor([[3.0, 4.0], [3.0, 0.0]]))
    _, big_k = LSTP(2, "hard", topk=10)(x)  # min(k, T) frames
    assert torch.allclose(big_k[0, :, 0], torch.tensor([2.0, 5.0 / 3.0]))
    _, mean = LSTP(2, "mean")(x)
    assert torch.allclose(mean[0, :, 1], torch.tensor([4.0 / 3.0, 0.0]))
    _, mx = LSTP(2, "max")(x)
    assert torch.allclose(mx[0, :, 0], torch.tensor([3.0, 4.0]))
    _, soft = LSTP(2, "soft", temperature=2.0)(x)
    w = torch.softmax(torch.tensor([1.0, 5.0, 5.0**0.5]) / 2.0, dim=0)
    want = (torch.tensor([[1.0, 3.0, 2.0], [0.0, 4.0, 1.0]]) * w).sum(dim=1)
    assert torch.allclose(soft[0, :, 0], want)


@pytest.mark.parametrize("mode", ["hard", "soft", "mean", "max", "set"])
def test_padded_batch_equals_each_alone(mode):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 4, 1, 2])
    x = torch.randn(4, 5, 7, 9, 3, generator=g)
    x[:, :, 3:] += 5.0  # padded frames carry large values: any leak shows
    pool = LSTP(3, mode, topk=3, temperature=0.7)
    flat, parts = pool(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone_flat, alone_parts = pool(x[i:i + 1, :, :n])
        assert torch.allclose(flat[i:i + 1], alone_flat, atol=1e-6), (mode, i)
        assert torch.allclose(parts[i:i + 1], alone_parts, atol=1e-6)


def test_full_lengths_equal_no_lengths():
    x = torch.randn(3, 4, 6, 8, 2)
    for mode in ("hard", "soft", "mean", "max", "set"):
        pool = LSTP(4, mode, topk=2)
        assert torch.allclose(pool(x, torch.tensor([6, 6, 6]))[0], pool(x)[0], atol=1e-6)


def test_hard_top1_is_soft_low_temperature_limit():
    x = torch.randn(3, 6, 9, 10, 4, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([9, 5, 3])
    hard = LSTP(5, "hard", topk=1)(x, lengths)[0]
    soft = LSTP(5, "soft", temperature=1e-7)(x, lengths)[0]
    assert torch.allclose(hard, soft, atol=1e-5)
    warm = LSTP(5, "soft", temperature=100.0)(x, lengths)[0]  # high temperature -> temporal mean
    mean = LSTP(5, "mean")(x, lengths)[0]
    assert torch.allclose(warm, mean, atol=1e-3)
    assert not torch.allclose(hard, mean, atol=1e-3)


def test_gradients_flow_and_errors():
    x = torch.randn(2, 3, 4, 8, 2, requires_grad=True)
    LSTP(4, "soft")(x)[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="height 3"):
        LSTP(4, "hard")(torch.randn(1, 2, 3, 3, 2))
    with pytest.raises(ValueError, match="pooling must be one of"):
        LSTP(4, "median")
    with pytest.raises(ValueError, match="topk"):
        LSTP(4, "hard", topk=0)


@pytest.mark.parametrize("height,stripes", [(16, 8), (16, 4), (13, 4)])
def test_channels_last_input_gives_the_same_stripe_features(height, stripes):
    # channels_last_3d with equal stripes takes a separate reduction path
    x = torch.randn(2, 5, 3, height, 7)
    pool = LSTP(stripes, "soft")
    ref = pool.stripe_features(x)
    got = pool.stripe_features(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    for s, (a, b) in enumerate(stripe_bounds(height, stripes)):
        torch.testing.assert_close(got[..., s], x[:, :, :, a:b].mean(dim=(3, 4)), atol=1e-6, rtol=1e-6)


def test_mean_max_spatial_pooling_hand_computed():
    # _toy, stripe 1 (rows 1-2, 2 columns), channel 0: per frame 2 of 4 pixels are 6 / 0 / 2
    # -> mean (3, 0, 1), max (6, 0, 2), mean + max (9, 0, 3); stripe 0 is one row of equal
    # columns, so mean + max = 2 x mean there.
    x = _toy()
    pool = LSTP(2, "max", spatial="mean_max")
    f = pool.stripe_features(x)  # (N, C, T, S)
    torch.testing.assert_close(f[0, 0, :, 1], torch.tensor([9.0, 0.0, 3.0]))
    torch.testing.assert_close(f[0, :, :, 0], 2 * LSTP(2, "max").stripe_features(x)[0, :, :, 0])
    _, parts = pool(x)
    torch.testing.assert_close(parts[0, :, 1], torch.tensor([9.0, 0.0]))
    with pytest.raises(ValueError, match="spatial pooling must be one of"):
        LSTP(2, "hard", spatial="median")


@pytest.mark.parametrize("height,stripes", [(16, 8), (13, 4)])
def test_mean_max_is_the_same_on_both_memory_paths(height, stripes):
    x = torch.randn(2, 5, 3, height, 7, generator=torch.Generator().manual_seed(2))
    pool = LSTP(stripes, "hard", spatial="mean_max")
    got = pool.stripe_features(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, pool.stripe_features(x), atol=1e-6, rtol=1e-6)
    for s, (a, b) in enumerate(stripe_bounds(height, stripes)):
        region = x[:, :, :, a:b]
        torch.testing.assert_close(got[..., s], region.mean(dim=(3, 4)) + region.amax(dim=(3, 4)),
                                   atol=1e-6, rtol=1e-6)


def test_set_pooling_takes_the_pixel_max_over_frames_before_the_stripe():
    # _toy, stripe 1 channel 0: the lit pixels are the same two in every frame (values 6, 0, 2), so the
    # per-pixel max over frames is 6 there and 0 elsewhere: mean 3, mean + max 9. Per-frame pooling
    # then max over frames ("max") gives the same here; a pixel lit in different frames tells them apart.
    x = _toy()
    _, parts = LSTP(2, "set")(x)
    torch.testing.assert_close(parts[0, :, 1], torch.tensor([3.0, 0.0]))
    _, parts = LSTP(2, "set", spatial="mean_max")(x)
    torch.testing.assert_close(parts[0, :, 1], torch.tensor([9.0, 0.0]))
    y = torch.zeros(1, 1, 2, 1, 2)
    y[0, 0, 0, 0, 0] = 1.0  # frame 0 lights column 0, frame 1 column 1
    y[0, 0, 1, 0, 1] = 1.0
    assert LSTP(1, "set")(y)[1].item() == 1.0  # envelope: both columns lit
    assert LSTP(1, "max")(y)[1].item() == 0.5  # each frame alone: half the stripe
    with pytest.raises(ValueError, match="forward"):
        LSTP(2, "set").pool_time(torch.zeros(1, 2, 3, 2))
