#!/usr/bin/env python3
"""make_train_fixtures.py — reference gradients and AdamW trajectory for calpaca's LoRA trainer.

What it computes (seed SEED, everything deterministic on CPU):
  1. A tiny random Hugging Face `LlamaForCausalLM` (vocab 512, hidden 32, ffn 88, 2 layers, 4 heads /
     2 KV heads (GQA), rms_norm_eps 1e-5, rope_theta 10000, untied lm_head; Linear/Embedding ~ N(0, 0.1),
     every RMSNorm weight ~ N(1, 0.2)), saved as tests/fixtures/train/base/{config.json,model.safetensors}
     in float32 with HF names (q/k rows in HF's rotate-half layout).
  2. That model wrapped by peft 0.3.0 `get_peft_model` with the original's LoraConfig
     (run_clm_sft_with_peft.py: task_type CAUSAL_LM, target_modules q,v,k,o,gate,down,up _proj,
     modules_to_save embed_tokens,lm_head, inference_mode False) with r=8, lora_alpha=32 and
     lora_dropout=0 (the check is deterministic). LoRA A keeps peft's kaiming-uniform(a=sqrt(5)) init;
     LoRA B, which peft zero-initialises, is set to N(0, 0.05) so that every gradient is non-zero.
     The adapter (get_peft_model_state_dict: PEFT key names, B rows of q/k in HF layout) is saved as
     tests/fixtures/train/adapter_init/{adapter_config.json,adapter_model.safetensors}.
  3. A micro-batch of SEQS (token ids only, no tokenizer), right-padded to the longest with pad id 0,
     labels -100 on the prompt part and on padding, attention_mask 0 on padding. The loss is HF's
     (logits[:, :-1] vs labels[:, 1:], mean over non-ignored labels). Autograd gradients of every
     trainable parameter, computed in float64, go to tests/fixtures/train/grads.safetensors (PEFT key
     names; the loss goes to train.json "loss").
  4. 10 optimizer steps as the HF Trainer does them, in float64: each step accumulates 2 micro-batches
     (MICRO[0], MICRO[1]) with loss/2 each, clips the global grad norm to 1.0
     (torch.nn.utils.clip_grad_norm_), then torch.optim.AdamW(lr 1e-2, betas (0.9, 0.999), eps 1e-8,
     weight_decay 0.01) with transformers.get_cosine_schedule_with_warmup(warmup 2, total 10).
     train.json "steps": per step the accumulated loss (before the update), the lr used, the
     pre-clip grad norm; and the final value of a few parameters' norms.

Run (a few seconds):
    /opt/calpaca-ref/bin/python tools/reference/make_train_fixtures.py
Environment: tools/reference/setup-venv.sh (Debian python3-torch 1.13, transformers 4.35.2, peft 0.3.0).
"""

import json
import os
import shutil

import torch
import transformers
import peft
from peft import LoraConfig, TaskType, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "tests", "fixtures", "train")
SEED = 20240701

CONFIG = dict(vocab_size=512, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
              max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.1,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
LORA = dict(r=8, lora_alpha=32, lora_dropout=0.0,
            target_modules=["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj"],
            modules_to_save=["embed_tokens", "lm_head"])
OPT = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, warmup=2, steps=10, grad_accum=2,
           max_grad_norm=1.0)


def make_seqs(g):
    """Four sequences: ids (BOS first) and labels (-100 on an SFT-style prompt prefix)."""
    out = []
    for n, n_prompt in [(16, 0), (11, 5), (13, 13), (9, 3)]:
        ids = [1] + torch.randint(3, CONFIG["vocab_size"], (n - 1,), generator=g).tolist()
        labels = [-100] * n_prompt + ids[n_prompt:]
        if n_prompt == 13:  # a sequence whose labels are almost all ignored
            labels[-2:] = ids[-2:]
        out.append({"ids": ids, "labels": labels})
    return out


def collate(seqs):
    n = max(len(s["ids"]) for s in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    labels = torch.full((len(seqs), n), -100, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    for i, s in enumerate(seqs):
        L = len(s["ids"])
        ids[i, :L] = torch.tensor(s["ids"])
        labels[i, :L] = torch.tensor(s["labels"])
        mask[i, :L] = 1
    return ids, labels, mask


def loss_of(model, seqs):
    ids, labels, mask = collate(seqs)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def build():
    torch.manual_seed(SEED)
    cfg = LlamaConfig(**CONFIG)
    base = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
    base.eval()
    return base


def wrap(base):
    lc = LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, **LORA)
    model = get_peft_model(base, lc)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return model


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "base"))
    base = build()
    base.save_pretrained(os.path.join(OUT, "base"), safe_serialization=True)
    for f in os.listdir(os.path.join(OUT, "base")):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(OUT, "base", f))

    model = wrap(base)
    sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    os.makedirs(os.path.join(OUT, "adapter_init"))
    save_file(sd, os.path.join(OUT, "adapter_init", "adapter_model.safetensors"))
    conf = model.peft_config["default"].to_dict()
    conf["target_modules"] = sorted(conf["target_modules"])
    conf["task_type"] = str(conf["task_type"].value if hasattr(conf["task_type"], "value") else conf["task_type"])
    conf["peft_type"] = str(conf["peft_type"].value if hasattr(conf["peft_type"], "value") else conf["peft_type"])
    conf["inference_mode"] = True
    with open(os.path.join(OUT, "adapter_init", "adapter_config.json"), "w") as f:
        json.dump(conf, f, indent=2, sort_keys=True)

    g = torch.Generator().manual_seed(SEED + 1)
    seqs = make_seqs(g)
    micro = [[0, 1], [2, 3]]

    # float64 reference: gradients of one micro-batch (the first two sequences)
    model = model.double()
    torch.set_default_dtype(torch.float64)  # transformers 4.35 builds its causal mask in the default dtype
    model.train()
    # (peft 0.3.0 leaves the wrapped original embed_tokens / lm_head requires_grad, but they are
    # not used in the forward pass, get no gradient and AdamW skips them: leave them out)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad and "original_module" not in n}
    state_names = list(get_peft_model_state_dict(model).keys())

    def state_key(param_name):
        # parameter name -> PEFT state-dict key (drop the adapter name, as get_peft_model_state_dict does)
        k = param_name.replace(".default.", ".").replace("modules_to_save.", "")
        if k not in state_names:
            raise SystemExit(f"cannot map {param_name} (got {k})")
        return k

    model.zero_grad()
    loss = loss_of(model, [seqs[i] for i in micro[0]])
    loss.backward()
    grads = {state_key(n): p.grad.detach().float().contiguous() for n, p in named.items()}
    save_file(grads, os.path.join(OUT, "grads.safetensors"))
    first_loss = loss.item()

    # 10 HF-Trainer-style steps
    model.zero_grad()
    params = [p for p in named.values()]
    opt = torch.optim.AdamW(params, lr=OPT["lr"], betas=OPT["betas"], eps=OPT["eps"],
                            weight_decay=OPT["weight_decay"])
    sched = transformers.get_cosine_schedule_with_warmup(opt, OPT["warmup"], OPT["steps"])
    steps = []
    for step in range(OPT["steps"]):
        total = 0.0
        for mb in micro:
            l = loss_of(model, [seqs[i] for i in mb]) / OPT["grad_accum"]
            l.backward()
            total += l.item()
        norm = torch.nn.utils.clip_grad_norm_(params, OPT["max_grad_norm"]).item()
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad()
        steps.append({"loss": total, "lr": lr, "grad_norm": norm})
        print(f"step {step + 1}: loss {total:.6f} lr {lr:.6g} grad_norm {norm:.6f}")
    final = {state_key(n): float(p.detach().norm()) for n, p in named.items()}

    info = {
        "seed": SEED, "config": CONFIG, "lora": LORA, "opt": OPT, "seqs": seqs, "micro_batches": micro,
        "loss": first_loss, "steps": steps, "final_param_norms": final,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "note": "grads.safetensors: d loss(micro_batches[0]) / d param, float64 autograd stored as float32; "
                "q/k lora_B rows and their gradients are in the HF (rotate-half) layout",
    }
    with open(os.path.join(OUT, "train.json"), "w") as f:
        json.dump(info, f, indent=1)
    print("loss", first_loss)


if __name__ == "__main__":
    main()
