"""Expert-gated dynamic 3D convolution (the "dynamic" joint branch).

Per sample ``n`` the kernel is ``K_n = sum_e g_ne W_e`` with ``g_n = softmax(gate(avgpool(x_n)) / tau)``
over ``E`` experts; the output is a dense 'same'-padded 3D convolution with ``K_n`` (no BN/ReLU).

Source: the gating follows Dynamic Convolution (Chen et al., "Dynamic Convolution: Attention over
Convolution Kernels", CVPR 2020): a global average pool, FC -> ReLU -> FC, and a *softmax* with a
temperature over the experts, so the attention weights sum to 1, and the kernels are aggregated
before one convolution. CondConv (Yang et al. 2019) routes with independent sigmoids instead;
that is not what this module does. Differences from Chen et al.: a fixed temperature (no
annealing) and no BN after the convolution (the block's fuse normalises). The dynamic joint branch
itself is the original lstc-gait project's option (/work/shared/reference/original-lstc-gait-README.md).

Fast form: convolution is linear in the kernel, so ``conv(x_n, sum_e g_ne W_e) = sum_e g_ne conv(x_n, W_e)``.
In training one dense convolution with the experts stacked as ``E * m`` output channels serves the
whole batch, and a per-sample weighted sum over ``E`` finishes it (one efficient conv and its
backward). At inference without autograd each sample's kernel is mixed first and convolved on its
own through oneDNN: E times fewer multiply-adds, 4x faster on CPU at the model's shapes.

State-dict keys: ``weight`` (E, m, in, kT, kH, kW), ``gate.0.*`` / ``gate.2.*`` (1x1x1 convs),
optional ``bias`` ((m,) or (E, m)). Loading also accepts Linear-shaped (2D) gate weights and gate
convs stored without bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convbn import conv3d_inference
from .memory_format import recording_graph


class DynamicConv3d(nn.Module):
    """Dynamic 3D conv: ``x (N, C_in, T, H, W) float -> (N, C_out, T, H, W)``, experts mixed per sample.

    Chen et al. 2020 (see the module docstring): ``K_n = sum_e softmax(gate(avgpool(x_n)) / tau)_e W_e``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out`` (``m``).
        kernel_size: ``(kT, kH, kW)``, odd positive ints ('same' zero padding).
        num_experts: ``E >= 1`` expert kernels.
        gate_hidden: Hidden width of the gate; 0 or negative: ``max(16, C_in // 2)``.
        temperature: Softmax temperature ``tau > 0`` (larger: flatter expert weights).
        bias: Add a learnable ``(C_out,)`` bias (checkpoints may also load a per-expert ``(E, C_out)`` one).

    Raises:
        ValueError: When ``num_experts < 1``, ``temperature <= 0`` or ``kernel_size`` is not three
            odd positive ints.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] = (3, 3, 3),
                 num_experts: int = 4, gate_hidden: int = 0, temperature: float = 1.0, bias: bool = False) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"dynamic_experts must be >= 1, got {num_experts}")
        if temperature <= 0:
            raise ValueError(f"dynamic_temperature must be > 0, got {temperature}")
        k = tuple(int(v) for v in kernel_size)
        if len(k) != 3 or any(v < 1 or v % 2 == 0 for v in k):
            raise ValueError(f"DynamicConv3d kernel_size must be three odd positive ints, got {kernel_size!r}")
        self.in_channels, self.out_channels, self.num_experts = in_channels, out_channels, num_experts
        self.kernel_size: tuple[int, int, int] = k  # type: ignore[assignment]
        self.temperature = float(temperature)
        self.gate_hidden = int(gate_hidden) if gate_hidden and gate_hidden > 0 else max(16, in_channels // 2)
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels, *k))
        self.gate = nn.Sequential(
            nn.Conv3d(in_channels, self.gate_hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(self.gate_hidden, num_experts, 1),
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the expert kernels: Kaiming-uniform for a ReLU network, ``U(-b, b)``, ``b = sqrt(6 / fan_in)``.

        ``fan_in = C_in * kT * kH * kW`` per expert. The gate convs and the bias keep their values.
        """
        fan_in = self.in_channels * math.prod(self.kernel_size)
        bound = math.sqrt(6.0 / fan_in)  # Kaiming-uniform for a ReLU network, per expert
        nn.init.uniform_(self.weight, -bound, bound)

    def gate_weights(self, x: Tensor, time_mask: Tensor | None = None) -> Tensor:
        """Per-sample expert weights ``softmax(FC(ReLU(FC(avgpool(x)))) / tau)``.

        Args:
            x: ``(N, C_in, T, H, W)`` float activations.
            time_mask: ``(N, 1, T, 1, 1)`` float mask, 1 at valid frames: the global average pool
                covers valid frames only; None: all frames.

        Returns:
            ``(N, E)`` in ``x``'s dtype, rows summing to 1 (softmax computed in float32).

        Raises:
            RuntimeError: When ``x`` has not ``C_in`` channels (from the gate's linear maps).
        """
        if time_mask is None:
            pooled = x.mean(dim=(2, 3, 4))
        else:
            valid = time_mask.sum(dim=(2, 3, 4)).clamp_min(1.0)  # (N, 1) frames per sample
            pooled = (x * time_mask).sum(dim=(2, 3, 4)) / (valid * x.shape[3] * x.shape[4])
        g0, g2 = self.gate[0], self.gate[2]
        hidden = F.relu(F.linear(pooled, g0.weight.flatten(1), g0.bias))
        logits = F.linear(hidden, g2.weight.flatten(1), g2.bias)
        return torch.softmax(logits.float() / self.temperature, dim=1).to(x.dtype)

    def forward(self, x: Tensor, time_mask: Tensor | None = None) -> Tensor:
        """Convolve each sample with its own mixed kernel.

        Training (or any autograd): one convolution with the ``E * C_out`` stacked expert channels,
        then the per-sample weighted sum; CPU float32 inference without autograd: each sample's
        kernel is mixed first and convolved alone (E times fewer multiply-adds). Same values.

        Args:
            x: ``(N, C_in, T, H, W)`` float activations.
            time_mask: ``(N, 1, T, 1, 1)`` valid-frame mask for the gate's pool, or None.

        Returns:
            ``(N, C_out, T, H, W)``, ``x``'s dtype (no BN, no ReLU).

        Raises:
            ValueError: When ``x`` is not 5-D with ``C_in`` channels.
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"DynamicConv3d expects (N, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        n = x.shape[0]
        e, m = self.num_experts, self.out_channels
        g = self.gate_weights(x, time_mask)
        pad = tuple(k // 2 for k in self.kernel_size)
        if self._per_sample_inference(x):
            # Without autograd: mix each sample's kernel first, then one conv of m channels per sample,
            # E times fewer multiply-adds than convolving with all E*m expert channels.
            kernels = torch.einsum("ne,emc...->nmc...", g.to(self.weight.dtype), self.weight)
            out = torch.cat([conv3d_inference(x[i:i + 1], kernels[i], None, padding=pad, relu=False)
                             for i in range(n)])
        else:
            y = F.conv3d(x, self.weight.flatten(0, 1), padding=pad)  # (N, E*m, T, H, W)
            y = y.unflatten(1, (e, m))
            out = torch.einsum("ne,nemthw->nmthw", g.to(y.dtype), y)
        if self.bias is not None:
            b = self.bias if self.bias.dim() == 1 else g.to(self.bias.dtype) @ self.bias  # (m,) or (N, m)
            out = out + (b.view(1, m, 1, 1, 1) if b.dim() == 1 else b.view(n, m, 1, 1, 1)).to(out.dtype)
        return out

    def _per_sample_inference(self, x: Tensor) -> bool:
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        return (not needs_grad and not recording_graph() and x.device.type == "cpu"
                and x.dtype == self.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # Tolerate equivalent encodings of the same math written by other code.
        for idx in (0, 2):
            wkey, bkey = f"{prefix}gate.{idx}.weight", f"{prefix}gate.{idx}.bias"
            w = state_dict.get(wkey)
            if isinstance(w, Tensor) and w.dim() == 2:
                state_dict[wkey] = w.reshape(*w.shape, 1, 1, 1)
            w = state_dict.get(wkey)
            if isinstance(w, Tensor) and bkey not in state_dict:
                state_dict[bkey] = w.new_zeros(w.shape[0])  # a bias-free gate conv == zero bias
        bkey = f"{prefix}bias"
        b = state_dict.get(bkey)
        if isinstance(b, Tensor):
            if b.numel() == self.num_experts * self.out_channels and b.dim() in (1, 2):
                b = b.reshape(self.num_experts, self.out_channels)
            elif not (b.dim() == 1 and b.numel() == self.out_channels):
                error_msgs.append(
                    f"{bkey}: expected shape ({self.out_channels},) or ({self.num_experts}, {self.out_channels}), "
                    f"got {tuple(b.shape)}")
                b = None
            if b is not None:
                state_dict[bkey] = b
                if self.bias is None or self.bias.shape != b.shape:
                    self.bias = nn.Parameter(torch.zeros_like(b, dtype=self.weight.dtype,
                                                              device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        """Shapes and gate settings for ``repr(module)``.

        Returns:
            ``"C_in, C_out, kernel_size=..., experts=..., gate_hidden=..., temperature=..."``.
        """
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"experts={self.num_experts}, gate_hidden={self.gate_hidden}, temperature={self.temperature}")
