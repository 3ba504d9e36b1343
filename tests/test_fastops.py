"""Exactness of the fast formulations in lstc_gait.models.fastops against the library ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstc_gait.models import fastops
from lstc_gait.models.fastops import depthwise_conv3d, fold_bn, maybe_compile


def _pair(shape, kernel, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    w = torch.randn((shape[1], 1, *kernel), generator=gen, dtype=dtype) * 0.3
    return x, w


CASES = [
    # (x shape, kernel, padding): odd sizes, 'same' and narrower/wider padding, 1-wide kernels
    ((2, 3, 5, 9, 7), (3, 7, 3), (1, 3, 1)),
    ((1, 4, 4, 6, 5), (3, 5, 3), (1, 2, 1)),
    ((3, 2, 3, 4, 3), (3, 3, 3), (1, 1, 1)),
    ((2, 3, 5, 8, 6), (3, 3, 3), (0, 0, 0)),
    ((2, 3, 4, 7, 5), (1, 3, 1), (0, 1, 0)),
    ((1, 2, 3, 5, 4), (3, 3, 3), (2, 2, 2)),  # padding wider than needed: output grows
    ((2, 2, 4, 6, 3), (3, 5, 1), (1, 0, 0)),
]


@pytest.mark.parametrize(("shape", "kernel", "padding"), CASES)
def test_depthwise_matches_conv3d_values_and_grads(shape, kernel, padding):
    x, w = _pair(shape, kernel)
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = F.conv3d(x1, w1, padding=padding, groups=shape[1])
    out = depthwise_conv3d(x2, w2, padding)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    ref.backward(g)
    out.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-4, atol=1e-4)


def test_weight_grad_grouped_conv_path_matches_library(monkeypatch):
    # Force the grouped-conv weight-gradient formulation even on a small input.
    monkeypatch.setattr(fastops, "_GRAD_W_CONV_MIN_POSITIONS", 0)
    x, w = _pair((3, 4, 5, 11, 6), (3, 5, 3))
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    (F.conv3d(x1, w1, padding=(1, 2, 1), groups=4) ** 2).sum().backward()
    (depthwise_conv3d(x2, w2, (1, 2, 1)) ** 2).sum().backward()
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)


def test_depthwise_only_weight_or_only_input_needs_grad():
    x, w = _pair((2, 3, 4, 6, 5), (3, 3, 3))
    xg = x.clone().requires_grad_()
    depthwise_conv3d(xg, w, (1, 1, 1)).sum().backward()
    ref_x = x.clone().requires_grad_()
    F.conv3d(ref_x, w, padding=1, groups=3).sum().backward()
    torch.testing.assert_close(xg.grad, ref_x.grad, rtol=1e-5, atol=1e-5)
    wg = w.clone().requires_grad_()
    depthwise_conv3d(x, wg, (1, 1, 1)).sum().backward()
    ref_w = w.clone().requires_grad_()
    F.conv3d(x, ref_w, padding=1, groups=3).sum().backward()
    torch.testing.assert_close(wg.grad, ref_w.grad, rtol=1e-4, atol=1e-4)


def test_depthwise_bf16_autocast_close_to_library():
    x, w = _pair((2, 4, 4, 10, 6), (3, 5, 3), seed=3)
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.conv3d(x1, w1, padding=(1, 2, 1), groups=4)
        out = depthwise_conv3d(x2, w2, (1, 2, 1))
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
    exact = F.conv3d(x, w, padding=(1, 2, 1), groups=4)
    # fp32 arithmetic on bf16-rounded inputs: at least as close to the fp32 truth as the library
    assert (out.float() - exact).abs().max() <= (ref.float() - exact).abs().max() + 1e-6
    out.float().sum().backward()
    ref.float().sum().backward()
    assert x2.grad.dtype == torch.float32 and w2.grad.dtype == torch.float32
    torch.testing.assert_close(x2.grad, x1.grad, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=3e-2, atol=0.5)


def test_depthwise_float64_and_gradcheck():
    x, w = _pair((1, 2, 3, 5, 4), (3, 3, 3), dtype=torch.float64)
    x.requires_grad_()
    w.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv3d(a, b, (1, 1, 1)), (x, w))


def test_depthwise_rejects_bad_shapes():
    with pytest.raises(ValueError, match="weight"):
        depthwise_conv3d(torch.zeros(1, 3, 2, 2, 2), torch.zeros(4, 1, 1, 1, 1), (0, 0, 0))
    with pytest.raises(ValueError, match="padding"):
        depthwise_conv3d(torch.zeros(1, 3, 2, 2, 2), torch.zeros(3, 1, 1, 1, 1), (0, -1, 0))


@pytest.mark.parametrize("dims", [1, 3])
def test_fold_bn_equals_conv_then_bn(dims):
    torch.manual_seed(0)
    if dims == 3:
        conv, bn, x = nn.Conv3d(3, 5, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(5), torch.randn(2, 3, 4, 6, 5)
    else:
        conv, bn, x = nn.Linear(6, 5), nn.BatchNorm1d(5), torch.randn(7, 6)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    bn.eval()
    w, b = fold_bn(conv.weight, conv.bias, bn)
    ref = bn(conv(x))
    out = F.conv3d(x, w, b, padding=(0, 1, 1)) if dims == 3 else F.linear(x, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    w0, b0 = fold_bn(conv.weight, None, bn)  # bias-free conv (the original model's convs)
    ref0 = bn(conv(x) - conv.bias.reshape((-1,) + (1,) * (ref.dim() - 2)))
    out0 = F.conv3d(x, w0, b0, padding=(0, 1, 1)) if dims == 3 else F.linear(x, w0, b0)
    torch.testing.assert_close(out0, ref0, rtol=1e-5, atol=1e-5)


def test_fold_bn_rejects_mismatch():
    with pytest.raises(ValueError, match="output channels"):
        fold_bn(torch.zeros(4, 3, 1, 1, 1), None, nn.BatchNorm3d(5))


def test_maybe_compile_disabled_returns_module_and_fallback_on_failure(monkeypatch):
    lin = nn.Linear(3, 2)
    assert maybe_compile(lin, enabled=False) is lin

    def broken_compile(module, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    wrapped = maybe_compile(lin)
    x = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="falling back"):
        y = wrapped(x)
    torch.testing.assert_close(y, lin(x))
    assert wrapped.failed
    assert list(wrapped.state_dict()) == ["weight", "bias"]  # checkpoints keep the plain keys
