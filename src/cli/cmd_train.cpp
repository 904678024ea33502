// calpaca train pt|sft — LoRA pre-training / instruction fine-tuning on a GGUF base, writing a
// PEFT adapter (data-parallel under `mpirun -np K`, see train/distributed.h); calpaca train plot —
// the loss curves of a training log as a PNG.
#include <cstdio>
#include <filesystem>

#include "calpaca/base/error.h"
#include "calpaca/generate/chat_template.h"
#include "calpaca/train/distributed.h"
#include "calpaca/train/plot.h"
#include "calpaca/train/trainer.h"
#include "common.h"

namespace calpaca::cli {

namespace {

struct TrainCli {
    std::string model, vocab, output, template_name, targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
    std::string schedule = "cosine", peft_path;
    std::vector<std::string> data, eval_data;
    int threads = 0;
    int64_t steps = 0, batch_size = 1, grad_accum = 8, block_size = 512, max_seq_length = 512, lora_r = 8;
    int64_t save_every = 200, keep = 3, eval_every = 100, log_every = 10, warmup_steps = -1;
    double epochs = 1.0, lr = -1, warmup_ratio = -1, weight_decay = -1, max_grad_norm = 1.0;
    float lora_alpha = 32, lora_dropout = 0.05f;
    uint64_t seed = 42;
    bool resume = false, no_modules_to_save = false, no_train_embed = false, no_train_head = false;
    bool no_recompute = false, no_cache = false, add_eos = false, quiet = false;
};

void add_train_options(CLI::App* app, TrainCli& o, bool pt) {
    app->add_option("-m,--model", o.model, "base model (GGUF: F32/F16/BF16, or quantized e.g. Q8_0/Q4_0, QLoRA-style)")->required();
    app->add_option("--vocab", o.vocab, "tokenizer.model to use instead of the one in the GGUF");
    app->add_option("--data", o.data, pt ? "text files (one example per line)" : "Alpaca JSON files (list or JSON lines)")
        ->required();
    app->add_option("-o,--output", o.output, "output directory (adapter; checkpoints/; train_log.csv)")->required();
    app->add_option("--eval-data", o.eval_data, "held-out files of the same kind: eval loss and perplexity");
    app->add_option("--steps", o.steps, "optimizer steps (default: from --epochs)");
    app->add_option("--epochs", o.epochs, "epochs when --steps is not given (default 1)");
    app->add_option("--lr", o.lr, pt ? "peak learning rate (default 2e-4)" : "peak learning rate (default 1e-4)");
    app->add_option("--batch-size", o.batch_size, "sequences per micro-batch (default 1)");
    app->add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step (default 8)");
    if (pt) {
        app->add_option("--block-size", o.block_size, "tokens per training block (default 512)");
        app->add_flag("--add-eos", o.add_eos, "append EOS to every line (as v2's run_clm_pt_with_peft.py)");
    } else {
        app->add_option("--max-seq-length", o.max_seq_length, "truncate examples to this many tokens (default 512)");
        app->add_option("--template", o.template_name,
                        "prompt template: alpaca | alpaca-2 (default: from the vocabulary size; 55296 → alpaca-2)");
    }
    app->add_option("--lora-r", o.lora_r, "LoRA rank (default 8)");
    app->add_option("--lora-alpha", o.lora_alpha, "LoRA alpha; scaling = alpha / r (default 32)");
    app->add_option("--lora-dropout", o.lora_dropout, "dropout on the LoRA input (default 0.05)");
    app->add_option("--lora-targets", o.targets, "comma-separated modules or 'all' (default: all seven projections)");
    app->add_flag("--no-modules-to-save", o.no_modules_to_save, "freeze token_embd and output (train LoRA only)");
    app->add_flag("--no-train-embed", o.no_train_embed, "freeze token_embd only");
    app->add_flag("--no-train-head", o.no_train_head, "freeze output (lm_head) only");
    app->add_option("--peft-path", o.peft_path, "start from this PEFT adapter (e.g. SFT on top of a PT adapter)");
    app->add_option("--scheduler", o.schedule, "cosine | linear | constant (default cosine)");
    app->add_option("--warmup-ratio", o.warmup_ratio, pt ? "warm-up fraction (default 0.05)" : "warm-up fraction (default 0.03)");
    app->add_option("--warmup-steps", o.warmup_steps, "warm-up steps (overrides --warmup-ratio)");
    app->add_option("--weight-decay", o.weight_decay, pt ? "AdamW weight decay (default 0.01)" : "AdamW weight decay (default 0)");
    app->add_option("--max-grad-norm", o.max_grad_norm, "clip the global gradient norm (default 1.0; 0 = off)");
    app->add_option("--seed", o.seed, "seed of LoRA init, data order and dropout (default 42)");
    app->add_option("--save-every", o.save_every, "checkpoint every N steps (default 200; 0 = only the final adapter)");
    app->add_option("--keep", o.keep, "checkpoints to keep (default 3)");
    app->add_option("--eval-every", o.eval_every, "evaluate every N steps (default 100)");
    app->add_option("--log-every", o.log_every, "log line every N steps when stderr is not a terminal (default 10)");
    app->add_flag("--resume", o.resume, "continue from the newest checkpoint in the output directory");
    app->add_flag("--no-recompute", o.no_recompute, "keep all activations instead of recomputing them (more memory)");
    app->add_flag("--no-cache", o.no_cache, "do not read or write the tokenized-data cache");
    app->add_option("-t,--threads", o.threads, "threads (default: physical cores / MPI processes on this machine)");
    app->add_flag("-q,--quiet", o.quiet, "no progress or log lines");
}

int train_on(const TrainCli& o, bool pt, Distributed& dist) {
    if (o.threads < 0) fail("--threads must be positive, got {}", o.threads);
    const bool root = dist.is_root();
    auto model = Model::load(o.model, o.vocab);
    const BaseWeights base = BaseWeights::from_model(*model);
    LoraSettings ls;
    ls.r = o.lora_r;
    ls.alpha = o.lora_alpha;
    ls.dropout = o.lora_dropout;
    ls.targets = parse_lora_targets(o.targets);
    ls.train_embed = !(o.no_modules_to_save || o.no_train_embed);
    ls.train_head = !(o.no_modules_to_save || o.no_train_head);
    auto params = TrainableParams::create(base, ls, o.seed);
    if (!o.peft_path.empty()) params->load_peft(o.peft_path);

    DataOptions d;
    d.kind = pt ? DataKind::PT : DataKind::SFT;
    d.block_size = o.block_size;
    d.add_eos = o.add_eos;
    d.max_seq_length = o.max_seq_length;
    d.template_name = o.template_name;
    if (!pt && d.template_name.empty()) {
        d.template_name = template_for_vocab_size(model->tokenizer().size());
        if (d.template_name.empty()) d.template_name = "alpaca";
    }
    d.use_cache = !o.no_cache;
    if (pt && o.block_size > model->config().n_ctx_train)
        fail("--block-size {} exceeds the model's context length {}", o.block_size, model->config().n_ctx_train);
    // Under MPI rank 0 tokenizes first (and writes the data cache); the others then read the cache.
    std::vector<Example> data, eval;
    for (int pass = 0; pass < 2; ++pass) {
        if (pass == 1) dist.barrier();
        if (root != (pass == 0)) continue;
        data = load_dataset(o.data, model->tokenizer(), d, !o.quiet && root);
        if (!o.eval_data.empty()) eval = load_dataset(o.eval_data, model->tokenizer(), d, !o.quiet && root);
    }
    uint64_t data_fp = 0;
    for (const Example& e : data) {
        data_fp = hash_bytes(e.ids.data(), e.ids.size() * 4, data_fp);
        data_fp = hash_bytes(e.labels.data(), e.labels.size() * 4, data_fp);
    }

    TrainOptions t;
    t.output_dir = o.output;
    t.base_name = std::filesystem::path(o.model).filename().string();
    t.steps = o.steps;
    t.epochs = o.epochs;
    t.lr = o.lr > 0 ? o.lr : (pt ? 2e-4 : 1e-4);
    t.batch_size = o.batch_size;
    t.grad_accum = o.grad_accum;
    t.warmup_ratio = o.warmup_ratio >= 0 ? o.warmup_ratio : (pt ? 0.05 : 0.03);
    t.warmup_steps = o.warmup_steps;
    t.schedule = parse_lr_schedule(o.schedule);
    t.adam.weight_decay = o.weight_decay >= 0 ? o.weight_decay : (pt ? 0.01 : 0.0);
    t.max_grad_norm = o.max_grad_norm;
    t.seed = o.seed;
    t.save_every = o.save_every;
    t.keep_checkpoints = static_cast<int>(o.keep);
    t.eval_every = o.eval_every;
    t.log_every = o.log_every;
    t.resume = o.resume;
    t.recompute = !o.no_recompute;
    t.verbose = !o.quiet;
    // processes started on the same machine share its cores
    ThreadPool pool(o.threads > 0 ? o.threads : std::max(1, default_thread_count() / dist.local_size()));
    const TrainResult r = train(base, *params, data, eval, t, &pool, data_fp, &dist);
    if (root)
        std::printf("steps %lld, final loss %.6f%s, %.1f tokens/s\n", (long long)r.steps, r.final_loss,
                    r.eval_loss >= 0 ? fmt::format(", eval loss {:.6f} (perplexity {:.3f})", r.eval_loss,
                                                   std::exp(r.eval_loss)).c_str()
                                     : "",
                    r.tokens_per_second);
    return 0;
}

int run_train(const TrainCli& o, bool pt) {
    const auto dist = distributed_from_environment();
    try {
        return train_on(o, pt, *dist);
    } catch (const std::exception& e) {
        if (dist->size() == 1) throw;
        // the other processes may wait in a collective operation for this one: end them all
        std::fprintf(stderr, "calpaca: error: %s (MPI rank %d)\n", e.what(), dist->rank());
        dist->abort(1);
    }
    return 1;  // not reached: abort() ends the process
}

struct EvalCli {
    std::string model, vocab, lora, kind = "pt", template_name;
    std::vector<std::string> data;
    int64_t block_size = 512, max_seq_length = 512;
    int threads = 0;
    bool add_eos = false;
};

int run_eval(const EvalCli& o) {
    if (o.kind != "pt" && o.kind != "sft") fail("--kind must be pt or sft, got '{}'", o.kind);
    auto model = Model::load(o.model, o.vocab);
    const BaseWeights base = BaseWeights::from_model(*model);
    LoraSettings ls;
    ls.targets.clear();
    ls.train_embed = ls.train_head = false;
    if (!o.lora.empty()) ls = read_peft_settings(o.lora);
    auto params = TrainableParams::create(base, ls, 0);
    if (!o.lora.empty()) params->load_peft(o.lora);
    DataOptions d;
    d.kind = o.kind == "pt" ? DataKind::PT : DataKind::SFT;
    d.block_size = o.block_size;
    d.add_eos = o.add_eos;
    d.max_seq_length = o.max_seq_length;
    d.template_name = o.template_name;
    if (d.template_name.empty()) {
        d.template_name = template_for_vocab_size(model->tokenizer().size());
        if (d.template_name.empty()) d.template_name = "alpaca";
    }
    const auto data = load_dataset(o.data, model->tokenizer(), d, false);
    ThreadPool pool(o.threads > 0 ? o.threads : default_thread_count());
    LlamaTrainModel m(base, *params, &pool, true);
    int64_t n = 0;
    for (const Example& e : data) n += e.n_valid_targets();
    const double loss = evaluate(m, data);
    std::printf("loss %.6f perplexity %.4f over %lld tokens in %zu examples\n", loss, std::exp(loss), (long long)n,
                data.size());
    return 0;
}

Command add_train(CLI::App& root) {
    auto* app = root.add_subcommand("train", "LoRA pre-training (pt) and instruction fine-tuning (sft); loss plots");
    app->require_subcommand(1);
    auto pt_opts = std::make_shared<TrainCli>();
    auto sft_opts = std::make_shared<TrainCli>();
    auto* pt = app->add_subcommand("pt", "causal-LM LoRA training on raw text (run_clm_pt_with_peft.py)");
    auto* sft = app->add_subcommand("sft", "instruction tuning on Alpaca JSON (run_clm_sft_with_peft.py)");
    add_train_options(pt, *pt_opts, true);
    add_train_options(sft, *sft_opts, false);
    auto* ev = app->add_subcommand("eval", "mean token loss and perplexity of a base (+ a PEFT adapter applied on the fly)");
    auto eo = std::make_shared<EvalCli>();
    ev->add_option("-m,--model", eo->model, "base model (GGUF)")->required();
    ev->add_option("--vocab", eo->vocab, "tokenizer.model to use instead of the one in the GGUF");
    ev->add_option("--lora", eo->lora, "PEFT adapter directory applied on the fly (none: the base alone)");
    ev->add_option("--data", eo->data, "data files")->required();
    ev->add_option("--kind", eo->kind, "pt (text lines, blocks) or sft (Alpaca JSON)");
    ev->add_option("--block-size", eo->block_size, "pt: tokens per block (default 512)");
    ev->add_flag("--add-eos", eo->add_eos, "pt: append EOS to every line");
    ev->add_option("--max-seq-length", eo->max_seq_length, "sft: truncation (default 512)");
    ev->add_option("--template", eo->template_name, "sft: alpaca | alpaca-2 (default: by vocabulary size)");
    ev->add_option("-t,--threads", eo->threads, "threads (default: physical cores)");
    auto* plot = app->add_subcommand("plot", "draw train/eval loss of a train_log.csv as a PNG");
    auto log = std::make_shared<std::string>();
    auto png = std::make_shared<std::string>();
    plot->add_option("LOG", *log, "train_log.csv written by calpaca train")->required();
    plot->add_option("-o,--output", *png, "PNG file to write")->required();
    const char* examples =
        "Examples:\n"
        "  calpaca train pt -m base.gguf --data corpus.txt -o out/pt --block-size 512 --steps 1000\n"
        "  calpaca train sft -m base.gguf --data alpaca.json --eval-data dev.json -o out/sft --template alpaca-2\n"
        "  calpaca train sft -m base.gguf --data alpaca.json -o out/sft --resume\n"
        "  mpirun -np 4 calpaca train pt -m base.gguf --data corpus.txt -o out/pt --batch-size 2 --grad-accum 4\n"
        "  calpaca train sft -m base-q4_0.gguf --data alpaca.json -o out/sft-q      # frozen Q4_0 base (QLoRA-style)\n"
        "  calpaca train plot out/sft/train_log.csv -o loss.png\n"
        "  calpaca train eval -m base.gguf --lora out/pt --data heldout.txt --block-size 512\n"
        "  calpaca merge-lora --base base.gguf --lora out/sft -o merged.gguf";
    app->footer(examples);
    pt->footer(examples);
    sft->footer(examples);
    plot->footer(examples);
    ev->footer(examples);
    return {app, [=]() {
                if (pt->parsed()) return run_train(*pt_opts, true);
                if (sft->parsed()) return run_train(*sft_opts, false);
                if (ev->parsed()) return run_eval(*eo);
                plot_loss_png(*log, *png);
                return 0;
            }};
}

}  // namespace

static const Registration kRegistration("train", add_train);

}  // namespace calpaca::cli
