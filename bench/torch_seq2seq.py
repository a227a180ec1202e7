"""The cmn_en recipe's encoder-decoders' training step in PyTorch, the twins of
`examples/model_step.rs --model transformer|gru`, for a side-by-side speed comparison.

- `transformer`: pre-LayerNorm Transformer as nlpkit's transformer_seq2seq (fairseq's layout):
  scaled embeddings plus sinusoidal positions, fused QKV projections, GELU feed-forward, final
  LayerNorms, the output projection tied to the target embedding; the source padding mask is
  passed to every attention over the source, as a real batch needs.
- `gru`: nlpkit's rnn_seq2seq: bidirectional GRU encoder, its final states bridged (linear,
  tanh) to the decoder's, additive attention, a GRU cell fed the previous token and the
  context, a tanh deep output tied to the target embedding.

Random tokens, no dropout, label-smoothed (0.1) cross-entropy ignoring padding (id 0), AdamW.
Prints one JSON line: median milliseconds per step over the timed steps.
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_timing import add_compile_option, compiled, report_step_time

SOURCE_VOCAB, TARGET_VOCAB = 4000, 3000


def sinusoidal(length, width):
    """fairseq's layout: sines in the first half of each row, cosines in the second."""
    half = width // 2
    rates = torch.exp(torch.arange(half) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(length)[:, None] * rates[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def attend(q_in, kv_in, heads, mask=None, causal=False):
    """Multi-head attention on already projected `q_in` `[b, tq, c]` and `kv_in` `[b, tk, 2c]`."""
    b, tq, c = q_in.shape
    k, v = kv_in.split(c, dim=2)
    split = lambda z: z.view(b, z.shape[1], heads, c // heads).transpose(1, 2)
    y = F.scaled_dot_product_attention(split(q_in), split(k), split(v), attn_mask=mask,
                                       is_causal=causal)
    return y.transpose(1, 2).reshape(b, tq, c)


class EncoderLayer(nn.Module):
    def __init__(self, width, heads, ffn):
        super().__init__()
        self.heads = heads
        self.norm_1, self.norm_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ffn_in, self.ffn_out = nn.Linear(width, ffn), nn.Linear(ffn, width)

    def forward(self, x, mask):
        q, kv = self.qkv(self.norm_1(x)).tensor_split([x.shape[2]], dim=2)
        x = x + self.out(attend(q, kv, self.heads, mask))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.norm_2(x))))


class DecoderLayer(nn.Module):
    def __init__(self, width, heads, ffn):
        super().__init__()
        self.heads = heads
        self.norm_self, self.norm_cross, self.norm_ffn = (nn.LayerNorm(width) for _ in range(3))
        self.self_qkv, self.self_out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.cross_q, self.cross_kv = nn.Linear(width, width), nn.Linear(width, 2 * width)
        self.cross_out = nn.Linear(width, width)
        self.ffn_in, self.ffn_out = nn.Linear(width, ffn), nn.Linear(ffn, width)

    def forward(self, x, memory, mask):
        q, kv = self.self_qkv(self.norm_self(x)).tensor_split([x.shape[2]], dim=2)
        x = x + self.self_out(attend(q, kv, self.heads, causal=True))
        q = self.cross_q(self.norm_cross(x))
        x = x + self.cross_out(attend(q, self.cross_kv(memory), self.heads, mask))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.norm_ffn(x))))


class Transformer(nn.Module):
    def __init__(self, layers, width=256, heads=4, ffn=1024):
        super().__init__()
        self.width = width
        self.source_embed = nn.Embedding(SOURCE_VOCAB, width)
        self.target_embed = nn.Embedding(TARGET_VOCAB, width)
        self.encoder = nn.ModuleList(EncoderLayer(width, heads, ffn) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderLayer(width, heads, ffn) for _ in range(layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(width), nn.LayerNorm(width)

    def embed(self, embedding, tokens):
        positions = sinusoidal(tokens.shape[1], self.width)
        return embedding(tokens) * math.sqrt(self.width) + positions

    def forward(self, source, target_in):
        # True where a key may be attended: every source token but padding.
        mask = (source != 0)[:, None, None, :]
        x = self.embed(self.source_embed, source)
        for layer in self.encoder:
            x = layer(x, mask)
        memory = self.encoder_norm(x)
        y = self.embed(self.target_embed, target_in)
        for layer in self.decoder:
            y = layer(y, memory, mask)
        return self.decoder_norm(y) @ self.target_embed.weight.t()


class Gru(nn.Module):
    def __init__(self, width=256):
        super().__init__()
        self.source_embed = nn.Embedding(SOURCE_VOCAB, width)
        self.target_embed = nn.Embedding(TARGET_VOCAB, width)
        self.encoder = nn.GRU(width, width, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * width, width)
        self.attention_key = nn.Linear(2 * width, width, bias=False)
        self.attention_query = nn.Linear(width, width)
        self.attention_score = nn.Linear(width, 1, bias=False)
        self.decoder = nn.GRUCell(3 * width, width)
        self.deep_output = nn.Linear(4 * width, width)

    def forward(self, source, target_in):
        padding = source == 0
        states, final = self.encoder(self.source_embed(source))
        h = torch.tanh(self.bridge(torch.cat([final[0], final[1]], dim=1)))
        keys = self.attention_key(states)
        embedded = self.target_embed(target_in)
        outputs = []
        for t in range(target_in.shape[1]):
            q = self.attention_query(h)[:, None, :]
            scores = self.attention_score(torch.tanh(keys + q)).squeeze(2)
            weights = F.softmax(scores.masked_fill(padding, -1e9), dim=1)
            context = (weights[:, None, :] @ states).squeeze(1)
            e = embedded[:, t]
            h = self.decoder(torch.cat([e, context], dim=1), h)
            outputs.append(torch.tanh(self.deep_output(torch.cat([h, context, e], dim=1))))
        return torch.stack(outputs, dim=1) @ self.target_embed.weight.t()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["transformer", "gru"], required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--layers", type=int, default=2,
                   help="encoder and decoder layers (the Transformer; the GRU has one)")
    add_compile_option(p)
    args = p.parse_args()
    torch.manual_seed(0)
    model = Transformer(args.layers) if args.model == "transformer" else Gru()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-4)
    source = torch.randint(1, SOURCE_VOCAB, (args.batch, args.seq))
    target = torch.randint(1, TARGET_VOCAB, (args.batch, args.seq + 1))
    target_in, target_out = target[:, :-1], target[:, 1:].reshape(-1)
    forward = compiled(model, args)

    def step():
        logits = forward(source, target_in)
        loss = F.cross_entropy(logits.reshape(-1, TARGET_VOCAB), target_out,
                               label_smoothing=0.1, ignore_index=0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    report_step_time(model, step, args.warmup, args.steps)


if __name__ == "__main__":
    main()
