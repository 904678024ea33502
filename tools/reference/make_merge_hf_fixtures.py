#!/usr/bin/env python3
"""make_merge_hf_fixtures.py — the Hugging Face tokenizer files `calpaca tokenizer merge` must write.

What it computes (deterministic, no randomness):
  Chinese-LLaMA's merge_tokenizers.py ends with
      LlamaTokenizer(vocab_file=<merged .model>).save_pretrained(<hf dir>)
  and the Chinese-Alpaca tokenizer additionally declares "[PAD]" as the pad token. This script runs
  exactly that with the reference stack (transformers 4.35.2, slow LlamaTokenizer) on the two
  published merged models in tests/fixtures/tokenizers/ and keeps the two JSON files it writes:

    tests/fixtures/tokenizers/expected/hf-merge/chinese-llama-v1/{tokenizer_config.json,special_tokens_map.json}
        LlamaTokenizer(vocab_file=chinese-llama-v1/tokenizer.model)
    tests/fixtures/tokenizers/expected/hf-merge/chinese-alpaca-v1/{tokenizer_config.json,special_tokens_map.json}
        LlamaTokenizer(vocab_file=chinese-alpaca-v1/tokenizer.model, pad_token="[PAD]")

  It also checks that the tokenizer.model save_pretrained copies is byte-identical to its input and
  that the pad id is 49953 for chinese-alpaca-v1.

Run (a few seconds):
    /opt/calpaca-ref/bin/python tools/reference/make_merge_hf_fixtures.py
Environment: tools/reference/setup-venv.sh (transformers 4.35.2, sentencepiece 0.1.97).
"""
import filecmp
import os
import shutil
import sys
import tempfile

from transformers import LlamaTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
OUT = os.path.join(TOK, "expected", "hf-merge")

CASES = [
    ("chinese-llama-v1", {}, None),
    ("chinese-alpaca-v1", {"pad_token": "[PAD]"}, 49953),
]


def main():
    for name, kwargs, pad_id in CASES:
        model = os.path.join(TOK, name, "tokenizer.model")
        tok = LlamaTokenizer(vocab_file=model, legacy=True, **kwargs)
        if pad_id is not None and tok.pad_token_id != pad_id:
            sys.exit(f"{name}: pad id {tok.pad_token_id}, expected {pad_id}")
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            if not filecmp.cmp(os.path.join(tmp, "tokenizer.model"), model, shallow=False):
                sys.exit(f"{name}: save_pretrained changed tokenizer.model")
            dst = os.path.join(OUT, name)
            os.makedirs(dst, exist_ok=True)
            for f in ("tokenizer_config.json", "special_tokens_map.json"):
                shutil.copyfile(os.path.join(tmp, f), os.path.join(dst, f))
                print("wrote", os.path.relpath(os.path.join(dst, f), ROOT))


if __name__ == "__main__":
    main()
