#!/usr/bin/env python3
"""Unigram baseline perplexity for the demo model card (models/README.md).

Reads token ids written by `calpaca tokenize -f` (one line of space-separated ids per text line) for a
training text and a held-out text, estimates p(id) from the training counts with add-one smoothing
over the whole vocabulary, and prints exp(mean NLL) over every held-out token (BOS excluded).
Usage: unigram-baseline.py TRAIN.ids HELDOUT.ids VOCAB_SIZE      (python3 standard library only)
"""
import math
import sys
from collections import Counter


def read_ids(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            for tok in line.split():
                yield int(tok)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    train, heldout, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
    counts = Counter(read_ids(train))
    total = sum(counts.values()) + vocab
    nll, n = 0.0, 0
    for t in read_ids(heldout):
        nll -= math.log((counts.get(t, 0) + 1) / total)
        n += 1
    if n == 0:
        sys.exit("unigram-baseline: no held-out tokens in " + heldout)
    print("unigram baseline: %d training tokens, %d held-out tokens, perplexity %.2f" % (total - vocab, n, math.exp(nll / n)))


if __name__ == "__main__":
    main()
