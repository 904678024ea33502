#!/usr/bin/env python3
"""make_7b_merge_inputs.py — a random-weight, 7B-shaped merge benchmark input (nothing is committed).

Writes into OUTDIR:
  base/   a LLaMA-7B-shaped Hugging Face checkpoint (hidden 4096, 32 layers, 32 heads, ffn 11008,
          vocab 32000, F16): config.json, generation_config.json, model-00001-of-00002.safetensors,
          model-00002-of-00002.safetensors, model.safetensors.index.json, tokenizer.model (LLaMA's,
          from tests/fixtures/tokenizers/llama). 13.5 GB. Written tensor by tensor (one tensor in
          memory at a time); weights are random F16 bit patterns with |w| in [2^-7, 2^-6) (no RNG cost).
  lora/   a Chinese-LLaMA-7B-shaped PEFT adapter like the released ones: adapter_config.json (r=8,
          lora_alpha=32, the 7 projections, modules_to_save embed_tokens + lm_head), adapter_model.bin
          written with torch.save (lora_A/B F32 random normal; embed_tokens and lm_head F16 [49953, 4096]),
          tokenizer.model (Chinese-LLaMA's 49953 pieces, tests/fixtures/tokenizers/chinese-llama-v1). ~0.9 GB.
Seeded (SEED); needs ~14.5 GB of disk. Then measure, e.g.:
  /usr/bin/time -v build/calpaca merge-lora --base OUTDIR/base --lora OUTDIR/lora -o OUTDIR/merged.gguf --no-hash
and delete OUTDIR afterwards.

Run: /opt/calpaca-ref/bin/python tools/reference/make_7b_merge_inputs.py OUTDIR
"""

import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SEED = 7
H, L, NH, FF, V, VZH, R, ALPHA = 4096, 32, 32, 11008, 32000, 49953, 8, 32
TARGETS = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj"]


def shapes():
    out = [("model.embed_tokens.weight", (V, H))]
    for i in range(L):
        p = "model.layers.%d." % i
        out += [(p + "input_layernorm.weight", (H,)), (p + "self_attn.q_proj.weight", (H, H)),
                (p + "self_attn.k_proj.weight", (H, H)), (p + "self_attn.v_proj.weight", (H, H)),
                (p + "self_attn.o_proj.weight", (H, H)), (p + "post_attention_layernorm.weight", (H,)),
                (p + "mlp.gate_proj.weight", (FF, H)), (p + "mlp.up_proj.weight", (FF, H)),
                (p + "mlp.down_proj.weight", (H, FF))]
    out += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    return out


def random_f16(rng, shape):
    n = int(np.prod(shape))
    if len(shape) == 1:
        return np.ones(n, np.float16)
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    bits = (bits & np.uint16(0x83FF)) | np.uint16(8 << 10)  # sign, exponent 8 (2^-7), random mantissa
    return bits.view(np.float16)


def write_shard(path, items, rng):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in items:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in items:
            f.write(random_f16(rng, shape).tobytes())
    return off


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(SEED)
    base = os.path.join(out, "base")
    os.makedirs(base, exist_ok=True)
    items = shapes()
    half = len(items) // 2
    shards = [items[:half], items[half:]]
    weight_map, total = {}, 0
    for i, s in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        total += write_shard(os.path.join(base, fname), s, rng)
        for name, _ in s:
            weight_map[name] = fname
        print("wrote", fname, flush=True)
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(base, "model.safetensors.index.json"), "w"), indent=2)
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": FF,
               "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NH, "vocab_size": V,
               "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "hidden_act": "silu", "bos_token_id": 1,
               "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False, "torch_dtype": "float16"},
              open(os.path.join(base, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, open(os.path.join(base, "generation_config.json"), "w"))
    shutil.copy(os.path.join(REPO, "tests/fixtures/tokenizers/llama/tokenizer.model"), base)

    lora = os.path.join(out, "lora")
    os.makedirs(lora, exist_ok=True)
    torch.manual_seed(SEED)
    sd = {}
    for i in range(L):
        for t in TARGETS:
            mod = "mlp" if t in ("gate_proj", "down_proj", "up_proj") else "self_attn"
            n_in = FF if t == "down_proj" else H
            n_out = FF if t in ("gate_proj", "up_proj") else H
            k = "base_model.model.model.layers.%d.%s.%s" % (i, mod, t)
            sd[k + ".lora_A.weight"] = torch.randn(R, n_in) * 0.01
            sd[k + ".lora_B.weight"] = torch.randn(n_out, R) * 0.01
    sd["base_model.model.model.embed_tokens.weight"] = torch.from_numpy(random_f16(rng, (VZH, H)).reshape(VZH, H).copy())
    sd["base_model.model.lm_head.weight"] = torch.from_numpy(random_f16(rng, (VZH, H)).reshape(VZH, H).copy())
    torch.save(sd, os.path.join(lora, "adapter_model.bin"))
    json.dump({"base_model_name_or_path": "llama-7b-hf", "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
               "init_lora_weights": True, "lora_alpha": ALPHA, "lora_dropout": 0.05, "modules_to_save": ["embed_tokens", "lm_head"],
               "peft_type": "LORA", "r": R, "target_modules": TARGETS, "task_type": "CAUSAL_LM"},
              open(os.path.join(lora, "adapter_config.json"), "w"), indent=2)
    shutil.copy(os.path.join(REPO, "tests/fixtures/tokenizers/chinese-llama-v1/tokenizer.model"), lora)
    print("wrote", out)


if __name__ == "__main__":
    main()
