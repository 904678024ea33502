#!/usr/bin/env python3
"""bench_train_torch.py — training speed of the original's stack (transformers + peft) on CPU.

What it measures: a random LlamaForCausalLM of the given shape (float32), wrapped by peft 0.3.0
`get_peft_model` with the original's LoraConfig (r 8, alpha 32, dropout 0.05, all seven projections,
modules_to_save embed_tokens + lm_head), trained with torch.optim.AdamW on random token blocks of
--block-size, batch 1, --grad-accum micro-batches per step, gradient checkpointing on (as
run_clm_pt_with_peft.py --gradient_checkpointing). Prints tokens/s over the timed steps (after one
warm-up step) and the peak RSS, as one JSON line.

Run (tools/reference/bench_train.sh runs it next to `calpaca train pt` with the same shape):
    /opt/calpaca-ref/bin/python tools/reference/bench_train_torch.py --vocab 32000 --dim 256 --layers 4 \
        --heads 8 --kv-heads 8 --ff 688 --block-size 128 --steps 4 --threads 2
"""

import argparse
import json
import resource
import time

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ff", type=int, default=688)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.dim, intermediate_size=a.ff, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=max(2048, a.block_size), tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    lc = LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, r=8, lora_alpha=32, lora_dropout=0.05,
                    target_modules=["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj"],
                    modules_to_save=["embed_tokens", "lm_head"])
    model = get_peft_model(model, lc)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)

    def step():
        for _ in range(a.grad_accum):
            ids = torch.randint(3, a.vocab, (1, a.block_size))
            loss = model(input_ids=ids, labels=ids).loss / a.grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()

    step()  # warm-up
    t0 = time.time()
    for _ in range(a.steps):
        step()
    dt = time.time() - t0
    tokens = a.steps * a.grad_accum * a.block_size
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "transformers+peft", "torch": torch.__version__, "tokens_per_s": tokens / dt,
                      "seconds": dt, "tokens": tokens, "peak_rss_mb": rss_mb, "threads": a.threads}))


if __name__ == "__main__":
    main()
