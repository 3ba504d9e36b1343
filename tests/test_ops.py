"""The lstc_gait custom ops: opcheck (schema, fake kernel, autograd registration, AOT dispatch),
float64 gradcheck of every autograd formula, and odd shapes (H not divisible by S, T=1, C=1).

opcheck runs on CPU float32 (the C++ kernels when built, else the PyTorch formulation) and once
more with the kernels switched off; gradcheck runs in float64, i.e. on the PyTorch formulation,
which tests/test_native.py compares with the kernels.
"""

from __future__ import annotations

import pytest
import torch

import lstc_gait.ops as ops
from lstc_gait.ops import build

CL = torch.channels_last_3d


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=torch.float32, grad=False, cl=False):
    t = torch.randn(*shape, generator=_gen(seed), dtype=dtype)
    if cl:
        t = t.contiguous(memory_format=CL)
    return t.requires_grad_(grad)


# (op name, args) with odd shapes; the forward ops' tensors require grad so autograd is exercised
def _samples(dtype=torch.float32, grad=True):
    r = lambda *s, seed=0, g=grad: _randn(*s, seed=seed, dtype=dtype, grad=g)  # noqa: E731
    bn_w = (torch.rand(3, generator=_gen(5), dtype=dtype) + 0.5).requires_grad_(grad)
    bn_w1 = (torch.rand(1, generator=_gen(6), dtype=dtype) + 0.5).requires_grad_(grad)
    return [
        # H=13 not divisible by S=4 (taller last stripe), T=1, 3 channels (generic channel loop)
        ("stripe_depthwise_conv3d", (r(2, 3, 1, 13, 5), r(3, 1, 3, 5, 3, seed=1), 4)),
        # one channel, one stripe per 2-3 rows
        ("stripe_depthwise_conv3d", (r(1, 1, 3, 7, 4, seed=2), r(1, 1, 3, 3, 3, seed=3), 3)),
        # 8 channels: the blocked kernel paths, kW=3 8-column blocks
        ("stripe_depthwise_conv3d", (r(1, 8, 2, 9, 12, seed=4), r(8, 1, 3, 5, 3, seed=5), 2)),
        ("stripe_depthwise_conv3d_weight_grad", (r(2, 3, 1, 13, 5, g=False), r(2, 3, 1, 13, 5, seed=1, g=False),
                                                 [3, 5, 3], 4)),
        ("stem_conv3d", (r(2, 1, 1, 7, 5), r(5, 1, 3, 3, 3, seed=1), r(5, seed=2), True)),
        ("stem_conv3d", (r(1, 1, 3, 6, 9, seed=3), r(8, 1, 3, 5, 3, seed=4), None, False)),
        # 'same' conv: per-frame 8 -> 8 on 19-wide frames (column schedule), 8 -> 8 (1, 5, 1) on
        # 6-wide frames, 3 -> 2 (3, 3, 3) over T = 2 and 8 -> 10 (3, 1, 1) (output-channel schedule)
        ("conv3d_same", (r(1, 8, 2, 5, 19, seed=7), r(8, 8, 1, 3, 3, seed=8), r(8, seed=9), True)),
        ("conv3d_same", (r(2, 8, 1, 4, 6, seed=10), r(8, 8, 1, 5, 1, seed=11), None, False)),
        ("conv3d_same", (r(1, 3, 2, 4, 5, seed=12), r(2, 3, 3, 3, 3, seed=13), r(2, seed=14), True)),
        ("conv3d_same", (r(1, 8, 3, 2, 3, seed=15), r(10, 8, 3, 1, 1, seed=16), r(10, seed=17), False)),
        ("stem_conv3d_weight_grad", (r(2, 1, 1, 7, 5, g=False), r(2, 5, 1, 7, 5, seed=1, g=False), [3, 3, 3])),
        ("max_pool_hw2", (r(2, 3, 1, 7, 9),)),  # odd H and W: last row/column dropped
        ("max_pool_hw2", (r(1, 1, 2, 4, 4, seed=1),)),
        ("max_pool_hw2", (r(1, 8, 2, 6, 4, seed=2),)),
        ("max_pool_hw2_backward", (r(2, 3, 1, 7, 9, g=False), r(2, 3, 1, 3, 4, seed=1, g=False))),
        ("batch_norm_relu_concat", ([r(2, 3, 1, 5, 7), r(2, 1, 1, 5, 7, seed=1)], [bn_w, bn_w1],
                                    [r(3, seed=2), r(1, seed=3)], [1e-5, 1e-3], [r(2, 2, 1, 5, 7, seed=4)])),
        ("batch_norm_relu_concat", ([r(3, 8, 2, 3, 4, seed=5)], [(torch.rand(8, dtype=dtype) + 0.5).requires_grad_(grad)],
                                    [r(8, seed=6)], [1e-5], [])),
        # LSTC joint (pointwise conv folded) + two direct branches; 6 outputs: the leftover-channel loop
        ("block_tail", ([r(2, 3, 1, 5, 7), r(2, 2, 1, 5, 7, seed=1)], r(2, 4, 1, 5, 7, seed=2),
                        r(3, 4, 1, 1, 1, seed=3), r(3, seed=4), r(6, 8, 1, 1, 1, seed=5), r(6, seed=6))),
        # only a ready joint output (the dynamic branch alone), 8 outputs: the blocked loop
        ("block_tail", ([], r(1, 16, 2, 3, 4, seed=7), None, None, r(8, 16, 1, 1, 1, seed=8), r(8, seed=9))),
        # whole block: 8 channels on 9x17 frames (column-schedule spatial branch, 8-lane joint), T=2
        ("lstc_block", (r(1, 8, 2, 9, 17, seed=10), None, None, r(8, 8, 3, 1, 1, seed=11), r(8, seed=12),
                        r(8, 8, 1, 5, 3, seed=13), r(8, seed=14), r(8, 1, 3, 5, 3, seed=15), 2,
                        r(8, 8, 1, 1, 1, seed=16), r(8, seed=17), r(8, 24, 1, 1, 1, seed=18), r(8, seed=19), False)),
        # 3 channels, no temporal branch, H=7 over S=3 stripes, T=1 (generic joint, output-channel
        # schedule), pooled to 3x2 (odd last row and column dropped)
        ("lstc_block", (r(2, 3, 1, 7, 5, seed=20), None, None, None, None, r(2, 3, 1, 3, 3, seed=21), r(2, seed=22),
                        r(3, 1, 3, 3, 3, seed=23), 3, r(4, 3, 1, 1, 1, seed=24), r(4, seed=25),
                        r(5, 6, 1, 1, 1, seed=26), r(5, seed=27), True)),
        # with the stem (1 -> 8 channels, 3x3x3) over T = 3, pooled: the sliding stem window
        ("lstc_block", (r(2, 1, 3, 6, 17, seed=33), r(8, 1, 3, 3, 3, seed=34), r(8, seed=35), r(8, 8, 3, 1, 1, seed=36),
                        r(8, seed=37), r(8, 8, 1, 3, 3, seed=38), r(8, seed=39), r(8, 1, 3, 3, 3, seed=40), 2,
                        r(8, 8, 1, 1, 1, seed=41), r(8, seed=42), r(8, 24, 1, 1, 1, seed=43), r(8, seed=44), True)),
        # the temporal branch alone
        ("lstc_block", (r(1, 4, 3, 2, 3, seed=28), None, None, r(6, 4, 3, 1, 1, seed=29), r(6, seed=30), None, None, None, 1,
                        None, None, r(3, 6, 1, 1, 1, seed=31), r(3, seed=32), False)),
        ("batch_norm_relu_concat_backward", (r(2, 6, 1, 5, 7, g=False), [r(2, 3, 1, 5, 7, seed=1, g=False),
                                             r(2, 1, 1, 5, 7, seed=2, g=False)],
                                             [torch.rand(3, dtype=dtype) + 0.5, torch.rand(1, dtype=dtype) + 0.5],
                                             [r(3, seed=3, g=False), r(1, seed=4, g=False)],
                                             r(4, seed=5, g=False), torch.rand(4, dtype=dtype) + 0.5, [1e-5, 1e-3])),
    ]


@pytest.fixture(params=["kernels", "pytorch"])
def path(request, monkeypatch):
    """Run a test with the C++ kernels (when they build) and with the PyTorch formulation."""
    if request.param == "pytorch":
        monkeypatch.setattr(build, "_state", {"ok": False})
    elif not build.load_library():
        pytest.skip("no C++ compiler: the kernels are not built")
    return request.param


def test_every_op_is_registered_with_a_schema():
    for name in ops.OP_NAMES:
        schema = str(getattr(torch.ops.lstc_gait, name).default._schema)
        assert schema.startswith(f"lstc_gait::{name}(")
    assert {name for name, _ in _samples()} == set(ops.OP_NAMES)


@pytest.mark.parametrize("index", range(len(_samples())))
def test_opcheck(index, path):
    name, args = _samples()[index]
    torch.library.opcheck(getattr(torch.ops.lstc_gait, name).default, args)


@pytest.mark.parametrize("index", [i for i, (name, _) in enumerate(_samples())
                                   if not name.endswith(("_backward", "_weight_grad"))])
def test_gradcheck_float64(index):
    name, args = _samples(torch.float64)[index]
    op = getattr(torch.ops.lstc_gait, name)
    if name == "batch_norm_relu_concat":
        xs, ws, bs, eps, passthrough = args
        k, p = len(xs), len(passthrough)

        def fn(*flat):
            return op(list(flat[:k]), list(flat[k:2 * k]), list(flat[2 * k:3 * k]), eps, list(flat[3 * k:]))[0]

        inputs = (*xs, *ws, *bs, *passthrough)
        assert len(inputs) == 3 * k + p
    else:
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

        def fn(*ts):
            full = list(args)
            for i, t in zip(tensors, ts, strict=True):
                full[i] = t
            return op(*full)

        inputs = tuple(args[i] for i in tensors)
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_outputs_are_channels_last_and_fresh(path):
    x = _randn(2, 4, 3, 8, 6, cl=True)
    w = _randn(4, 1, 3, 3, 3, seed=1)
    for out in (ops.stripe_depthwise_conv3d(x, w, 2), ops.max_pool_hw2(x),
                ops.batch_norm_relu_concat([x], [torch.ones(4)], [torch.zeros(4)], [1e-5], [])[0]):
        assert out.is_contiguous(memory_format=CL) and out.data_ptr() != x.data_ptr()


def test_ops_reject_bad_arguments():
    x = torch.zeros(1, 3, 2, 8, 4)
    with pytest.raises(ValueError, match="odd"):
        ops.stripe_depthwise_conv3d(x, torch.zeros(3, 1, 3, 2, 3), 2)
    with pytest.raises(ValueError, match="num_stripes"):
        ops.stripe_depthwise_conv3d(x, torch.zeros(3, 1, 3, 3, 3), 9)
    with pytest.raises(ValueError, match="weight"):
        ops.stripe_depthwise_conv3d(x, torch.zeros(4, 1, 3, 3, 3), 2)
    with pytest.raises(ValueError, match="C_out, C_in, kT, kH, kW"):
        ops.conv3d_same(x, torch.zeros(8, 4, 3, 3, 3), None, True)  # 4 input channels for 3
    with pytest.raises(ValueError, match="odd"):
        ops.conv3d_same(x, torch.zeros(8, 3, 1, 2, 3), None, True)
    with pytest.raises(ValueError, match="bias"):
        ops.conv3d_same(x, torch.zeros(8, 3, 1, 3, 3), torch.zeros(7), True)
    with pytest.raises(ValueError, match="N, T, H, W"):
        ops.batch_norm_relu_concat([x], [torch.ones(3)], [torch.zeros(3)], [1e-5], [torch.zeros(1, 2, 2, 4, 4)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_matches_cpu():
    for name, args in _samples(grad=False):
        op = getattr(torch.ops.lstc_gait, name)
        cuda_args = [[t.cuda() for t in a] if isinstance(a, list) and a and isinstance(a[0], torch.Tensor)
                     else a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
        cpu_out, cuda_out = op(*args), op(*cuda_args)
        cpu_out = cpu_out if isinstance(cpu_out, (list, tuple)) else [cpu_out]
        cuda_out = cuda_out if isinstance(cuda_out, (list, tuple)) else [cuda_out]
        for a, b in zip(cpu_out, cuda_out, strict=True):
            torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)
