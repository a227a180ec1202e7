"""BERT-base pretraining's step in PyTorch, the twin of `examples/model_step.rs --model
bert-mlm`, for a side-by-side speed comparison.

BERT-base (12 post-LayerNorm layers of bench/torch_encoder.py, 768 wide, vocabulary 30522):
token, segment and position embeddings with a LayerNorm; the masked-LM head (dense, GELU,
LayerNorm, the tied vocabulary projection plus a bias) on the masked positions only (every 7th,
BERT's 15%), as nlpkit and NVIDIA's BERT do; next-sentence prediction from the pooled [CLS].
The padding mask (no padding here) is passed to the attention as a real batch needs. Random
tokens, no dropout, AdamW. Prints one JSON line: median milliseconds per step.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_encoder import EncoderLayer
from torch_timing import add_compile_option, compiled, report_step_time

VOCAB, WIDTH = 30522, 768


class BertPretraining(nn.Module):
    def __init__(self, layers, heads=12, ffn=3072, max_len=512):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.segments = nn.Embedding(2, WIDTH)
        self.positions = nn.Embedding(max_len, WIDTH)
        self.embedding_norm = nn.LayerNorm(WIDTH, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(WIDTH, heads, ffn) for _ in range(layers))
        self.pooler = nn.Linear(WIDTH, WIDTH)
        self.sentence_head = nn.Linear(WIDTH, 2)
        self.mlm_dense = nn.Linear(WIDTH, WIDTH)
        self.mlm_norm = nn.LayerNorm(WIDTH, eps=1e-12)
        self.mlm_bias = nn.Parameter(torch.zeros(VOCAB))

    def forward(self, ids, segments, padding, masked):
        b, t = ids.shape
        positions = torch.arange(t)[None, :]
        x = self.tokens(ids) + self.segments(segments) + self.positions(positions)
        x = self.embedding_norm(x)
        mask = (~padding)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        sentence = self.sentence_head(torch.tanh(self.pooler(x[:, 0])))
        picked = x.reshape(b * t, WIDTH)[masked]
        h = self.mlm_norm(F.gelu(self.mlm_dense(picked)))
        return h @ self.tokens.weight.t() + self.mlm_bias, sentence


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=12)
    add_compile_option(p)
    args = p.parse_args()
    torch.manual_seed(0)
    model = BertPretraining(args.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(1, VOCAB, (args.batch, args.seq))
    segments = torch.zeros_like(ids)
    padding = torch.zeros_like(ids, dtype=torch.bool)
    masked = torch.arange(0, args.batch * args.seq, 7)
    mlm_targets = torch.randint(1, VOCAB, (len(masked),))
    nsp_targets = torch.randint(0, 2, (args.batch,))
    forward = compiled(model, args)

    def step():
        mlm, sentence = forward(ids, segments, padding, masked)
        loss = F.cross_entropy(mlm, mlm_targets) + F.cross_entropy(sentence, nsp_targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    report_step_time(model, step, args.warmup, args.steps)


if __name__ == "__main__":
    main()
