"""A batched LSTM recurrence with a hand-written backward pass.

The synthetic tables train many small BLSTMs (20 units, batch 100) on CPU,
where PyTorch's LSTM spends its time on per-operation overhead and padding.
:func:`lstm_recurrence` runs the recurrence of G independent LSTMs (seeds x
directions) at once, with no autograd graph inside the loop, only over the
sequences still active at each frame (sequences sorted by decreasing length),
and with tanh computed as 2·sigmoid(2x) − 1 (PyTorch's CPU tanh is several
times slower than its sigmoid). The tests check values and gradients against
``torch.nn.LSTM``.

Dimension symbols legend:
  G: independent LSTMs (members x directions)
  B: batch size
  T: frames
  H: units
"""
from typing import Optional, Sequence

import torch

__all__ = ["lstm_recurrence"]


class _LstmRecurrence(torch.autograd.Function):
    """Gates in the order (input, forget, output, cell): sigmoid on the first 3H columns, tanh on the last H.

    Internally time-major and batch-second, (T, B, G, .), so the active
    sequences of a frame are one contiguous block. Every ``bmm`` gets contiguous
    operands: with strided ones PyTorch's multi-threaded CPU ``bmm`` takes
    milliseconds even for tiny matrices.
    """

    @staticmethod
    def forward(ctx, gx: torch.Tensor, w_hh: torch.Tensor, active: Sequence[int]) -> torch.Tensor:
        G, B, T, H4 = gx.shape
        H = H4 // 4
        # one sigmoid over all 4H columns: double the cell-gate columns once, tanh(x) = 2 sigmoid(2x) - 1
        scale = gx.new_ones(H4)
        scale[3 * H :] = 2.0
        gx2 = (gx * scale).permute(2, 1, 0, 3).contiguous()  # (T, B, G, 4H)
        w2 = (w_hh * scale).contiguous()
        acts = torch.empty_like(gx2)  # activated gates
        cs = gx.new_empty(T + 1, B, G, H)  # cs[t + 1] = cell state after frame t
        cs[0].zero_()
        hs = gx.new_zeros(T + 1, B, G, H)  # zero where inactive
        tcs = gx.new_empty(T, B, G, H)  # tanh(c)
        for t in range(T):
            n = active[t]
            if n == 0:
                break
            a = acts[t, :n]
            rec = torch.bmm(hs[t, :n].transpose(0, 1).contiguous(), w2)  # (G, n, 4H)
            torch.add(gx2[t, :n], rec.transpose(0, 1), out=a)
            a.sigmoid_()
            g = a[..., 3 * H :]
            g.mul_(2.0).sub_(1.0)
            c = cs[t + 1, :n]
            torch.addcmul(a[..., H : 2 * H] * cs[t, :n], a[..., :H], g, out=c)
            tc = tcs[t, :n]
            torch.sigmoid(c * 2.0, out=tc)
            tc.mul_(2.0).sub_(1.0)
            torch.mul(a[..., 2 * H : 3 * H], tc, out=hs[t + 1, :n])
        ctx.save_for_backward(w_hh, acts, cs, hs, tcs)
        ctx.active = list(active)
        return hs[1:].permute(2, 1, 0, 3)  # (G, B, T, H)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        w_hh, acts, cs, hs, tcs = ctx.saved_tensors
        active = ctx.active
        T, B, G, H4 = acts.shape
        H = H4 // 4
        grad_h_all = grad_out.permute(2, 1, 0, 3).contiguous()  # (T, B, G, H)
        d_pre = torch.empty_like(acts)  # gradient w.r.t. the gate pre-activations
        w_t = w_hh.transpose(1, 2).contiguous()
        # sequences past active[t] were inactive at every later frame too: their dc, dh stay 0
        dh = hs.new_zeros(B, G, H)
        dc = hs.new_zeros(B, G, H)
        for t in range(T - 1, -1, -1):
            n = active[t]
            d_pre[t, n:].zero_()
            if n == 0:
                continue
            a = acts[t, :n]
            i, f, o, g = a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]
            dh_t = dh[:n] + grad_h_all[t, :n]
            tc = tcs[t, :n]
            dc_t = dc[:n] + dh_t * o * (1.0 - tc * tc)
            dp = d_pre[t, :n]
            torch.mul(dc_t, g, out=dp[..., :H])  # d i
            torch.mul(dc_t, cs[t, :n], out=dp[..., H : 2 * H])  # d f
            torch.mul(dh_t, tc, out=dp[..., 2 * H : 3 * H])  # d o
            torch.mul(dc_t, i, out=dp[..., 3 * H :])  # d g
            # derivative of the activations: a(1-a) for sigmoid, 1-g^2 for tanh
            deriv = a - a * a
            deriv[..., 3 * H :] = 1.0 - g * g
            dp.mul_(deriv)
            torch.mul(dc_t, f, out=dc[:n])
            dh[:n] = torch.bmm(dp.transpose(0, 1).contiguous(), w_t).transpose(0, 1)
        grad_gx = d_pre.permute(2, 1, 0, 3)  # (G, B, T, 4H)
        # d w_hh = sum_t h_{t-1}^T d_pre_t, all frames in one product
        h_prev = hs[:-1].permute(2, 3, 0, 1).reshape(G, H, T * B)
        grad_w = torch.bmm(h_prev, d_pre.permute(2, 0, 1, 3).reshape(G, T * B, H4))
        return grad_gx, grad_w, None


def lstm_recurrence(gx: torch.Tensor, w_hh: torch.Tensor, active: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Hidden states of G LSTMs given their input projections.

    ``gates_t = gx[:, :, t] + h_{t-1} @ w_hh`` with gate columns ordered
    (input, forget, output, cell); ``c_t = f * c_{t-1} + i * g``,
    ``h_t = o * tanh(c_t)``; zero initial states.

    Args:
      gx: Tensor of shape (G, B, T, 4H): input projections plus biases.
      w_hh: Tensor of shape (G, H, 4H): recurrent weights (transposed as in ``h @ w_hh``).
      active: optional T non-increasing counts: at frame t only the first
        ``active[t]`` sequences (along B) are computed; the others output 0 and
        get no gradient (sort sequences by decreasing length to use it).

    Returns:
      Tensor of shape (G, B, T, H).
    """
    if gx.dim() != 4 or w_hh.dim() != 3 or gx.shape[-1] != w_hh.shape[-1] or gx.shape[0] != w_hh.shape[0]:
        raise ValueError(
            f"gx must have shape (G, B, T, 4H) and w_hh (G, H, 4H), got {tuple(gx.shape)} and {tuple(w_hh.shape)}"
        )
    if w_hh.shape[-1] != 4 * w_hh.shape[1]:
        raise ValueError(f"w_hh must have shape (G, H, 4H), got {tuple(w_hh.shape)}")
    B, T = gx.shape[1], gx.shape[2]
    if active is None:
        active = [B] * T
    active = [int(n) for n in active]
    if len(active) != T or any(n < 0 or n > B for n in active) or any(x < y for x, y in zip(active, active[1:])):
        raise ValueError(f"active must be {T} non-increasing counts in [0, {B}], got {active}")
    return _LstmRecurrence.apply(gx, w_hh.contiguous(), active)
