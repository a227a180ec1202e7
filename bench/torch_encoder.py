"""A BERT-base-shaped encoder layer stack's training step in PyTorch, the twin of
`examples/model_step.rs --model encoder`, for a side-by-side speed comparison.

Post-LayerNorm layers as in BERT (width 768, 12 heads, feed-forward 3072, GELU, biases), no
dropout, input `[batch, seq, width]` drawn once; the loss is the mean squared output. AdamW.
Prints one JSON line: median milliseconds per step over the timed steps.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_timing import add_compile_option, compiled, report_step_time


class EncoderLayer(nn.Module):
    def __init__(self, width, heads, ffn):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm_1 = nn.LayerNorm(width)
        self.ffn_in = nn.Linear(width, ffn)
        self.ffn_out = nn.Linear(ffn, width)
        self.norm_2 = nn.LayerNorm(width)

    def forward(self, x, mask=None):
        """`mask` `[batch, 1, 1, seq]`, true where a key may be attended (None: all)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.norm_1(x + self.out(y.transpose(1, 2).reshape(b, t, c)))
        return self.norm_2(x + self.ffn_out(F.gelu(self.ffn_in(x))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=3072)
    add_compile_option(p)
    args = p.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(*(EncoderLayer(args.width, args.heads, args.ffn) for _ in range(args.layers)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    x = torch.randn(args.batch, args.seq, args.width)

    forward = compiled(model, args)

    def step():
        loss = forward(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    report_step_time(model, step, args.warmup, args.steps)

if __name__ == "__main__":
    main()
