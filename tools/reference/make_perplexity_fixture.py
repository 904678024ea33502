#!/usr/bin/env python3
"""make_perplexity_fixture.py — reference perplexity of the `sharp` golden model, computed with transformers.

What it computes (deterministic: no randomness; the model is tests/golden/sharp, made by make_golden_models.py):
  1. text = the first lines of tests/fixtures/corpus/sample.txt (whole lines, joined with "\\n") until the text has
     at least N_CHUNKS * N_CTX + 7 tokens;
  2. ids = [BOS] + sentencepiece.encode(text) with tests/fixtures/tokenizers/chinese-llama-2/tokenizer.model
     (the whole text at once, BOS first — llama.cpp's perplexity stream, common_tokenize(ctx, text, true));
  3. llama.cpp's perplexity method: windows k = 0..N_CHUNKS-1 of N_CTX tokens ids[k*N_CTX:(k+1)*N_CTX], the first
     token of each replaced by BOS (1); one forward pass per window with HF LlamaForCausalLM loaded with
     torch_dtype=float32 (float32 compute on the f16 weights on disk); log_softmax in float64; the NLL of
     positions p = N_CTX/2 .. N_CTX-2 predicting window token p+1;
  4. PPL = exp(mean NLL), stderr = PPL * sqrt((mean(NLL^2) - mean(NLL)^2) / (N - 1)).
Writes tests/golden/perplexity/sharp.json: {model, tokenizer, text, ids, n_ctx, n_chunks, bos_id, nll (every scored
token, window by window), chunk_ppl (running PPL after each window), ppl, ppl_stderr, versions}.

Run (seconds):
    /opt/calpaca-ref/bin/python tools/reference/make_perplexity_fixture.py
"""

import json
import math
import os

import numpy as np
import sentencepiece as spm
import torch
import transformers
from transformers import LlamaForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL_DIR = os.path.join(REPO, "tests", "golden", "sharp")
TOKENIZER = os.path.join(REPO, "tests", "fixtures", "tokenizers", "chinese-llama-2", "tokenizer.model")
CORPUS = os.path.join(REPO, "tests", "fixtures", "corpus", "sample.txt")
OUT = os.path.join(REPO, "tests", "golden", "perplexity", "sharp.json")
N_CTX = 32
N_CHUNKS = 4
BOS = 1


def main():
    sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
    lines = open(CORPUS, encoding="utf-8").read().split("\n")
    text, ids = "", []
    for i in range(1, len(lines) + 1):
        text = "\n".join(lines[:i])
        ids = [BOS] + sp.encode(text)
        if len(ids) >= N_CHUNKS * N_CTX + 7:
            break
    assert len(ids) >= N_CHUNKS * N_CTX, "corpus too short"

    model = LlamaForCausalLM.from_pretrained(MODEL_DIR, torch_dtype=torch.float32).eval()
    nll, running = [], []
    with torch.no_grad():
        for k in range(N_CHUNKS):
            window = list(ids[k * N_CTX:(k + 1) * N_CTX])
            window[0] = BOS
            logits = model(torch.tensor([window])).logits[0].to(torch.float64)
            logp = torch.log_softmax(logits, dim=-1)
            for p in range(N_CTX // 2, N_CTX - 1):
                nll.append(float(-logp[p, window[p + 1]]))
            running.append(math.exp(float(np.mean(nll))))
    x = np.array(nll, dtype=np.float64)
    mean = float(x.mean())
    ppl = math.exp(mean)
    stderr = ppl * math.sqrt((float((x * x).mean()) - mean * mean) / (len(x) - 1))
    out = {
        "model": "sharp",
        "tokenizer": "chinese-llama-2",
        "method": "llama.cpp perplexity: windows of n_ctx, BOS first, positions n_ctx/2..n_ctx-2 predict the next token",
        "text": text,
        "ids": ids,
        "n_ctx": N_CTX,
        "n_chunks": N_CHUNKS,
        "bos_id": BOS,
        "nll": nll,
        "chunk_ppl": running,
        "ppl": ppl,
        "ppl_stderr": stderr,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentencepiece": spm.__version__, "numpy": np.__version__},
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s: %d tokens, %d scored, PPL = %.6f +/- %.6f" % (OUT, len(ids), len(nll), ppl, stderr))


if __name__ == "__main__":
    main()
