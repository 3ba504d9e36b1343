"""lstc_gait.models.fastops: BN folding against the library ops, and the native-bf16 decision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstc_gait.models import fastops
from lstc_gait.models.fastops import fold_bn


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


@pytest.mark.parametrize("onednn,flags,machine,expected", [
    (True, "fpu sse avx2 avx512f avx512bw avx512vl", "x86_64", False),  # AVX-512 without bf16: emulated
    (True, "fpu avx2 avx512f avx512_bf16", "x86_64", True),
    (True, "fpu avx2 amx_bf16 amx_tile", "x86_64", True),
    (False, "fpu avx2", "x86_64", False),                               # AVX2 only
    (True, "fp asimd bf16 sve", "aarch64", True),
    (True, "fp asimd", "aarch64", False),
])
def test_native_bf16_needs_onednn_and_the_cpu_flags(monkeypatch, onednn, flags, machine, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn, raising=False)
    monkeypatch.setattr(fastops, "cpu_flags", lambda: flags)
    monkeypatch.setattr(fastops.platform, "machine", lambda: machine)
    assert fastops.cpu_bf16_supported() is expected


def test_amp_dtype_auto_is_bf16_on_cpu_only_where_native(monkeypatch):
    from lstc_gait.engine.runtime import amp_dtype

    cpu = torch.device("cpu")
    monkeypatch.setattr(fastops, "cpu_bf16_supported", lambda: False)
    assert amp_dtype(True, "auto", cpu) is None  # fp32
    monkeypatch.setattr(fastops, "cpu_bf16_supported", lambda: True)
    assert amp_dtype(True, "auto", cpu) is torch.bfloat16
    assert amp_dtype(True, "bf16", cpu) is torch.bfloat16  # explicit choice stays
    assert amp_dtype(False, "auto", cpu) is None
    assert amp_dtype(True, "auto", torch.device("cuda")) is torch.float16
