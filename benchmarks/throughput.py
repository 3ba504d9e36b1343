"""Model throughput: the fast LSTC backbone against a straightforward implementation of the same math.

For each configuration (base channels x joint branch x pooling) the script builds a straightforward
model written here (a Python loop over stripes with one F.conv3d per stripe, explicit conv -> BN ->
ReLU modules, default memory format, a per-sample loop in the dynamic branch, fp32), saves its
random weights as an original-format checkpoint, loads that through
``lstc_gait.compat.load_reference_checkpoint`` (the fast model, same weights), checks that both give
the same embeddings, then times both in the same process, alternating one iteration of each:

- training step (forward + backward + AdamW step, BN in train mode), sequences/s;
- inference (eval, no_grad), sequences/s;
- fast model in fp32 and under bf16 autocast (the straightforward model always runs fp32: it is the
  baseline of the speed-up ratios), bf16-vs-fp32 embedding cosine;
- peak memory of one step: the growth of the process's peak resident set (VmHWM) over the step,
  after resetting the peak through /proc/self/clear_refs (Linux); this counts every byte the step
  made resident (activations, gradients, allocator slack), not only live tensors;
- model-FLOP utilisation: FLOPs of the model's math (torch.utils.flop_counter on the
  straightforward model) / measured time / matmul peak measured in the same run.

With ``--cache DIR`` (an lstc_gait data cache) it also measures the data loader's samples/s and the
share of a training step spent waiting for the next batch.

Timing: after two warm-up calls of each, one call of each implementation per round, alternating,
for ``--iters`` rounds (default 5); the speed-up is the median over rounds of the per-round ratio
(straightforward time / fast time), the seq/s columns are medians too. The header prints the CPU
model and flags that matter (AVX2, AVX-512, AVX512-BF16, AMX), the thread count, whether bf16 is
native (bf16 columns only then, unless ``--bf16 on``), whether the lstc_gait C++ kernels are built,
and the allocator settings. ``--allocator keep-freed|jemalloc|tcmalloc`` re-runs the script in a
subprocess with that allocator (glibc ``MALLOC_*`` variables or ``LD_PRELOAD``): the library itself
never changes process-wide allocator settings.

Usage: python benchmarks/throughput.py [--quick] [--batch 16] [--iters 5] [--configs b16-lstc-hard,...]
       [--device cpu|cuda] [--bf16 auto|on|off] [--allocator default|keep-freed|jemalloc|tcmalloc]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALL_CONFIGS = [f"b{b}-{j}-{p}" for b in (16, 32) for j in ("lstc", "dynamic") for p in ("hard", "soft")]
KERNELS = ((3, 7, 3), (3, 5, 3), (3, 3, 3))


# --------------------------------------------------------------------------------------------
# The straightforward implementation (state_dict keys of the original lstc-gait checkpoints)
# --------------------------------------------------------------------------------------------

def stripe_bounds(height: int, num_stripes: int) -> list[tuple[int, int]]:
    """Row ranges of the height stripes: height // S rows each, the last takes the leftover."""
    h = max(1, height // num_stripes)
    bounds = [(s * h, (s + 1) * h) for s in range(num_stripes - 1)]
    bounds.append(((num_stripes - 1) * h, height))
    return bounds


class PlainStripeDepthwise(nn.Module):
    """Depthwise 3D conv with 'same' zero padding applied to each height stripe on its own."""

    def __init__(self, channels: int, kernel: tuple[int, int, int], num_stripes: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel, padding=tuple(k // 2 for k in kernel),
                              groups=channels, bias=False)
        self.num_stripes = num_stripes

    def forward(self, x: Tensor) -> Tensor:
        pieces = [self.conv(x[:, :, :, a:b]) for a, b in stripe_bounds(x.shape[3], self.num_stripes)]
        return torch.cat(pieces, dim=3)


class PlainLSTCJoint(nn.Module):
    def __init__(self, cin: int, m: int, kernel: tuple[int, int, int], num_stripes: int) -> None:
        super().__init__()
        self.stripes = PlainStripeDepthwise(cin, kernel, num_stripes)
        self.pointwise = nn.Conv3d(cin, m, 1, bias=False)
        self.bn = nn.BatchNorm3d(m)

    @property
    def depthwise(self) -> nn.Conv3d:
        return self.stripes.conv

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.pointwise(self.stripes(x))))


class PlainDynamicJoint(nn.Module):
    """Gate-weighted expert kernel per sample, one dense conv per sample (no BN / ReLU after)."""

    def __init__(self, cin: int, m: int, kernel: tuple[int, int, int], experts: int, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(experts, m, cin, *kernel) * (2.0 / (cin * 27)) ** 0.5)
        self.gate = nn.Sequential(nn.Conv3d(cin, hidden, 1), nn.ReLU(), nn.Conv3d(hidden, experts, 1))
        self.padding = tuple(k // 2 for k in kernel)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.softmax(self.gate(x.mean(dim=(2, 3, 4), keepdim=True)).flatten(1), dim=1)  # (N, E)
        outs = []
        for i in range(x.shape[0]):
            kernel = (gate[i].view(-1, 1, 1, 1, 1, 1) * self.weight).sum(0)
            outs.append(F.conv3d(x[i:i + 1], kernel, padding=self.padding))
        return torch.cat(outs, dim=0)


def conv_bn_relu(cin: int, cout: int, kernel, padding) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, padding=padding, bias=False), nn.BatchNorm3d(cout),
                         nn.ReLU())


class PlainBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], joint: str, num_stripes: int,
                 experts: int) -> None:
        super().__init__()
        kt, kh, kw = kernel
        m = max(cout // 6, 8)  # three branches enabled
        self.branch_temporal = conv_bn_relu(cin, m, (kt, 1, 1), (kt // 2, 0, 0))
        self.branch_spatial = conv_bn_relu(cin, m, (1, kh, kw), (0, kh // 2, kw // 2))
        if joint == "lstc":
            self.branch_joint = PlainLSTCJoint(cin, m, kernel, num_stripes)
        else:
            self.branch_joint = PlainDynamicJoint(cin, m, kernel, experts, max(16, cin // 2))
        self.fuse = conv_bn_relu(3 * m, cout, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([self.branch_temporal(x), self.branch_spatial(x), self.branch_joint(x)], dim=1)
        return self.fuse(y)


class PlainBackbone(nn.Module):
    def __init__(self, base: int, joint: str, pooling: str, num_stripes: int = 8, embedding_dim: int = 256,
                 topk: int = 2, temperature: float = 1.0, experts: int = 4) -> None:
        super().__init__()
        c1, c2, c3 = base, 2 * base, 4 * base
        self.stem = conv_bn_relu(1, c1, 3, 1)
        self.block1 = PlainBlock(c1, c1, KERNELS[0], joint, num_stripes, experts)
        self.block2 = PlainBlock(c1, c2, KERNELS[1], joint, num_stripes, experts)
        self.block3 = PlainBlock(c2, c3, KERNELS[2], joint, num_stripes, experts)
        self.head = conv_bn_relu(c3, c3, 1, 0)
        self.fc = nn.Linear(c3 * num_stripes, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)
        self.num_stripes, self.pooling, self.topk, self.temperature = num_stripes, pooling, topk, temperature

    def forward(self, x: Tensor) -> Tensor:
        y = self.block1(self.stem(x))
        y = self.block2(F.max_pool3d(y, (1, 2, 2)))
        y = self.head(self.block3(F.max_pool3d(y, (1, 2, 2))))
        parts = []
        for a, b in stripe_bounds(y.shape[3], self.num_stripes):
            f = y[:, :, :, a:b].mean(dim=(3, 4))  # (N, C, T)
            score = f.pow(2).sum(dim=1).clamp_min(1e-6).sqrt()  # (N, T)
            if self.pooling == "soft":
                w = torch.softmax(score / max(1e-6, self.temperature), dim=1)
                parts.append((f * w.unsqueeze(1)).sum(dim=2))
            else:
                idx = score.topk(min(self.topk, f.shape[2]), dim=1).indices
                parts.append(f.gather(2, idx.unsqueeze(1).expand(-1, f.shape[1], -1)).mean(dim=2))
        return self.bn(self.fc(torch.cat(parts, dim=1)))

    def original_state_dict(self) -> dict[str, Tensor]:
        """state_dict with the original checkpoint's keys (the stripe wrapper is ours)."""
        return {k.replace("branch_joint.stripes.conv.", "branch_joint.depthwise."): v
                for k, v in self.state_dict().items()}

    def load_original_state_dict(self, state: dict[str, Tensor]) -> None:
        self.load_state_dict({k.replace("branch_joint.depthwise.", "branch_joint.stripes.conv."): v
                              for k, v in state.items()})


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Random affine parameters and running statistics, so a wrong BN handling shows."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                mod.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def parse_config(name: str) -> tuple[int, str, str]:
    try:
        b, joint, pooling = name.split("-")
        base = int(b.lstrip("b"))
    except ValueError:
        raise SystemExit(f"bad --configs entry {name!r}: expected b<base>-<lstc|dynamic>-<hard|soft>") from None
    if joint not in ("lstc", "dynamic") or pooling not in ("hard", "soft") or base < 1:
        raise SystemExit(f"bad --configs entry {name!r}: expected b<base>-<lstc|dynamic>-<hard|soft>")
    return base, joint, pooling


def build_pair(name: str, tmpdir: Path, seed: int = 0) -> tuple[nn.Module, nn.Module, str]:
    """(straightforward, fast, source) with identical weights; the fast one goes through compat."""
    base, joint, pooling = parse_config(name)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    plain = PlainBackbone(base, joint, pooling)
    randomize_bn(plain, gen)
    args = {"height": 64, "width": 44, "seq_len": 30, "base_channels": base, "num_stripes": 8,
            "embedding_dim": 256, "pooling_topk": 2, "pooling_soft": pooling == "soft",
            "pooling_temperature": 1.0, "use_temporal": True, "use_spatial": True, "use_joint": True,
            "joint_type": joint, "dynamic_experts": 4, "dynamic_gate_hidden": 0}
    ckpt = {"model": plain.original_state_dict(), "classifier": nn.Linear(256, 10).state_dict(), "epoch": 0,
            "val_acc": 0.0, "num_classes": 10, "args": args}
    path = tmpdir / f"{name}.pt"
    torch.save(ckpt, path)
    try:
        from lstc_gait.compat import load_reference_checkpoint
        fast = load_reference_checkpoint(path)
        source = "lstc_gait.compat.load_reference_checkpoint"
    except ImportError as exc:  # models not there yet: time the harness against itself
        print(f"note: fast model unavailable ({exc}); timing the straightforward model on both sides",
              file=sys.stderr)
        fast = copy.deepcopy(plain)
        source = "straightforward (fallback)"
    return plain, fast, source


def embed(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    return out["embedding"] if isinstance(out, dict) else out


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

def machine_line() -> str:
    from lstc_gait.ops.build import cpu_model

    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {cpu} | os.cpu_count()={os.cpu_count()} | torch {torch.__version__} | "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()} | "
            f"threads={torch.get_num_threads()} | {platform.python_implementation()} {platform.python_version()} | "
            f"load avg (1 min) at start {load:.1f}")


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
              "asimd", "sve", "bf16")


def cpu_flags_line() -> str:
    """The vector-unit flags of /proc/cpuinfo that decide fp32/bf16 speed (present ones, and absent bf16 ones)."""
    from lstc_gait.ops.build import cpu_flags

    flags = set(cpu_flags().split())
    present = [f for f in SIMD_FLAGS if f in flags]
    missing = [f for f in ("avx512_bf16", "amx_bf16") if f not in flags]
    return f"cpu flags: {' '.join(present) or 'unknown'} (absent: {' '.join(missing) or '-'})"


def matmul_peak(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0, device: torch.device | None = None) -> float:
    """Best GFLOP/s of an n x n matmul over ~``seconds`` of repeats."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        n = 4096
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class PeakRSS:
    """Growth of the peak resident set over a block, via a VmHWM reset (Linux clear_refs)."""

    def __init__(self) -> None:
        self.available = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _field(name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def measure(self, fn: Callable[[], object]) -> float | None:
        if not self.available or not self._reset():
            return None
        base = self._field("VmRSS")
        fn()
        return (self._field("VmHWM") - base) / 2 ** 20


def make_train_step(model: nn.Module, x: Tensor, labels: Tensor, bf16: bool) -> Callable[[], float]:
    classifier = nn.Linear(256, int(labels.max()) + 1).to(x.device)
    params = list(model.parameters()) + list(classifier.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            emb = embed(model, x)
            loss = F.cross_entropy(classifier(emb).float(), labels)
        loss.backward()
        opt.step()
        return float(loss.detach())  # a host sync: the step has finished on any device
    return step


def make_infer(model: nn.Module, x: Tensor, bf16: bool) -> Callable[[], Tensor]:
    def run() -> Tensor:
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = embed(model, x)
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
        return out
    return run


def alternate(fns: dict[str, Callable[[], object]], iters: int, warmup: int = 2
              ) -> tuple[dict[str, float], dict[str, float]]:
    """Steady-state timings, calls interleaved (same machine state for all).

    Returns:
        (median seconds per call of each function, median over rounds of the per-round ratio
        ``time("plain") / time(k)`` for every other k).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {k: statistics.median(p / t for p, t in zip(times["plain"], v, strict=True))
              for k, v in times.items() if k != "plain"}
    # CPU-time ratio: with --threads 1 on a shared machine, the speed-up an idle core would show
    ratios.update({f"{k}_cpu": statistics.median(p / max(t, 1e-9) for p, t in zip(cpu["plain"], v, strict=True))
                   for k, v in cpu.items() if k != "plain"})
    return medians, ratios


def bench_config(name: str, batch: int, iters: int, peaks: dict[str, float], tmpdir: Path,
                 memory: PeakRSS, bf16: bool = True, device: torch.device | None = None) -> list[dict]:
    device = device or torch.device("cpu")
    plain, fast, source = build_pair(name, tmpdir)
    plain, fast = plain.to(device), fast.to(device)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(batch, 1, 30, 64, 44, generator=gen) > 0.5).float().to(device)
    labels = (torch.arange(batch) % max(2, batch // 4)).to(device)

    # Correctness first: eval embeddings of the two implementations must agree.
    plain.eval()
    fast.eval()
    with torch.no_grad():
        ref = plain(x)
        got = embed(fast, x)
        got_bf16 = make_infer(fast, x, True)().float() if bf16 else None
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    cos_bf16 = float(F.cosine_similarity(got_bf16, got, dim=1).min()) if bf16 else float("nan")
    if err > 1e-3:
        raise SystemExit(f"{name}: fast and straightforward embeddings differ (max rel err {err:.2e})")

    # Per-sequence FLOPs of the math, counted on the straightforward model with 2 sequences
    # (train-mode BatchNorm1d needs more than one sample).
    infer_flops = count_flops(lambda: make_infer(plain, x[:2], False)()) / 2
    plain_train = copy.deepcopy(plain).train()
    train_flops = count_flops(lambda: make_train_step(plain_train, x[:2], torch.tensor([0, 1], device=device),
                                                      False)()) / 2

    rows = []
    for mode in ("inference", "train"):
        if mode == "train":
            plain.train()
            fast.train()
            fns = {"plain": make_train_step(plain, x, labels, False),
                   "fp32": make_train_step(fast, x, labels, False),
                   "bf16": make_train_step(fast, x, labels, True)}
            flops = train_flops * batch
        else:
            plain.eval()
            fast.eval()
            fns = {"plain": make_infer(plain, x, False), "fp32": make_infer(fast, x, False),
                   "bf16": make_infer(fast, x, True)}
            flops = infer_flops * batch
        if not bf16:
            del fns["bf16"]
        secs, ratios = alternate(fns, iters)
        mem = {k: memory.measure(fn) for k, fn in fns.items()} if device.type == "cpu" else dict.fromkeys(fns)
        row = {"config": name, "mode": mode, "source": source, "max_rel_err": err, "cos_bf16": cos_bf16,
               "gflop_per_seq": flops / batch / 1e9}
        for k in fns:
            row[f"{k}_seq_s"] = batch / secs[k]
            row[f"{k}_mem_mb"] = mem[k]
            peak = peaks["bf16"] if k == "bf16" else peaks["fp32"]
            row[f"{k}_mfu"] = flops / secs[k] / (peak * 1e9)
        row["speedup_fp32"] = ratios["fp32"]
        row["speedup_fp32_cpu"] = ratios["fp32_cpu"]
        row["speedup_bf16"] = ratios["bf16"] if bf16 else float("nan")
        if not bf16:
            row.update(bf16_seq_s=float("nan"), bf16_mem_mb=None, bf16_mfu=float("nan"))
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def fmt_mem(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def format_row(r: dict) -> str:
    return (f"| {r['config']} | {r['mode']} | {r['plain_seq_s']:.2f} | {r['fp32_seq_s']:.2f} | "
            f"{r['speedup_fp32']:.2f}x | {r['bf16_seq_s']:.2f} | {r['speedup_bf16']:.2f}x | "
            f"{100 * r['plain_mfu']:.1f}/{100 * r['fp32_mfu']:.1f}/{100 * r['bf16_mfu']:.1f} | "
            f"{fmt_mem(r['plain_mem_mb'])}/{fmt_mem(r['fp32_mem_mb'])}/{fmt_mem(r['bf16_mem_mb'])} | "
            f"{r['cos_bf16']:.4f} | {r['max_rel_err']:.1e} | {r['speedup_fp32_cpu']:.2f}x |")


HEADER = ("| config | mode | straightforward seq/s | fast fp32 seq/s | x | fast bf16 seq/s | x | "
          "MFU % (sf/fp32/bf16) | peak RSS growth MB (sf/fp32/bf16) | bf16 cos (min) | fp32 max rel err | "
          "fp32 x in CPU time |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def bench_loader(cache_dir: str, batch: int, steps: int, workers: int) -> None:
    """Loader samples/s alone, then the share of a fast training step spent waiting for data."""
    from lstc_gait.data import TrainSequenceDataset, open_cache
    cache = open_cache(cache_dir)
    n = len(cache)
    if n == 0:
        print(f"loader: cache {cache_dir} is empty; skipped")
        return
    subjects = cache.index["subject"].astype(str)
    codes = {s: i for i, s in enumerate(sorted(subjects.unique()))}
    labels = [codes[s] for s in subjects]
    ds = TrainSequenceDataset(cache, list(range(n)), labels, num_frames=30, sampling="ordered", width=44)
    keys = [[((i * batch + j) % n, 1000 * i + j) for j in range(batch)] for i in range(steps + 2)]

    def loader():
        return torch.utils.data.DataLoader(ds, batch_sampler=keys, num_workers=workers,
                                           persistent_workers=False)

    t0 = time.perf_counter()
    count = 0
    for clips, _ in loader():
        count += clips.shape[0]
    alone = count / (time.perf_counter() - t0)

    base = 16
    plain, fast, _ = build_pair(f"b{base}-lstc-hard", Path(tempfile.mkdtemp()))
    fast.train()
    classifier = nn.Linear(256, len(codes))
    opt = torch.optim.AdamW(list(fast.parameters()) + list(classifier.parameters()), lr=1e-4)
    wait = total = 0.0
    it = iter(loader())
    next(it)  # warm-up batch (worker start-up is not steady state)
    t_start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        clips, y = next(it)
        wait += time.perf_counter() - t0
        xb = clips.float().div_(255).unsqueeze(1)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(classifier(embed(fast, xb)), y)
        loss.backward()
        opt.step()
    total = time.perf_counter() - t_start
    print(f"loader ({cache_dir}, {workers} workers, batch {batch}): {alone:.1f} samples/s alone; "
          f"waiting for data = {100 * wait / total:.1f}% of {steps} fp32 training steps "
          f"({total / steps:.2f} s/step)")


ALLOCATORS = {
    "default": {},
    # glibc: keep freed blocks up to 1 GiB in the heap (no fresh mmap + page faults per big tensor)
    "keep-freed": {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 62)},
    "jemalloc": {"LD_PRELOAD": "libjemalloc.so.2"},
    "tcmalloc": {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},
}


def _find_library(name: str) -> str | None:
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                   "/usr/local/lib"):
        path = Path(folder) / name
        if path.exists():
            return str(path)
    return None


def allocator_description() -> str:
    preload = os.environ.get("LD_PRELOAD", "")
    malloc_env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    if preload:
        return f"LD_PRELOAD={preload}"
    if malloc_env:
        return "glibc with " + " ".join(f"{k}={v}" for k, v in sorted(malloc_env.items()))
    return "glibc defaults (as in a plain Python process)"


def rerun_with_allocator(name: str, argv: list[str]) -> int:
    """Run this script again in a subprocess with the allocator's environment (it must be set at start-up)."""
    env = dict(os.environ, LSTC_GAIT_BENCH_ALLOCATOR=name, **ALLOCATORS[name])
    if "LD_PRELOAD" in ALLOCATORS[name]:
        path = _find_library(ALLOCATORS[name]["LD_PRELOAD"])
        if path is None:
            raise SystemExit(f"--allocator {name}: {ALLOCATORS[name]['LD_PRELOAD']} not found "
                             f"(e.g. apt-get install {'libjemalloc2' if name == 'jemalloc' else 'libgoogle-perftools4'})")
        env["LD_PRELOAD"] = path
    return subprocess.call([sys.executable, os.path.abspath(__file__), *argv], env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 4, 1 iteration, b16-lstc-hard only (< 2 min)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per batch (default 16; quick 4)")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per side (default 5; quick 2)")
    ap.add_argument("--configs", default=None,
                    help=f"comma list of b<base>-<lstc|dynamic>-<hard|soft>, or none (default all: {','.join(ALL_CONFIGS)})")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--cache", default=None, help="lstc_gait data cache dir for the loader measurement")
    ap.add_argument("--loader-workers", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="bf16 autocast columns: auto = only where bf16 is native (CPU) or supported (CUDA)")
    ap.add_argument("--no-bf16", action="store_true", help="same as --bf16 off")
    ap.add_argument("--allocator", choices=tuple(ALLOCATORS), default="default",
                    help="re-run in a subprocess with this allocator: keep-freed (glibc MALLOC_MMAP_THRESHOLD_ / "
                         "MALLOC_TRIM_THRESHOLD_), jemalloc or tcmalloc (LD_PRELOAD, if installed)")
    args = ap.parse_args(argv)
    if args.allocator != "default" and os.environ.get("LSTC_GAIT_BENCH_ALLOCATOR") != args.allocator:
        return rerun_with_allocator(args.allocator, sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    batch = args.batch or (4 if args.quick else 16)
    iters = args.iters or (1 if args.quick else 5)
    if args.configs == "none":  # loader measurement only
        configs = []
    else:
        configs = args.configs.split(",") if args.configs else (["b16-lstc-hard"] if args.quick else ALL_CONFIGS)
    for c in configs:
        parse_config(c)
    if batch < 2 or iters < 1:
        raise SystemExit("--batch must be >= 2 (train-mode BatchNorm) and --iters >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(machine_line())
    print(cpu_flags_line())
    from lstc_gait import ops
    from lstc_gait.models.fastops import cpu_bf16_supported

    native_bf16 = cpu_bf16_supported()
    print(f"bf16 native on this CPU: {native_bf16} (oneDNN bf16 support: "
          f"{bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}; native also needs avx512_bf16/amx_bf16)")
    print(f"lstc_gait C++ kernels: {'built and used' if ops.load_library() else 'unavailable (PyTorch formulation)'}")
    print(f"allocator: {allocator_description()}")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); the ops run their "
              "PyTorch formulation there")
        bf16_ok = torch.cuda.is_bf16_supported()
    else:
        bf16_ok = native_bf16
    use_bf16 = not args.no_bf16 and (args.bf16 == "on" or (args.bf16 == "auto" and bf16_ok))
    print(f"bf16 columns: {'measured' if use_bf16 else 'skipped (not native here; --bf16 on forces them)'}")
    peaks = {"fp32": matmul_peak(torch.float32, device=device),
             "bf16": matmul_peak(torch.bfloat16, device=device) if use_bf16 else float("nan")}
    print(f"matmul peak (1024^3 mm, best of ~1 s): fp32 {peaks['fp32']:.1f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.1f} GFLOP/s")
    memory = PeakRSS()
    print(f"batch {batch}, T=30, 64x44, {iters} timed iterations per side (medians), alternating; "
          f"straightforward = fp32 baseline of both ratios; memory = "
          f"{'growth of peak RSS (VmHWM) over one step' if memory.available else 'unavailable'}")
    if configs:
        print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for name in configs:
            bench_config(name, batch, iters, peaks, Path(tmp), memory, bf16=use_bf16, device=device)
    if args.cache:
        bench_loader(args.cache, batch, steps=3 if args.quick else 8, workers=args.loader_workers)
    else:
        print("loader: skipped (no --cache given)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
