#!/usr/bin/env python3
"""make_merge_fixtures.py — fixtures for calpaca's convert / merge-lora tests (tests/fixtures/merge/).

What it computes (seeded with SEED; every run writes the same bytes apart from zip timestamps):
  1. Small tokenizers: tok-512, tok-600, tok-601 = the first N pieces of LLaMA's tokenizer.model
     (tests/fixtures/tokenizers/llama), cut at the protobuf level (trainer/normalizer specs kept),
     saved with transformers' LlamaTokenizer.save_pretrained (tokenizer.model, tokenizer_config.json,
     special_tokens_map.json). 512 → 600 → 601 mimics LLaMA → Chinese-LLaMA → Chinese-Alpaca (+[PAD]).
  2. One random LLaMA (vocab 512, hidden 32, ffn 88, 2 layers, 4 heads / 2 KV heads, untied head) whose
     weights are exactly representable in f16 AND bf16 (rounded to bf16, |w| < 1e-5 set to 0), saved by
     transformers' own save_pretrained in several layouts — every one holds the same values:
       base-st-f16            model.safetensors                       (F16)
       base-st-bf16-sharded   model-0000i-of-0000n.safetensors + index (BF16, max_shard_size 40KB)
       base-bin-f32           pytorch_model.bin                       (F32)
       base-bin-f16-sharded   pytorch_model-0000i-of-0000n.bin + index (F16)
       base-meta              consolidated.00.pth + consolidated.01.pth + params.json (Meta names, q/k
                              permuted to the interleaved layout, split across 2 shards as the original
                              merge script does; written with torch.save), F16
     base-logits.npy: float32 logits [n, 512] of the f32 model for `ids` in cases.json.
  3. PEFT adapters made by peft itself (get_peft_model + save_pretrained) with the original's LoraConfig
     (all 7 projections, modules_to_save embed_tokens + lm_head), after resize_token_embeddings, with
     random A/B (peft initialises B to zero) and perturbed saved modules:
       lora-plus     r=8,  alpha=32, vocab 512 → 600, tokenizer tok-600     (adapter_model.bin)
       lora-alpaca   r=16, alpha=32, vocab 600 → 601, tokenizer tok-601     (adapter_model.bin)
       lora-qv       r=4,  alpha=16, q_proj/v_proj only, no modules_to_save (adapter_model.safetensors)
  4. Reference merges with the original algorithm (merge_llama_with_chinese_lora_low_mem.py):
       replace: sd[k] = lora[k].half(); delta: sd[k] += (B.float() @ A.float()) * (alpha / r)  (in place)
       ref/plus-f16.safetensors, ref/plus-alpaca-f16.safetensors (base F16, adapters in order),
       ref/qv-f32.safetensors (base F32), and ref/plus-alpaca-logits.npy (float32 forward on the merged
       f16 weights, ids in cases.json). peft's own merge_and_unload (in f32) is checked against the
       reference formula here (printed).
  5. real-vocab/: hidden 16, 1 layer, vocab 32000 base (model.safetensors, F16) and a peft adapter resized
     to 49953 (the Chinese-LLaMA size; r=4, alpha=8, F16) without tokenizer (tests copy
     tests/fixtures/tokenizers/chinese-llama-v1/tokenizer.model), logits.npy for ids in cases.json.
  6. bad/: evil.bin (a torch-style zip whose data.pkl calls os.system — must be refused, never run),
     compressed.bin (a real checkpoint re-zipped with DEFLATE).

Run:  /opt/calpaca-ref/bin/python tools/reference/make_merge_fixtures.py
Environment: tools/reference/setup-venv.sh (Debian torch 1.13, transformers 4.35.2, peft 0.3.0).
"""

import copy
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import sentencepiece as spm
import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "tests", "fixtures", "merge")
LLAMA_TOK = os.path.join(REPO, "tests", "fixtures", "tokenizers", "llama", "tokenizer.model")
ZH_TOK = os.path.join(REPO, "tests", "fixtures", "tokenizers", "chinese-llama-v1", "tokenizer.model")
SEED = 20240620
TARGETS = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj"]
PROMPT = "Hello world, the merge test"


# ----------------------------------------------------------------------------- tokenizers
def read_varint(b, i):
    v, s = 0, 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def cut_tokenizer(n):
    """First n pieces of the LLaMA ModelProto; all other fields unchanged."""
    b = open(LLAMA_TOK, "rb").read()
    i, out, kept = 0, bytearray(), 0
    while i < len(b):
        start = i
        tag, i = read_varint(b, i)
        wt = tag & 7
        if wt == 2:
            ln, i = read_varint(b, i)
            i += ln
        elif wt == 0:
            _, i = read_varint(b, i)
        elif wt == 5:
            i += 4
        elif wt == 1:
            i += 8
        else:
            raise ValueError("unexpected wire type")
        if tag >> 3 == 1:
            if kept >= n:
                continue
            kept += 1
        out += b[start:i]
    return bytes(out)


def save_tokenizer(n, d):
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, "tokenizer.model")
    open(tmp, "wb").write(cut_tokenizer(n))
    tok = LlamaTokenizer(tmp, legacy=True)
    assert len(tok) == n, (len(tok), n)
    tok.save_pretrained(d)
    return tok


# ----------------------------------------------------------------------------- model helpers
def exact(t):
    t = t.to(torch.bfloat16).to(torch.float32)
    t[t.abs() < 1e-5] = 0
    return t


def make_base():
    torch.manual_seed(SEED)
    cfg = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0,
                      tie_word_embeddings=False)
    m = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "q_proj" in n or "k_proj" in n:
                p.copy_(0.3 * torch.randn_like(p))
            elif "lm_head" in n:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
            p.copy_(exact(p))
    return m


def randomize_adapter(pm, std_a, std_b, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n:
                p.copy_(std_a * torch.randn(p.shape, generator=g).to(p.dtype))
            elif "lora_B" in n:
                p.copy_(std_b * torch.randn(p.shape, generator=g).to(p.dtype))
            elif "modules_to_save" in n:
                p.add_((0.05 * torch.randn(p.shape, generator=g)).to(p.dtype))


def make_adapter(model, out, r, alpha, targets, save_modules, seed, tok_dir=None):
    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, target_modules=targets, inference_mode=False, r=r, lora_alpha=alpha,
                     lora_dropout=0.05, modules_to_save=save_modules)
    pm = get_peft_model(model, cfg)
    randomize_adapter(pm, 0.2, 0.2, seed)
    os.makedirs(out, exist_ok=True)
    pm.save_pretrained(out)
    if tok_dir:
        for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(tok_dir, f), out)
    sd = torch.load(os.path.join(out, "adapter_model.bin"))
    return pm, sd


def original_merge(base_sd, loras):
    """merge_llama_with_chinese_lora_low_mem.py: replacements .half(), deltas added in place."""
    sd = {k: v.clone() for k, v in base_sd.items()}
    for lora_sd, cfg in loras:
        scaling = cfg["lora_alpha"] / cfg["r"]
        for k in list(sd.keys()):
            full = "base_model.model." + k
            a_key = full.replace(".weight", ".lora_A.weight")
            if full in lora_sd:
                sd[k] = lora_sd[full].half().clone() if sd[k].dtype == torch.float16 else lora_sd[full].float().clone()
            elif a_key in lora_sd:
                b_key = a_key.replace("lora_A", "lora_B")
                sd[k] += (lora_sd[b_key].float() @ lora_sd[a_key].float()) * scaling
    return sd


def logits_of(sd, vocab, base_cfg, ids):
    cfg = LlamaConfig(**{**base_cfg.to_dict(), "vocab_size": vocab})
    m = LlamaForCausalLM(cfg).float().eval()
    m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def write_meta(model, d, n_shards, tok_dir):
    """Meta layout: renamed keys, q/k permuted to interleaved, split as the original merge script does."""
    os.makedirs(d, exist_ok=True)
    cfg = model.config
    sd = {k: v.half() for k, v in model.state_dict().items() if "rotary_emb" not in k}
    n_heads, n_kv, dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size

    def unpermute(w, heads):
        return w.view(heads, 2, w.shape[0] // heads // 2, w.shape[1]).transpose(1, 2).reshape(w.shape)

    names = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "output.weight"}
    sub = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
           "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
           "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
    meta = {}
    for k, v in sd.items():
        if k in names:
            meta[names[k]] = v
            continue
        parts = k.split(".")
        layer, rest = parts[2], ".".join(parts[3:-1])
        nk = "layers.%s.%s.weight" % (layer, sub[rest])
        if rest == "self_attn.q_proj":
            v = unpermute(v, n_heads)
        if rest == "self_attn.k_proj":
            v = unpermute(v, n_kv)
        meta[nk] = v
    shards = [dict() for _ in range(n_shards)]
    for k, v in meta.items():
        if k == "tok_embeddings.weight" or k.endswith(".wo.weight") or k.endswith(".w2.weight"):
            pieces = torch.split(v, v.shape[1] // n_shards, dim=1)
        elif k == "output.weight" or any(k.endswith(s) for s in (".wq.weight", ".wk.weight", ".wv.weight", ".w1.weight", ".w3.weight")):
            pieces = torch.split(v, v.shape[0] // n_shards, dim=0)
        else:
            pieces = [v] * n_shards
        for i in range(n_shards):
            shards[i][k] = pieces[i].clone()
    for i, s in enumerate(shards):
        torch.save(s, os.path.join(d, "consolidated.%02d.pth" % i))
    json.dump({"dim": dim, "multiple_of": 8, "n_heads": n_heads, "n_kv_heads": n_kv, "n_layers": cfg.num_hidden_layers,
               "norm_eps": cfg.rms_norm_eps, "vocab_size": -1}, open(os.path.join(d, "params.json"), "w"))
    shutil.copy(os.path.join(tok_dir, "tokenizer.model"), d)


def evil_bin(path, marker):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + marker,))

    payload = pickle.dumps({"model.embed_tokens.weight": Evil()}, protocol=2)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    toks = {n: save_tokenizer(n, os.path.join(OUT, "tok-%d" % n)) for n in (512, 600, 601)}

    base = make_base()
    cfg = base.config
    for name, dtype, safe, shard in [("base-st-f16", torch.float16, True, None), ("base-st-bf16-sharded", torch.bfloat16, True, "40KB"),
                                     ("base-bin-f32", torch.float32, False, None), ("base-bin-f16-sharded", torch.float16, False, "40KB")]:
        d = os.path.join(OUT, name)
        m = LlamaForCausalLM(copy.deepcopy(cfg))
        m.load_state_dict(base.state_dict())
        m = m.to(dtype)
        kw = {"safe_serialization": safe}
        if shard:
            kw["max_shard_size"] = shard
        m.save_pretrained(d, **kw)
        toks[512].save_pretrained(d)
    write_meta(base, os.path.join(OUT, "base-meta"), 2, os.path.join(OUT, "tok-512"))

    ids = [1] + spm.SentencePieceProcessor(model_file=os.path.join(OUT, "tok-601", "tokenizer.model")).encode(PROMPT)
    ids = [i for i in ids if i < 512]
    with torch.no_grad():
        np.save(os.path.join(OUT, "base-logits.npy"), base(torch.tensor([ids])).logits[0].float().numpy())

    # adapters (each on a fresh f32 copy of the base, resized as the Chinese models were)
    def fresh(vocab):
        m = LlamaForCausalLM(copy.deepcopy(cfg))
        m.load_state_dict(base.state_dict())
        if vocab != 512:
            m.resize_token_embeddings(vocab)
        return m.float()

    _, plus_sd = make_adapter(fresh(600), os.path.join(OUT, "lora-plus"), 8, 32, TARGETS, ["embed_tokens", "lm_head"], SEED + 1,
                              os.path.join(OUT, "tok-600"))
    _, alpaca_sd = make_adapter(fresh(601), os.path.join(OUT, "lora-alpaca"), 16, 32, TARGETS, ["embed_tokens", "lm_head"], SEED + 2,
                                os.path.join(OUT, "tok-601"))
    qv_model = fresh(512)
    qv_pm, qv_sd = make_adapter(qv_model, os.path.join(OUT, "lora-qv"), 4, 16, ["q_proj", "v_proj"], None, SEED + 3)
    save_file({k: v.contiguous() for k, v in qv_sd.items()}, os.path.join(OUT, "lora-qv", "adapter_model.safetensors"),
              metadata={"format": "pt"})
    os.remove(os.path.join(OUT, "lora-qv", "adapter_model.bin"))

    cfgs = {n: json.load(open(os.path.join(OUT, n, "adapter_config.json"))) for n in ("lora-plus", "lora-alpaca", "lora-qv")}
    base_f16 = {k: v.half() for k, v in base.state_dict().items() if "rotary_emb" not in k}
    base_f32 = {k: v.float() for k, v in base.state_dict().items() if "rotary_emb" not in k}
    os.makedirs(os.path.join(OUT, "ref"))
    plus = original_merge(base_f16, [(plus_sd, cfgs["lora-plus"])])
    save_file(plus, os.path.join(OUT, "ref", "plus-f16.safetensors"))
    plus_alpaca = original_merge(base_f16, [(plus_sd, cfgs["lora-plus"]), (alpaca_sd, cfgs["lora-alpaca"])])
    save_file(plus_alpaca, os.path.join(OUT, "ref", "plus-alpaca-f16.safetensors"))
    qv = original_merge(base_f32, [(qv_sd, cfgs["lora-qv"])])
    save_file(qv, os.path.join(OUT, "ref", "qv-f32.safetensors"))
    np.save(os.path.join(OUT, "ref", "plus-alpaca-logits.npy"), logits_of(plus_alpaca, 601, cfg, ids))

    # cross-check the reference formula against peft's own merge (f32)
    merged = qv_pm.merge_and_unload().state_dict()
    err = max((merged[k].float() - qv[k]).abs().max().item() for k in qv)
    print("peft merge_and_unload vs reference formula (f32, lora-qv): max abs diff %.3g" % err)
    assert err < 1e-5

    # real vocabulary sizes: 32000 → 49953
    torch.manual_seed(SEED + 10)
    rcfg = LlamaConfig(vocab_size=32000, hidden_size=16, intermediate_size=44, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False)
    rbase = LlamaForCausalLM(copy.deepcopy(rcfg)).eval()
    with torch.no_grad():
        for n, p in rbase.named_parameters():
            p.copy_(exact((1 + 0.2 * torch.randn_like(p)) if "norm" in n else 0.3 * torch.randn_like(p)))
    rd = os.path.join(OUT, "real-vocab")
    rbase.half().save_pretrained(os.path.join(rd, "base"), safe_serialization=True)
    rm = LlamaForCausalLM(copy.deepcopy(rcfg))
    rm.load_state_dict(rbase.float().state_dict())
    rm.resize_token_embeddings(49953)
    _, r_sd = make_adapter(rm.half(), os.path.join(rd, "lora"), 4, 8, TARGETS, ["embed_tokens", "lm_head"], SEED + 11)
    r_cfg = json.load(open(os.path.join(rd, "lora", "adapter_config.json")))
    r_merged = original_merge({k: v.half() for k, v in rbase.state_dict().items() if "rotary_emb" not in k}, [(r_sd, r_cfg)])
    zh_ids = [1] + spm.SentencePieceProcessor(model_file=ZH_TOK).encode("白日依山尽")
    np.save(os.path.join(rd, "logits.npy"), logits_of(r_merged, 49953, rcfg, zh_ids))
    json.dump({"ids": zh_ids, "prompt": "白日依山尽", "tokenizer": "chinese-llama-v1"}, open(os.path.join(rd, "cases.json"), "w"),
              ensure_ascii=False, indent=1)

    # bad inputs
    bd = os.path.join(OUT, "bad")
    os.makedirs(bd)
    evil_bin(os.path.join(bd, "evil.bin"), "/tmp/calpaca-evil-pickle-ran")
    src = zipfile.ZipFile(os.path.join(OUT, "base-bin-f32", "pytorch_model.bin"))
    with zipfile.ZipFile(os.path.join(bd, "compressed.bin"), "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))

    json.dump({"seed": SEED, "prompt": PROMPT, "ids": ids, "base_vocab": 512,
               "adapters": {n: {"r": c["r"], "lora_alpha": c["lora_alpha"]} for n, c in cfgs.items()},
               "versions": {"torch": torch.__version__, "peft": __import__("peft").__version__,
                            "transformers": __import__("transformers").__version__}},
              open(os.path.join(OUT, "cases.json"), "w"), indent=1)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print("wrote %s: %.2f MB" % (OUT, total / 1e6))


if __name__ == "__main__":
    main()
