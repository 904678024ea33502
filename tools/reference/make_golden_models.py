#!/usr/bin/env python3
"""make_golden_models.py — tiny random LLaMA models and their reference logits for calpaca's golden tests.

What it computes, for each model in MODELS (seeded, see SEED below):
  1. torch.manual_seed(seed); build a random Hugging Face `LlamaForCausalLM` (2 layers, untied embeddings)
     and apply the model's extra initialisation (if any);
  2. model.half(); save_pretrained(tests/golden/<name>, safe_serialization=True)
     -> config.json, generation_config.json, model.safetensors (all weights F16);
  3. reload that directory with from_pretrained(torch_dtype=float32) — so the reference runs in float32 on
     exactly the f16-rounded weights that are on disk — eval mode, no grad;
  4. for each prompt: ids = [BOS=1] + sentencepiece.encode(prompt) with the model's tokenizer
     (tests/fixtures/tokenizers/<tok>/tokenizer.model);
       caseN.npy        float32 [n_tokens, vocab]: logits at every prompt position (one forward pass);
       greedy           32 ids of a plain argmax loop continuing the prompt, one token at a time through
                        past_key_values (no EOS stop, no repetition penalty);
       greedy_gaps      top1 - top2 logit at each of those 32 steps (a C++ test should only require an exact
                        greedy match where the gap is well above its logit tolerance);
       logits_max_abs   max |logit| of caseN.npy;
     written to tests/golden/<name>/cases.json;
  5. sensitivity checks (printed and stored under "checks" in cases.json): the relative error
     ||L_bug - L||_F / ||L||_F of the prompt logits when the model is run with q/k weights laid out the way a
     typical RoPE / permutation bug would see them (and, where relevant, wrong rope_theta / ignored
     rope_scaling). The "sharp" model is built so that these are large.
Finally tests/golden/README.md is (re)written with the conventions, versions and these numbers.

Run (a few seconds per model on 2 cores):
    /opt/calpaca-ref/bin/python tools/reference/make_golden_models.py
Environment: tools/reference/setup-venv.sh (Debian python3-torch 1.13, transformers 4.35.2, sentencepiece 0.1.97).
"""

import copy
import json
import os
import shutil
import sys

import numpy as np
import sentencepiece as spm
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN = os.path.join(REPO, "tests", "golden")
TOKDIR = os.path.join(REPO, "tests", "fixtures", "tokenizers")

SEED = 20240611          # base seed; model i uses SEED + i (recorded in cases.json)
N_GREEDY = 32
MAX_DIR_BYTES = 12.5e6   # keep every model folder small enough to commit

PROMPTS = {  # chosen short so that [n_tokens, vocab] float32 logits keep each folder under ~12 MB
    "chinese-llama-2": ["白日依山尽。", "为什么要减少污染？", "用Python写一个程序"],
    "chinese-llama-v1": ["白日依山尽，黄河", "为什么要减少污染，保护环境？", "用Python写一个程序"],
}

MODELS = [
    {
        "name": "tiny-v2-gqa",
        "tokenizer": "chinese-llama-2",
        "config": dict(vocab_size=55296, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                       max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.02),
        "init": "transformers default (all Linear/Embedding ~ N(0, 0.02), RMSNorm weights = 1)",
        "extra_init": None,
    },
    {
        "name": "tiny-v1",
        "tokenizer": "chinese-llama-v1",
        "config": dict(vocab_size=49953, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0,
                       rope_scaling={"type": "linear", "factor": 2.0},
                       max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.02),
        "init": "transformers default, then every RMSNorm weight ~ N(1, 0.2) (so ignoring norm weights shows)",
        "extra_init": "random_norms",
    },
    {
        "name": "sharp",
        "tokenizer": "chinese-llama-2",
        "config": dict(vocab_size=55296, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                       max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.02),
        "init": "transformers default, then q_proj/k_proj ~ N(0, 0.3), lm_head ~ N(0, 0.5)",
        "extra_init": "sharp",
    },
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# q/k layouts. HF stores q/k in the "rotate_half" layout; GGUF/Meta in the interleaved layout.
# HF -> GGUF (llama.cpp convert_hf_to_gguf.py LlamaModel.permute):
#   w.reshape(n_head, 2, head_dim/2, n_in).swapaxes(1, 2).reshape(n_out, n_in)
# ------------------------------------------------------------------------------------------------
def permute(w, n_head):
    out, inp = w.shape
    return w.reshape(n_head, 2, out // n_head // 2, inp).transpose(1, 2).reshape(out, inp)


def unpermute(w, n_head):
    out, inp = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def apply_extra_init(model, kind):
    with torch.no_grad():
        if kind == "random_norms":
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.normal_(1.0, 0.2)
        elif kind == "sharp":
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.normal_(0.0, 0.3)
                layer.self_attn.k_proj.weight.normal_(0.0, 0.3)
            model.lm_head.weight.normal_(0.0, 0.5)


@torch.no_grad()
def prompt_logits(model, cases):
    return [model(torch.tensor([c["ids"]])).logits[0].float().numpy() for c in cases]


@torch.no_grad()
def greedy(model, ids, n):
    out = model(torch.tensor([ids]), use_cache=True)
    past, last = out.past_key_values, out.logits[0, -1]
    toks, gaps = [], []
    for _ in range(n):
        top2 = torch.topk(last, 2)
        tok = int(top2.indices[0])
        toks.append(tok)
        gaps.append(float(top2.values[0] - top2.values[1]))
        out = model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
        past, last = out.past_key_values, out.logits[0, -1]
    # sanity: the incremental path agrees with one full forward over prompt + generated tokens
    full = model(torch.tensor([ids + toks])).logits[0, -1]
    drift = float((full - last).abs().max())
    return toks, gaps, drift


def numpy_gguf_forward(state, cfg, ids):
    """Independent float64 numpy forward written the GGUF/llama.cpp way: q/k weights permuted HF -> GGUF,
    RoPE on adjacent pairs (2i, 2i+1). Used only to confirm the conventions stated in the README."""
    W = {k: v.double().numpy() for k, v in state.items()}
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // nh
    eps = cfg.rms_norm_eps
    scale = 1.0 / cfg.rope_scaling["factor"] if cfg.rope_scaling else 1.0
    n = len(ids)
    pos = np.arange(n) * scale
    inv = cfg.rope_theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]                        # [n, hd/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x):                                             # x [n, heads, hd], adjacent pairs
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    x = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for L in range(cfg.num_hidden_layers):
        p = f"model.layers.{L}."
        h = rms(x, W[p + "input_layernorm.weight"])
        wq = permute(torch.from_numpy(W[p + "self_attn.q_proj.weight"]), nh).numpy()
        wk = permute(torch.from_numpy(W[p + "self_attn.k_proj.weight"]), nkv).numpy()
        q = rope((h @ wq.T).reshape(n, nh, hd))
        k = rope((h @ wk.T).reshape(n, nkv, hd))
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(n, nkv, hd)
        att = np.empty((n, nh, hd))
        for hh in range(nh):
            g = hh // (nh // nkv)
            sc = q[:, hh] @ k[:, g].T / np.sqrt(hd) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            att[:, hh] = (sc / sc.sum(-1, keepdims=True)) @ v[:, g]
        x = x + att.reshape(n, -1) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        gate = h @ W[p + "mlp.gate_proj.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ W["lm_head.weight"].T


def rel_err(ref, other):
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(ref, other))
    den = sum(float((a ** 2).sum()) for a in ref)
    return (num / den) ** 0.5


def sensitivity_checks(model, cfg, cases, ref):
    """Relative logit error of HF models whose q/k weights (or rope settings) mimic common bugs."""
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    variants = {}

    def with_qk(fq, fk):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for layer in m.model.layers:
                layer.self_attn.q_proj.weight.copy_(fq(layer.self_attn.q_proj.weight))
                layer.self_attn.k_proj.weight.copy_(fk(layer.self_attn.k_proj.weight))
        return m

    # GGUF-style (adjacent pair) RoPE on weights that were never permuted == HF on unpermute(W)
    variants["interleaved_rope_without_qk_permutation"] = with_qk(lambda w: unpermute(w, nh),
                                                                  lambda w: unpermute(w, nkv))
    # rotate-half RoPE on weights that were permuted == HF on permute(W)
    variants["rotate_half_rope_on_permuted_qk"] = with_qk(lambda w: permute(w, nh), lambda w: permute(w, nkv))
    if nkv != nh:
        # converter permutes k with n_head instead of n_kv_head (GQA bug)
        variants["k_permuted_with_n_head_not_n_kv_head"] = with_qk(lambda w: w,
                                                                   lambda w: unpermute(permute(w, nh), nkv))
        # q and k permuted with each other's head count
        variants["qk_head_counts_swapped"] = with_qk(lambda w: unpermute(permute(w, nkv), nh),
                                                     lambda w: unpermute(permute(w, nh), nkv))
    if cfg.rope_theta != 10000.0:
        c2 = copy.deepcopy(cfg)
        c2.rope_theta = 10000.0
        m = LlamaForCausalLM(c2).eval()
        m.load_state_dict(model.state_dict())
        variants["rope_theta_10000_instead_of_%g" % cfg.rope_theta] = m
    if cfg.rope_scaling:
        c2 = copy.deepcopy(cfg)
        c2.rope_scaling = None
        m = LlamaForCausalLM(c2).eval()
        m.load_state_dict(model.state_dict())
        variants["rope_scaling_ignored"] = m
    # norm weights ignored (treated as 1)
    m = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("norm.weight"):
                p.fill_(1.0)
    variants["rmsnorm_weights_ignored"] = m

    checks = {}
    state = model.state_dict()
    ours = [numpy_gguf_forward(state, cfg, c["ids"]) for c in cases]
    checks["numpy_gguf_layout_forward_vs_reference"] = float("%.3g" % rel_err(ref, ours))
    log(f"    independent numpy forward (GGUF layout, adjacent-pair RoPE): relative error "
        f"{checks['numpy_gguf_layout_forward_vs_reference']:.3g} (should be ~1e-7)")
    assert checks["numpy_gguf_layout_forward_vs_reference"] < 1e-5
    for k, m in variants.items():
        checks[k] = round(rel_err(ref, prompt_logits(m.eval(), cases)), 6)
        log(f"    check {k}: relative logit error {checks[k]:.4g}")
    return checks


def dump_json(obj, indent=""):
    """JSON with one key per line but every list of numbers on a single line."""
    if isinstance(obj, dict):
        inner = indent + "  "
        items = [f"{inner}{json.dumps(k)}: {dump_json(v, inner).lstrip()}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}" + ("\n" if not indent else "")
    if isinstance(obj, list) and obj and not all(isinstance(x, (int, float)) for x in obj):
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + dump_json(x, inner).lstrip() for x in obj) + "\n" + indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def make_model(index, spec):
    name, tok_name = spec["name"], spec["tokenizer"]
    seed = SEED + index
    out_dir = os.path.join(GOLDEN, name)
    log(f"== {name} (seed {seed}, tokenizer {tok_name})")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(TOKDIR, tok_name, "tokenizer.model"))
    cfg = LlamaConfig(**spec["config"])
    assert sp.get_piece_size() == cfg.vocab_size

    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    apply_extra_init(model, spec["extra_init"])
    model.half()

    tmp_dir = out_dir + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(tmp_dir, safe_serialization=True)
    del model

    # reference: float32 compute on exactly the f16 weights on disk
    model = LlamaForCausalLM.from_pretrained(tmp_dir, torch_dtype=torch.float32).eval()

    cases = []
    for i, prompt in enumerate(PROMPTS[tok_name]):
        cases.append({"prompt": prompt, "ids": [sp.bos_id()] + sp.encode(prompt),
                      "logits": f"case{i}.npy"})
    logits = prompt_logits(model, cases)
    for c, lg in zip(cases, logits):
        assert lg.dtype == np.float32 and lg.shape == (len(c["ids"]), cfg.vocab_size)
        np.save(os.path.join(tmp_dir, c["logits"]), lg)
        c["logits_shape"] = list(lg.shape)
        c["logits_max_abs"] = float(np.abs(lg).max())
        toks, gaps, drift = greedy(model, c["ids"], N_GREEDY)
        c["greedy"] = toks
        c["greedy_gaps"] = gaps
        c["greedy_text"] = sp.decode(toks)
        log(f"  case {c['logits']}: {len(c['ids'])} tokens {sp.id_to_piece(c['ids'])}, "
            f"max|logit| {c['logits_max_abs']:.4g}, min greedy gap {min(gaps):.3g}, "
            f"incremental-vs-full drift {drift:.2g}")
        assert drift < 1e-4, drift

    checks = sensitivity_checks(model, cfg, cases, logits)
    doc = {
        "model": name,
        "tokenizer": tok_name,
        "seed": seed,
        "init": spec["init"],
        "weights_dtype_on_disk": "F16",
        "reference_compute": "float32 (HF transformers %s, torch %s)" % (transformers.__version__,
                                                                         torch.__version__),
        "bos_id": sp.bos_id(),
        "n_greedy": N_GREEDY,
        "cases": cases,
        "checks": {"metric": "||logits_bug - logits||_F / ||logits||_F over all cases' prompt logits",
                   **checks},
    }
    with open(os.path.join(tmp_dir, "cases.json"), "w", encoding="utf-8") as f:
        f.write(dump_json(doc))
    for f in os.listdir(tmp_dir):
        os.chmod(os.path.join(tmp_dir, f), 0o644)  # safetensors writes 0600

    size = sum(os.path.getsize(os.path.join(tmp_dir, f)) for f in os.listdir(tmp_dir))
    log(f"  {name}: {size / 1e6:.2f} MB")
    if size > MAX_DIR_BYTES:
        raise SystemExit(f"{name}: folder too large ({size} bytes)")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp_dir, out_dir)
    return doc, size


def write_readme(results):
    import safetensors
    v = {"torch": torch.__version__, "transformers": transformers.__version__,
         "sentencepiece": spm.__version__, "numpy": np.__version__, "safetensors": safetensors.__version__,
         "python": sys.version.split()[0]}
    L = []
    L.append("# tests/golden — tiny random LLaMA models with reference logits\n")
    L.append("Generated by `tools/reference/make_golden_models.py` (this README too — edit the script, not this file):\n")
    L.append("```\ntools/reference/setup-venv.sh            # once: Debian python3-torch + pinned transformers in /opt/calpaca-ref\n"
             "/opt/calpaca-ref/bin/python tools/reference/make_golden_models.py\n```\n")
    L.append("Versions used: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".\n")
    L.append("## Files per model (`tests/golden/<name>/`)\n")
    L.append("* `config.json`, `generation_config.json`, `model.safetensors` — a Hugging Face `LlamaForCausalLM` saved with "
             "`save_pretrained(dir, safe_serialization=True)` after `model.half()`: **every tensor is F16**, HF names "
             "(`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`, …, `lm_head.weight`; embeddings untied).")
    L.append("* `caseN.npy` — numpy `float32` array `[n_tokens, vocab]` (`np.save`, C order): logits at every position of "
             "case N's prompt, computed in **float32 on the f16-rounded weights** (the directory is reloaded with "
             "`torch_dtype=float32`), eval mode, one forward pass over the whole prompt.")
    L.append("* `cases.json` — `{model, tokenizer, seed, init, bos_id, n_greedy, cases: [{prompt, ids, logits, logits_shape, "
             "logits_max_abs, greedy, greedy_gaps, greedy_text}], checks}`. `ids` = `[1] + sentencepiece.encode(prompt)` "
             "with `tests/fixtures/tokenizers/<tokenizer>/tokenizer.model` (BOS first, no EOS). `greedy` = 32 argmax tokens "
             "continuing the prompt one at a time through the KV cache (no EOS stop, no penalties); `greedy_gaps[i]` = "
             "top-1 minus top-2 logit at the step that chose `greedy[i]` — only require an exact greedy match up to the "
             "first step whose gap is not comfortably above the logit tolerance. `greedy_text` is informative.")
    L.append("* `checks` — relative logit error `‖L_bug − L‖_F / ‖L‖_F` when the same HF model is run with q/k weights "
             "(or RoPE settings) as a typical bug would see them. Large numbers mean the fixture catches that bug.\n")
    L.append("## Models\n")
    L.append("| model | tokenizer | vocab | hidden | ffn | layers | heads / kv heads | head_dim | rms_norm_eps | rope_theta | rope_scaling | init | seed | size |")
    L.append("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|---:|---:|")
    for spec, (doc, size) in results:
        c = spec["config"]
        L.append(f"| `{spec['name']}` | {spec['tokenizer']} | {c['vocab_size']} | {c['hidden_size']} | "
                 f"{c['intermediate_size']} | {c['num_hidden_layers']} | {c['num_attention_heads']} / "
                 f"{c['num_key_value_heads']} | {c['hidden_size'] // c['num_attention_heads']} | {c['rms_norm_eps']:g} | "
                 f"{c['rope_theta']:g} | {json.dumps(c.get('rope_scaling'))} | {spec['init']} | {doc['seed']} | "
                 f"{size / 1e6:.2f} MB |")
    L.append("\nAll: `max_position_embeddings` 256, SiLU, no attention bias, BOS 1 / EOS 2, untied `lm_head`.\n")
    L.append("Sensitivity (relative logit error of the buggy variant; from `checks` in each `cases.json`):\n")
    keys = []
    for _, (doc, _) in results:
        keys += [k for k in doc["checks"] if k != "metric" and k not in keys]
    L.append("| check | " + " | ".join(f"`{s['name']}`" for s, _ in results) + " |")
    L.append("|---|" + "---:|" * len(results))
    for k in keys:
        L.append(f"| {k} | " + " | ".join(
            (f"{d['checks'][k]:.3g}" if k in d["checks"] else "–") for _, (d, _) in results) + " |")
    L.append("\nThe default-init models (weights ~ N(0, 0.02)) have nearly uniform attention, so RoPE/layout bugs barely "
             "move their logits, and their logits are small (max |logit| ~0.6) with greedy gaps down to ~1e-4, so their greedy "
             "sequences are only a weak check; `sharp` (q/k ~ N(0, 0.3), lm_head ~ N(0, 0.5); max |logit| ~13, greedy "
             "gaps mostly 0.01–3) is the one that catches layout bugs. The first row is not a bug but the independent "
             "numpy re-implementation described below.\n")
    L.append("## Conventions the C++ side must follow\n")
    L.append("* **HF q/k weights are in the rotate-half layout** (`rotate_half`: dimension i pairs with i + head_dim/2). "
             "GGUF (like Meta checkpoints) rotates adjacent pairs (2i, 2i+1). Converting HF → GGUF applies the standard "
             "permutation to `q_proj` with `n_head` and to `k_proj` with `n_kv_head`:\n"
             "  `w.reshape(n_head, 2, head_dim/2, n_in).swapaxes(1, 2).reshape(n_out, n_in)` "
             "(llama.cpp `convert_hf_to_gguf.py` `LlamaModel.permute`). `v_proj`, `o_proj` and the MLP are not permuted.")
    L.append("* RoPE: `inv_freq[j] = rope_theta^(-2j/head_dim)`; linear `rope_scaling` divides the position by `factor` "
             "(`tiny-v1`: factor 2 → GGUF `llama.rope.scaling.type=linear`, `llama.rope.scaling.factor=2`, "
             "i.e. llama.cpp freq_scale 0.5). `rope_theta` → `llama.rope.freq_base`.")
    L.append("* RMSNorm: `x / sqrt(mean(x²) + eps) * weight`, computed in float32; softmax in float32.")
    L.append("* Logits were computed in float32 from F16 weights: a C++ f32 forward over the same F16 weights should match "
             "closely: an independent float64 numpy forward written the GGUF way (permuted q/k, adjacent-pair RoPE; "
             "`numpy_gguf_layout_forward_vs_reference` in `checks`) agrees to ~2e-7 relative, so ~1e-5 relative is a "
             "fair f32 tolerance; quantized variants need their own, looser tolerances.")
    with open(os.path.join(GOLDEN, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


def main():
    torch.set_num_threads(2)
    os.makedirs(GOLDEN, exist_ok=True)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, sentencepiece {spm.__version__}")
    results = []
    for i, spec in enumerate(MODELS):
        results.append((spec, make_model(i, spec)))
    write_readme(results)
    log("wrote", os.path.join(GOLDEN, "README.md"))


if __name__ == "__main__":
    main()
