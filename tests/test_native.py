"""The C++ CPU kernels behind the lstc_gait ops against the library math they replace, and their build.

Every kernel is checked for values and gradients against plain PyTorch in float64, for channel
counts on the blocked (multiple of 8) and the generic path; the whole model is checked with the
kernels against the same model on the PyTorch formulation. The build tests check behaviour: a
library is only ever loaded under its final name, which no interrupted or concurrent build can
leave half-written, and the cache key changes with the CPU's flags.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lstc_gait.ops as ops
from lstc_gait.models import LSTCBackbone
from lstc_gait.models.bn_relu import batch_norm_relu_concat
from lstc_gait.models.stripes import stripe_bounds
from lstc_gait.ops import build

CL = torch.channels_last_3d
needs_kernels = pytest.mark.skipif(not build.load_library(), reason="no C++ compiler: the kernels are not built")


def _kernels_off(monkeypatch) -> None:
    """The ops' PyTorch formulation: load_library() answers False."""
    monkeypatch.setattr(build, "_state", {"ok": False})


def stripe_reference(x: torch.Tensor, w: torch.Tensor, stripes: int) -> torch.Tensor:
    """Per-stripe 'same' depthwise conv, written as plainly as possible."""
    pad = tuple(k // 2 for k in w.shape[2:])
    parts = [F.conv3d(x[:, :, :, a:b], w, padding=pad, groups=x.shape[1])
             for a, b in stripe_bounds(x.shape[3], stripes)]
    return torch.cat(parts, dim=3)


@needs_kernels
@pytest.mark.parametrize("shape,kernel,stripes", [
    ((2, 16, 5, 13, 7), (3, 7, 3), 3),   # blocked channels, taller last stripe
    ((2, 16, 3, 8, 22), (3, 7, 3), 4),   # wide rows: the 8-column register blocks of kW == 3
    ((2, 8, 4, 16, 9), (3, 5, 3), 8),    # blocked, 2-row stripes (kernel taller than a stripe)
    ((3, 5, 4, 16, 6), (3, 5, 3), 8),    # generic channel loop
    ((2, 3, 6, 9, 5), (1, 3, 5), 1),     # one stripe, flat in time
    ((1, 24, 3, 10, 4), (5, 3, 1), 4),
    ((1, 24, 2, 8, 21), (3, 5, 3), 2),   # 8-lane blocks on every CPU (24 % 16 != 0), column blocks, edges
    ((1, 16, 2, 4, 2), (3, 3, 3), 2),    # kW == 3 on rows narrower than the kernel
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
    out = ops.stripe_depthwise_conv3d(xn.contiguous(memory_format=CL), wn, stripes)
    out.backward(g.float())
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(xn.grad.double(), xr.grad, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(wn.grad.double(), wr.grad, atol=1e-4, rtol=1e-5)


@needs_kernels
def test_nothing_crosses_a_stripe_in_the_kernel():
    x = torch.randn(1, 8, 3, 12, 5)
    w = torch.randn(8, 1, 3, 7, 3)
    base = ops.stripe_depthwise_conv3d(x, w, 3)
    bumped = x.clone()
    bumped[:, :, :, 5] += 10.0  # a row of stripe 1 (rows 4..7)
    diff = (ops.stripe_depthwise_conv3d(bumped, w, 3) - base).abs().amax(dim=(0, 1, 2, 4))
    assert diff[4:8].min() > 0 and diff[:4].max() == 0 and diff[8:].max() == 0


@needs_kernels
# Channel counts for each path: 16 and 32 (one and two tiles of the widest vector), 24 and 8 (the
# 8-lane tiles), 5 (the scalar loop); widths below, at and between multiples of the vector length.
@pytest.mark.parametrize("channels,kernel,width", [(16, (3, 3, 3), 7), (5, (3, 5, 3), 7), (8, (1, 3, 5), 7),
                                                   (24, (3, 3, 3), 21), (8, (3, 3, 3), 2), (32, (3, 3, 3), 44),
                                                   (16, (1, 3, 5), 16)])
def test_stem_conv_matches_library(channels, kernel, width):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 5, 9, width, generator=gen, dtype=torch.float64)
    w = torch.randn(channels, 1, *kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(channels, generator=gen, dtype=torch.float64)
    pad = tuple(k // 2 for k in kernel)
    wr = w.clone().requires_grad_()
    ref = F.conv3d(x, wr, padding=pad)
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref.backward(g)
    wn = w.float().requires_grad_()
    out = ops.stem_conv3d(x.float(), wn, None, False)
    out.backward(g.float())
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wn.grad.double(), wr.grad, atol=1e-4, rtol=1e-5)
    fused = ops.stem_conv3d(x.float(), w.float(), b.float(), True)
    torch.testing.assert_close(fused.double(), F.relu(F.conv3d(x, w, b, padding=pad)), atol=1e-5, rtol=1e-5)


@needs_kernels
# Column schedule (kT = 1, frames >= 16 wide, channels in multiples of 8): C_in 16 and 32 (16-lane
# tiles on AVX-512), 8 and 24 (8-lane tiles); C_out 8, 16 (one 16-channel group) and 24 (three
# 8-channel groups); widths at and between multiples of the lanes, one to four column blocks
# (the 3-, 2- and 1-block steps); kH 1 and 7 (rows past the frame's top and bottom skipped).
# Output-channel schedule (every other shape): the blocks' temporal convs (3x1x1, 8 and 10
# outputs), 10 outputs on 16x11 frames, 64 -> 64 1x1x1 (four vectors per step), 1-5 channels,
# kT = 3 over T = 1 and 2 (taps past the sequence skipped), a frame narrower than the kernel.
@pytest.mark.parametrize("cin,cout,kernel,height,width", [
    (16, 8, (1, 7, 3), 9, 44), (32, 16, (1, 3, 3), 5, 33), (8, 8, (1, 5, 3), 6, 22), (24, 24, (1, 3, 5), 4, 17),
    (16, 24, (1, 1, 3), 3, 16), (16, 8, (1, 7, 3), 2, 50), (8, 8, (1, 3, 3), 3, 64),
    (8, 16, (1, 3, 1), 7, 3), (16, 8, (3, 1, 1), 5, 44), (32, 10, (3, 1, 1), 16, 11), (32, 10, (1, 3, 3), 16, 11),
    (64, 64, (1, 1, 1), 4, 11), (3, 5, (3, 3, 3), 5, 7), (1, 2, (3, 5, 3), 4, 2), (24, 20, (3, 3, 5), 3, 9),
])
def test_conv3d_same_matches_library(cin, cout, kernel, height, width):
    gen = torch.Generator().manual_seed(3)
    for t in (1, 3):
        x = torch.randn(2, cin, t, height, width, generator=gen, dtype=torch.float64)
        w = torch.randn(cout, cin, *kernel, generator=gen, dtype=torch.float64)
        b = torch.randn(cout, generator=gen, dtype=torch.float64)
        pad = tuple(k // 2 for k in kernel)
        xf = x.float().contiguous(memory_format=CL)
        for bias, relu in ((b, True), (None, False)):
            out = ops.conv3d_same(xf, w.float(), None if bias is None else bias.float(), relu)
            ref = F.conv3d(x, w, bias, padding=pad)
            assert out.is_contiguous(memory_format=CL)
            torch.testing.assert_close(out.double(), F.relu(ref) if relu else ref, atol=1e-4, rtol=1e-5)
        # the default layout in is read correctly too
        torch.testing.assert_close(ops.conv3d_same(x.float(), w.float(), b.float(), True),
                                   ops.conv3d_same(xf, w.float(), b.float(), True))


@needs_kernels
# The model's first two blocks (16 channels, 8-channel branches, 64x44 and 32x22 frames) and a
# 16x16 third block (32 channels, 10-channel branches: output-channel schedule), a block without
# its spatial branch, 24 channels (8-lane joint, column-schedule spatial branch at 8 lanes); the
# first block also with the stem (3x3x3, 1 -> 16) inside, over T = 11 (the window slides past its
# 8-frame buffer) and T = 1.
@pytest.mark.parametrize("c,m,kernel,height,width,stripes,branches", [
    (16, 8, (3, 7, 3), 64, 44, 8, "tsj"), (16, 8, (3, 5, 3), 32, 22, 8, "tsj"), (32, 10, (3, 3, 3), 16, 16, 8, "tsj"),
    (16, 8, (3, 7, 3), 21, 19, 4, "tj"), (24, 8, (3, 3, 5), 9, 17, 2, "sj"),
    (16, 8, (3, 7, 3), 64, 44, 8, "tsj+stem"), (16, 8, (5, 3, 3), 17, 16, 4, "tsj+stem"),
])
@pytest.mark.parametrize("pool", [False, True])
def test_lstc_block_matches_its_composition(c, m, kernel, height, width, stripes, branches, pool):
    gen = torch.Generator().manual_seed(5)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    kt, kh, kw = kernel
    stem = branches.endswith("+stem")
    n_branches = len(branches.split("+")[0])
    for t in ((11, 1) if stem else (3,)):
        x = r(2, 1, t, height, width) if stem else torch.relu(r(2, c, t, height, width))
        args = [x, r(c, 1, 3, 3, 3) if stem else None, r(c) if stem else None, r(m, c, kt, 1, 1), r(m),
                r(m, c, 1, kh, kw), r(m), r(c, 1, kt, kh, kw), stripes, r(m, c, 1, 1, 1), r(m),
                r(2 * m, m * n_branches, 1, 1, 1), r(2 * m), pool]
        if "t" not in branches:
            args[3] = args[4] = None
        if "s" not in branches:
            args[5] = args[6] = None
        ref = ops.reference.lstc_block(*args)
        fargs = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
        fargs[0] = fargs[0].contiguous(memory_format=CL)
        out = ops.lstc_block(*fargs)
        assert out.is_contiguous(memory_format=CL)
        # float32 against float64: the stem's output makes the block's sums larger, so scale atol
        torch.testing.assert_close(out.double(), ref, atol=1e-5 * max(1.0, ref.abs().max().item()), rtol=1e-5)


@needs_kernels
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
    out = batch_norm_relu_concat([(bns[0], xa[0]), (bns[1], xa[1]), ra])
    ref = torch.cat([F.relu(refs[0](xb[0])), F.relu(refs[1](xb[1])), rb], dim=1)
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


@needs_kernels
@pytest.mark.parametrize("shape", [(2, 8, 3, 6, 8), (1, 5, 2, 7, 9), (2, 16, 3, 4, 5)])
def test_max_pool_matches_library_with_ties_and_nan(shape):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen).contiguous(memory_format=CL)
    x[0, 0, 0, 0, 0] = x[0, 0, 0, 0, 1]      # a tie inside a window: the first one wins
    x[0, 1, 0, 2, 2] = float("nan")           # NaN propagates
    x[:, :, 1] = 0.0                          # whole frames of ties, as after a ReLU
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = F.max_pool3d(a, (1, 2, 2))
    out = ops.max_pool_hw2(b)
    g = torch.randn(ref.shape, generator=gen)
    ref.backward(g)
    out.backward(g)
    assert torch.equal(ref.isnan(), out.isnan())
    assert torch.equal(ref.nan_to_num(), out.nan_to_num())
    assert torch.equal(a.grad, b.grad)


@needs_kernels
@pytest.mark.parametrize("cout", [16, 29])  # 29: 16-, 8-channel blocks and leftover channels
def test_block_tail_equals_concat_and_convs(cout):
    gen = torch.Generator().manual_seed(4)
    t = torch.rand(2, 8, 3, 4, 5, generator=gen).contiguous(memory_format=CL)
    s = torch.rand(2, 8, 3, 4, 5, generator=gen).contiguous(memory_format=CL)
    d = torch.randn(2, 16, 3, 4, 5, generator=gen).contiguous(memory_format=CL)
    wj, bj = torch.randn(10, 16, 1, 1, 1, generator=gen), torch.randn(10, generator=gen)
    wf, bf = torch.randn(cout, 26, 1, 1, 1, generator=gen), torch.randn(cout, generator=gen)
    z = F.relu(F.conv3d(d.double(), wj.double(), bj.double()))
    ref = F.relu(F.conv3d(torch.cat([t.double(), s.double(), z], 1), wf.double(), bf.double()))
    out = ops.block_tail([t, s], d, wj, bj, wf, bf)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    # a ready joint output (the dynamic branch) and a single direct branch
    ref2 = F.relu(F.conv3d(torch.cat([s.double(), z], 1), wf[:, 8:].double(), bf.double()))
    out2 = ops.block_tail([s], z.float(), None, None, wf[:, 8:].contiguous(), bf)
    torch.testing.assert_close(out2.double(), ref2, atol=1e-5, rtol=1e-5)


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


@needs_kernels
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
        _kernels_off(m)
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
        _kernels_off(m)
        out_b, grads_b = step(model)
    torch.testing.assert_close(out_a, out_b, atol=1e-4, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        if k == "fc.bias":  # BatchNorm1d follows fc: the true gradient is 0, both sides are rounding noise
            continue
        scale = grads_b[k].abs().max().clamp_min(1e-6)
        assert (grads_a[k] - grads_b[k]).abs().max() / scale < 1e-3, k


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
    monkeypatch.setattr(build, "_state", {})
    monkeypatch.setenv("LSTC_GAIT_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ kernels unavailable"):
        assert build.load_library() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.load_library() is False  # decided for the process: no second warning
        x = torch.randn(1, 2, 3, 8, 4)
        out = ops.stripe_depthwise_conv3d(x, torch.randn(2, 1, 3, 3, 3), 2)  # the PyTorch formulation
    assert out.shape == x.shape and not list(tmp_path.iterdir())


def test_kernels_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(build, "_state", {})
    monkeypatch.setenv("LSTC_GAIT_NATIVE", "0")
    assert build.load_library() is False
    assert not ops.native_kernels(torch.zeros(1))


def test_cache_key_covers_the_cpu_flags_and_the_sources(monkeypatch):
    compiler = "/usr/bin/c++"
    monkeypatch.setattr(build, "_compiler_version", lambda c: "c++ 1.0")
    base = build.library_path(compiler)
    monkeypatch.setattr(build, "cpu_flags", lambda: "fpu sse sse2 avx2")  # another CPU model
    other_cpu = build.library_path(compiler)
    monkeypatch.setattr(build, "CFLAGS", (*build.CFLAGS, "-DEXTRA"))
    other_flags = build.library_path(compiler)
    assert len({base, other_cpu, other_flags}) == 3
    assert base.parent == other_cpu.parent == build.cache_dir()


def _fake_load(payload: bytes, pause: float):
    """A stand-in for cpp_extension.load that writes its library slowly, in pieces."""
    def load(name, sources, extra_cflags, extra_ldflags, build_directory, is_python_module, verbose):
        out = Path(build_directory) / f"{name}.so"
        with open(out, "wb") as f:
            for i in range(0, len(payload), len(payload) // 4):
                f.write(payload[i:i + len(payload) // 4])
                f.flush()
                time.sleep(pause)
        return str(out)
    return load


def test_interrupted_build_leaves_no_loadable_library(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    target = tmp_path / "lstc_gait_kernels_0123456789abcdef.so"

    def broken(name, build_directory, **kwargs):
        (Path(build_directory) / f"{name}.so").write_bytes(b"\x7fELF half a library")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of linking

    monkeypatch.setattr(cpp_extension, "load", broken)
    with pytest.raises(KeyboardInterrupt):
        build.compile_library(target)
    assert not target.exists()
    assert not any(p.suffix == ".so" for p in tmp_path.rglob("*"))  # the build folder is gone too

    # Killed outright (no cleanup runs): the partial file stays in the private build folder only.
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from torch.utils import cpp_extension
        from lstc_gait.ops import build
        def slow(name, build_directory, **kwargs):
            (Path(build_directory) / f"{{name}}.so").write_bytes(b"partial")
            Path({str(tmp_path / "started")!r}).touch()
            time.sleep(60)
        cpp_extension.load = slow
        build.compile_library(Path({str(target)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.time() + 120
        while not (tmp_path / "started").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert (tmp_path / "started").exists()
    finally:
        proc.kill()
        proc.wait()
    assert not target.exists()
    # the next build ignores the leftovers and publishes a complete library
    monkeypatch.setattr(cpp_extension, "load", _fake_load(b"complete library" * 64, 0.0))
    build.compile_library(target)
    assert target.read_bytes() == b"complete library" * 64


def test_concurrent_builds_only_ever_show_a_complete_library(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    payload = bytes(range(256)) * 256
    monkeypatch.setattr(cpp_extension, "load", _fake_load(payload, 0.05))
    target = tmp_path / "lstc_gait_kernels_fedcba9876543210.so"
    seen: list[bytes] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            if target.exists():
                seen.append(target.read_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    builders = [threading.Thread(target=build.compile_library, args=(target,)) for _ in range(2)]
    watcher.start()
    for t in builders:
        t.start()
    for t in builders:
        t.join()
    deadline = time.monotonic() + 5.0  # the watcher reads the published library at least once
    while not seen and time.monotonic() < deadline:
        time.sleep(0.005)
    done.set()
    watcher.join()
    assert target.read_bytes() == payload
    assert seen and all(content == payload for content in seen)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no build folders left
