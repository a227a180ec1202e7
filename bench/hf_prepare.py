"""nlpkit prepare-data's work done in Python with HF tokenizers, for a side-by-side speed figure.

Reads a UTF-8 text, splits it at line boundaries (first 90% train, 5% valid, 5% test), trains a
byte-level BPE on the train part (or takes its characters for `--tokenizer char`), encodes each
split and writes it as uint16 tokens. The same steps as `nlpkit prepare-data` with
`tokenizer: {type: bpe, vocab_size: N}` (ByteLevel pre-tokenizer, min_frequency 2).
"""
import argparse
import os

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def split_at_lines(text, fractions=(0.9, 0.05)):
    parts, start = [], 0
    for fraction in fractions:
        end = text.find("\n", start + int(len(text) * fraction))
        end = len(text) if end < 0 else end + 1
        parts.append(text[start:end])
        start = end
    parts.append(text[start:])
    return parts


def build(kind, vocab_size, train_text, all_text):
    if kind == "char":
        vocab = {c: i for i, c in enumerate(sorted(set(all_text)))}
        return Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(train_text.splitlines(keepends=True), trainer)
    return tokenizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("out_dir")
    p.add_argument("--tokenizer", choices=["bpe", "char"], default="bpe")
    p.add_argument("--vocab-size", type=int, default=4096)
    args = p.parse_args()
    with open(args.input, encoding="utf-8") as f:
        text = f.read()
    splits = split_at_lines(text)
    tokenizer = build(args.tokenizer, args.vocab_size, splits[0], text)
    os.makedirs(args.out_dir, exist_ok=True)
    tokenizer.save(os.path.join(args.out_dir, "tokenizer.json"))
    for name, part in zip(["train", "valid", "test"], splits):
        lines = part.splitlines(keepends=True)
        ids = [i for e in tokenizer.encode_batch_fast(lines) for i in e.ids]
        np.array(ids, dtype=np.uint16).tofile(os.path.join(args.out_dir, f"{name}.bin"))


if __name__ == "__main__":
    main()
