"""The shakespeare_char recipe's training step in PyTorch, for a side-by-side speed comparison.

Same model as nlpkit's gpt2 (pre-LayerNorm, learned positions, causal attention, GELU MLP, tied
head, no bias unless `--bias`, no dropout), same batch (12 x 64 tokens, vocabulary 65), AdamW
with global-norm clipping at 1.0. `--device cuda` runs it on a GPU (bench/gpu.sh). Prints one
JSON line: median milliseconds per step over the timed steps.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_timing import add_compile_option, compiled, report_step_time


class Block(nn.Module):
    def __init__(self, width, heads, bias):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width, bias=bias)
        self.c_attn = nn.Linear(width, 3 * width, bias=bias)
        self.attn_proj = nn.Linear(width, width, bias=bias)
        self.ln_2 = nn.LayerNorm(width, bias=bias)
        self.c_fc = nn.Linear(width, 4 * width, bias=bias)
        self.mlp_proj = nn.Linear(4 * width, width, bias=bias)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class Gpt(nn.Module):
    def __init__(self, vocab, block, layers, heads, width, bias=False):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, heads, bias) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, bias=bias)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--bias", action="store_true", help="biases in the linear and norm layers")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--tf32", action="store_true",
                   help="let CUDA matmuls use TF32 (PyTorch's default is full fp32)")
    add_compile_option(p)
    args = p.parse_args()
    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.fp32_precision = "tf32" if args.tf32 else "ieee"
    device = torch.device(args.device)
    model = Gpt(args.vocab, args.block, args.layers, args.heads, args.width, args.bias).to(device)
    decay = [q for n, q in model.named_parameters() if q.dim() >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [q for n, q in model.named_parameters() if not (q.dim() >= 2 and "wte" not in n and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    data = torch.randint(0, args.vocab, (args.batch, args.block + 1), device=device)
    x, y = data[:, :-1], data[:, 1:]

    forward = compiled(model, args)

    def step():
        logits = forward(x)
        loss = F.cross_entropy(logits.view(-1, args.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    report_step_time(model, step, args.warmup, args.steps)

if __name__ == "__main__":
    main()
