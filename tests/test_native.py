"""The run-time compiled C kernels (lstc_gait.models.native) against the library math they replace.

Every kernel is checked for values and gradients against plain PyTorch in float64, for channel
counts on the blocked (multiple of 8) and the generic path; the whole model is checked with the
kernels against the same model with the kernels switched off.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstc_gait.models import LSTCBackbone
from lstc_gait.models import blocks as blocks_module
from lstc_gait.models.bn_relu import batch_norm_relu_concat
from lstc_gait.models.native import (
    build,
    load_kernels,
    native_max_pool_hw2,
    native_stem_conv3d,
    native_stripe_depthwise_conv3d,
    pointwise_fuse,
    stem_forward,
)
from lstc_gait.models.stripes import stripe_bounds

CL = torch.channels_last_3d
pytestmark = pytest.mark.skipif(load_kernels() is None, reason="no C compiler: the native kernels are not built")


@pytest.fixture
def kernels_off(monkeypatch):
    """The models' PyTorch formulation: load_kernels() answers None."""
    monkeypatch.setattr(build, "_loaded", {"lib": None})


def stripe_reference(x: torch.Tensor, w: torch.Tensor, stripes: int) -> torch.Tensor:
    """Per-stripe 'same' depthwise conv, written as plainly as possible."""
    pad = tuple(k // 2 for k in w.shape[2:])
    parts = [F.conv3d(x[:, :, :, a:b], w, padding=pad, groups=x.shape[1])
             for a, b in stripe_bounds(x.shape[3], stripes)]
    return torch.cat(parts, dim=3)


@pytest.mark.parametrize("shape,kernel,stripes", [
    ((2, 16, 5, 13, 7), (3, 7, 3), 3),   # blocked channels, taller last stripe
    ((2, 16, 3, 8, 22), (3, 7, 3), 4),   # wide rows: the 8-column register blocks of kW == 3
    ((2, 8, 4, 16, 9), (3, 5, 3), 8),    # blocked, 2-row stripes (kernel taller than a stripe)
    ((3, 5, 4, 16, 6), (3, 5, 3), 8),    # generic channel loop
    ((2, 3, 6, 9, 5), (1, 3, 5), 1),     # one stripe, flat in time
    ((1, 24, 3, 10, 4), (5, 3, 1), 4),
])
def test_stripe_depthwise_matches_per_stripe_convolution(shape, kernel, stripes):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    w = torch.randn(shape[1], 1, *kernel, generator=gen, dtype=torch.float64)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = stripe_reference(xr, wr, stripes)
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref.backward(g)
    xn, wn = x.float().requires_grad_(), w.float().requires_grad_()
    out = native_stripe_depthwise_conv3d(xn.contiguous(memory_format=CL), wn, stripes)
    out.backward(g.float())
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(xn.grad.double(), xr.grad, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(wn.grad.double(), wr.grad, atol=1e-4, rtol=1e-5)


def test_nothing_crosses_a_stripe_in_the_kernel():
    x = torch.randn(1, 8, 3, 12, 5)
    w = torch.randn(8, 1, 3, 7, 3)
    base = native_stripe_depthwise_conv3d(x, w, 3)
    bumped = x.clone()
    bumped[:, :, :, 5] += 10.0  # a row of stripe 1 (rows 4..7)
    diff = (native_stripe_depthwise_conv3d(bumped, w, 3) - base).abs().amax(dim=(0, 1, 2, 4))
    assert diff[4:8].min() > 0 and diff[:4].max() == 0 and diff[8:].max() == 0


@pytest.mark.parametrize("channels,kernel", [(16, (3, 3, 3)), (5, (3, 5, 3)), (8, (1, 3, 5))])
def test_stem_conv_matches_library(channels, kernel):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 5, 9, 7, generator=gen, dtype=torch.float64)
    w = torch.randn(channels, 1, *kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(channels, generator=gen, dtype=torch.float64)
    pad = tuple(k // 2 for k in kernel)
    wr = w.clone().requires_grad_()
    ref = F.conv3d(x, wr, padding=pad)
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref.backward(g)
    wn = w.float().requires_grad_()
    out = native_stem_conv3d(x.float(), wn)
    out.backward(g.float())
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wn.grad.double(), wr.grad, atol=1e-4, rtol=1e-5)
    fused = stem_forward(x.float(), w.float(), b.float(), relu=True)
    torch.testing.assert_close(fused.double(), F.relu(F.conv3d(x, w, b, padding=pad)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mean_shift", [0.0, 50.0])  # 50: |mean| >> std, where E[x^2] - mean^2 cancels
def test_batch_norm_relu_concat_matches_library(mean_shift):
    gen = torch.Generator().manual_seed(2)
    xs = [(torch.randn(3, c, 4, 5, 6, generator=gen) + mean_shift).contiguous(memory_format=CL)
          for c in (8, 5)]
    ready = torch.randn(3, 3, 4, 5, 6, generator=gen).contiguous(memory_format=CL)
    bns = [nn.BatchNorm3d(c) for c in (8, 5)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.5, 0.5, generator=gen)
    refs = copy.deepcopy(bns)
    xa = [x.clone().requires_grad_() for x in xs]
    xb = [x.clone().requires_grad_() for x in xs]
    ra, rb = ready.clone().requires_grad_(), ready.clone().requires_grad_()
    out = batch_norm_relu_concat([(bns[0], xa[0]), ra, (bns[1], xa[1])])
    ref = torch.cat([F.relu(refs[0](xb[0])), rb, F.relu(refs[1](xb[1]))], dim=1)
    g = torch.randn(ref.shape, generator=gen)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    # inputs near 50 carry float32 rounding of ~4e-6 per operation (ulp(50)), hence atol 1e-4
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    for a, b in zip(xa + [ra], xb + [rb], strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=2e-5, rtol=1e-4)
    for a, b in zip(bns, refs, strict=True):
        torch.testing.assert_close(a.weight.grad, b.weight.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.bias.grad, b.bias.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.running_mean, b.running_mean, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(a.running_var, b.running_var, atol=1e-4, rtol=1e-5)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1


@pytest.mark.parametrize("shape", [(2, 8, 3, 6, 8), (1, 5, 2, 7, 9), (2, 16, 3, 4, 5)])
def test_max_pool_matches_library_with_ties_and_nan(shape):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen).contiguous(memory_format=CL)
    x[0, 0, 0, 0, 0] = x[0, 0, 0, 0, 1]      # a tie inside a window: the first one wins
    x[0, 1, 0, 2, 2] = float("nan")           # NaN propagates
    x[:, :, 1] = 0.0                          # whole frames of ties, as after a ReLU
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = F.max_pool3d(a, (1, 2, 2))
    out = native_max_pool_hw2(b)
    g = torch.randn(ref.shape, generator=gen)
    ref.backward(g)
    out.backward(g)
    assert torch.equal(ref.isnan(), out.isnan())
    assert torch.equal(ref.nan_to_num(), out.nan_to_num())
    assert torch.equal(a.grad, b.grad)


def test_pointwise_fuse_equals_concat_and_convs():
    gen = torch.Generator().manual_seed(4)
    t = torch.rand(2, 8, 3, 4, 5, generator=gen).contiguous(memory_format=CL)
    s = torch.rand(2, 8, 3, 4, 5, generator=gen).contiguous(memory_format=CL)
    d = torch.randn(2, 16, 3, 4, 5, generator=gen).contiguous(memory_format=CL)
    wj, bj = torch.randn(10, 16, 1, 1, 1, generator=gen), torch.randn(10, generator=gen)
    wf, bf = torch.randn(16, 26, 1, 1, 1, generator=gen), torch.randn(16, generator=gen)
    z = F.relu(F.conv3d(d, wj, bj))
    ref = F.relu(F.conv3d(torch.cat([t, s, z], 1), wf, bf))
    torch.testing.assert_close(pointwise_fuse([t, s], d, wj, bj, wf, bf), ref, atol=1e-5, rtol=1e-5)
    # a ready joint output (the dynamic branch) and a single direct branch
    ref2 = F.relu(F.conv3d(torch.cat([s, z], 1), wf[:, 8:], bf))
    torch.testing.assert_close(pointwise_fuse([s], z, None, None, wf[:, 8:], bf), ref2, atol=1e-5, rtol=1e-5)


def _model(joint: str, pooling: str, **kw) -> LSTCBackbone:
    torch.manual_seed(0)
    model = LSTCBackbone(base_channels=8, num_stripes=4, embedding_dim=32, joint_type=joint, pooling=pooling, **kw)
    with torch.no_grad():  # non-trivial BN statistics, so a folding mistake shows
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


@pytest.mark.parametrize("joint,pooling,kw", [
    ("lstc", "hard", {}),
    ("dynamic", "soft", {}),
    ("lstc", "soft", {"use_temporal": False}),
    ("lstc", "mean", {"use_spatial": False, "use_temporal": False}),
])
def test_model_with_kernels_equals_model_without(joint, pooling, kw, monkeypatch):
    model = _model(joint, pooling, **kw)
    x = torch.rand(3, 1, 6, 32, 22)
    lengths = torch.tensor([6, 4, 5])
    with torch.no_grad():
        fast = model.eval()(x, lengths)
    with monkeypatch.context() as m:
        m.setattr(build, "_loaded", {"lib": None})
        with torch.no_grad():
            slow = model(x, lengths)
    torch.testing.assert_close(fast["embedding"], slow["embedding"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast["parts"], slow["parts"], atol=1e-5, rtol=1e-5)

    # training: same loss and gradients (continuous random input: no exact ties for max-pool/top-k)
    def step(mdl):
        mdl = copy.deepcopy(mdl).train()
        out = mdl(x)["embedding"]
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {k: p.grad for k, p in mdl.named_parameters() if p.grad is not None}

    out_a, grads_a = step(model)
    with monkeypatch.context() as m:
        m.setattr(build, "_loaded", {"lib": None})
        out_b, grads_b = step(model)
    torch.testing.assert_close(out_a, out_b, atol=1e-4, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        if k == "fc.bias":  # BatchNorm1d follows fc: the true gradient is 0, both sides are rounding noise
            continue
        scale = grads_b[k].abs().max().clamp_min(1e-6)
        assert (grads_a[k] - grads_b[k]).abs().max() / scale < 1e-3, k


def test_block_tail_kernel_is_used_and_exact(monkeypatch):
    model = _model("lstc", "hard").eval()
    x = torch.rand(2, 1, 5, 32, 22)
    calls = []
    real = blocks_module.pointwise_fuse
    monkeypatch.setattr(blocks_module, "pointwise_fuse", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        fast = model(x)["embedding"]
    assert len(calls) == 3
    monkeypatch.setattr(blocks_module.AsymmetricBlock, "_native_tail", lambda self, x: False)
    with torch.no_grad():
        slow = model(x)["embedding"]
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_eval_chunks_equal_one_batch():
    model = _model("lstc", "hard").eval()
    x = torch.rand(5, 1, 6, 32, 22)
    lengths = torch.tensor([6, 3, 6, 2, 5])
    with torch.no_grad():
        model.eval_chunk = 0
        whole = model(x, lengths)
        model.eval_chunk = 2
        chunked = model(x, lengths)
    torch.testing.assert_close(whole["embedding"], chunked["embedding"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(whole["parts"], chunked["parts"], atol=1e-6, rtol=1e-6)


def test_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setenv("LSTC_GAIT_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="native kernels unavailable"):
        assert build.load_kernels() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.load_kernels() is None  # cached: no second warning


def test_kernels_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setenv("LSTC_GAIT_NATIVE", "0")
    assert build.load_kernels() is None


def test_build_goes_to_the_cache_atomically(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setenv("LSTC_GAIT_KERNEL_CACHE", str(tmp_path))
    lib = build.load_kernels()
    assert lib is not None
    files = [p.name for p in tmp_path.iterdir()]
    assert len(files) == 1 and files[0].startswith("lstc_gait_kernels-") and files[0].endswith(".so")


def test_buffer_pool_reuses_only_released_buffers(monkeypatch):
    from lstc_gait.models.native import buffers

    monkeypatch.setattr(buffers, "_free_lists", {})
    shape = (2, 8, 30, 64, 44)  # 5.4 MB: above the pooling threshold
    a = buffers.empty_channels_last(shape)
    assert a.shape == shape and a.is_contiguous(memory_format=CL)
    b = buffers.empty_channels_last(shape)
    assert a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    view = a[:, :3]  # a view keeps the buffer in use
    del a
    c = buffers.empty_channels_last(shape)
    assert c.data_ptr() != ptr
    del view
    d = buffers.empty_channels_last(shape)
    assert d.data_ptr() == ptr  # released: handed out again
    del b, c, d
    assert buffers.release_buffers() == 3 * 4 * 2 * 8 * 30 * 64 * 44
    small = buffers.empty_channels_last((1, 2, 3, 4, 5))  # small: plain torch.empty
    assert small.is_contiguous(memory_format=CL) and not buffers._free_lists.get(120)


def test_buffer_pool_stays_under_its_cap(monkeypatch):
    from lstc_gait.models.native import buffers

    monkeypatch.setattr(buffers, "_free_lists", {})
    monkeypatch.setenv("LSTC_GAIT_BUFFER_POOL_MB", "12")  # room for two 5.4 MB buffers
    for frames in range(20, 30):  # varying lengths, as padded evaluation batches have
        x = buffers.empty_channels_last((2, 8, frames, 64, 44))
        del x
    pooled = sum(4 * n * len(a) for n, a in buffers._free_lists.items())
    assert 0 < pooled <= 12 * 2 ** 20
    held = [buffers.empty_channels_last((2, 8, 30, 64, 44)) for _ in range(4)]  # more than fits
    assert all(h.shape == (2, 8, 30, 64, 44) for h in held)
    assert sum(4 * n * len(a) for n, a in buffers._free_lists.items()) <= 12 * 2 ** 20
