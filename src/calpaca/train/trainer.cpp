#include "calpaca/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/progress.h"
#include "calpaca/train/checkpoint.h"
#include "calpaca/train/distributed.h"

namespace calpaca {

std::vector<size_t> epoch_order(uint64_t seed, uint64_t epoch, size_t n) {
    std::vector<size_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = i;
    const uint64_t stream = mix64(seed ^ mix64(epoch + 0x5EED));
    for (size_t i = n; i > 1; --i) {
        const size_t j = static_cast<size_t>(hash_uniform(stream, i) * static_cast<double>(i));
        std::swap(v[i - 1], v[std::min(j, i - 1)]);
    }
    return v;
}

double evaluate(LlamaTrainModel& model, const std::vector<Example>& data, Distributed* dist) {
    SingleProcess single;
    Distributed& d = dist ? *dist : single;
    double acc[2] = {0, 0};  // loss sum, valid labels
    for (size_t i = 0; i < data.size(); ++i) {
        const int64_t v = data[i].n_valid_targets();
        if (v == 0 || !d.owns(i)) continue;
        acc[0] += model.loss(data[i]);
        acc[1] += static_cast<double>(v);
    }
    if (d.size() > 1) d.allreduce_sum(acc, 2);
    return acc[1] > 0 ? acc[0] / acc[1] : 0.0;
}

namespace {

constexpr const char* kCsvHeader = "step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,elapsed_s,eval_loss,eval_ppl";

// Keeps the header and the rows of steps <= last_step (a resumed run rewrites what follows).
void truncate_log(const std::string& path, int64_t last_step) {
    if (!std::filesystem::exists(path)) {
        write_file_atomic(path, std::string(kCsvHeader) + "\n");
        return;
    }
    std::istringstream in(read_file(path));
    std::string line, out = std::string(kCsvHeader) + "\n";
    std::getline(in, line);
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        const long long s = std::atoll(line.c_str());
        if (s <= last_step) out += line + "\n";
    }
    write_file_atomic(path, out);
}

uint64_t run_fingerprint(const BaseWeights& base, const TrainableParams& p, const TrainOptions& o, int64_t total,
                         uint64_t data_fp) {
    const auto& c = base.cfg;
    const auto& s = p.settings();
    std::string key = fmt::format(
        "v1 {} {} {} {} {} {} {} | {} {} {} {} {} {} | {} {} {} {} {} {} {} {} {} {} {} {} {}", c.n_vocab, c.n_embd,
        c.n_layer, c.n_head, c.n_head_kv, c.n_ff, c.rms_eps, s.r, s.alpha, s.dropout, s.train_embed, s.train_head,
        s.targets.size(), total, o.lr, o.batch_size, o.grad_accum, o.warmup_ratio, o.warmup_steps,
        static_cast<int>(o.schedule), o.adam.beta1, o.adam.beta2, o.adam.eps, o.adam.weight_decay, o.max_grad_norm,
        o.seed);
    for (LoraTarget t : s.targets) key += lora_target_name(t);
    return hash_bytes(key.data(), key.size(), data_fp);
}

// Every rank continues from rank 0's parameters, optimizer state and step (its checkpoint on --resume).
void sync_from_root(Distributed& d, TrainableParams& p, AdamW& adam, int64_t& step) {
    int64_t s[2] = {step, adam.steps()};
    d.broadcast(s, sizeof s, 0);
    step = s[0];
    adam.set_steps(s[1]);
    for (size_t k = 0; k < p.params().size(); ++k)
        for (std::vector<float>* v : {&p.params()[k]->w, &adam.m()[k], &adam.v()[k]})
            d.broadcast(v->data(), v->size() * sizeof(float), 0);
}

uint64_t weights_hash(const TrainableParams& p) {
    uint64_t h = 0;
    for (const auto& q : p.params()) h = hash_bytes(q->w.data(), q->w.size() * sizeof(float), h);
    return h;
}

}  // namespace

TrainResult train(const BaseWeights& base, TrainableParams& params, const std::vector<Example>& data,
                  const std::vector<Example>& eval_data, const TrainOptions& o, ThreadPool* pool,
                  uint64_t data_fingerprint, Distributed* dist) {
    SingleProcess single;
    Distributed& d = dist ? *dist : single;
    const bool root = d.is_root(), verbose = o.verbose && root;
    if (data.empty()) fail("no training examples");
    if (o.batch_size <= 0) fail("--batch-size must be positive, got {}", o.batch_size);
    if (o.grad_accum <= 0) fail("--grad-accum must be positive, got {}", o.grad_accum);
    if (!(o.lr > 0)) fail("--lr must be positive, got {}", o.lr);
    if (o.output_dir.empty()) fail("no output directory (-o)");
    const uint64_t per_step = static_cast<uint64_t>(o.batch_size * o.grad_accum);
    const int64_t total =
        o.steps > 0 ? o.steps
                    : std::max<int64_t>(1, static_cast<int64_t>(o.epochs * static_cast<double>(data.size()) /
                                                                static_cast<double>(per_step)));
    const int64_t warmup = o.warmup_steps >= 0 ? o.warmup_steps
                                               : static_cast<int64_t>(std::ceil(static_cast<double>(total) * o.warmup_ratio));
    if (root) std::filesystem::create_directories(o.output_dir);
    LlamaTrainModel model(base, params, pool, o.recompute);
    AdamW adam(params.params(), o.adam);
    const uint64_t fp = run_fingerprint(base, params, o, total, data_fingerprint);
    const std::string log_path = o.output_dir + "/train_log.csv";
    if (d.size() > 1) check_same_on_all_ranks(d, fp, "the data, base model or hyper-parameters");

    int64_t start = 0;
    if (o.resume && root) {
        const std::string ck = latest_checkpoint(o.output_dir);
        if (ck.empty()) fail("--resume: no checkpoint under {}/checkpoints", o.output_dir);
        const CheckpointInfo info = load_checkpoint(ck, params, adam);
        if (info.fingerprint != fp)
            fail("--resume: {} was made with other data, base model or hyper-parameters (fingerprint {:016x}, this run "
                 "{:016x})",
                 ck, info.fingerprint, fp);
        start = info.step;
        if (verbose) std::fprintf(stderr, "train: resuming from %s (step %lld)\n", ck.c_str(), (long long)start);
    }
    if (d.size() > 1) sync_from_root(d, params, adam, start);
    std::FILE* log = nullptr;
    if (root) {
        truncate_log(log_path, start);
        log = std::fopen(log_path.c_str(), "a");
        if (!log) fail("cannot open {} for appending", log_path);
    }

    if (verbose)
        std::fprintf(stderr,
                     "train: %zu examples, %lld steps of %lld x %lld sequences, %lld warm-up steps, %lld trainable "
                     "parameters%s\n",
                     data.size(), (long long)total, (long long)o.grad_accum, (long long)o.batch_size, (long long)warmup,
                     (long long)params.n_trainable(),
                     d.size() > 1 ? fmt::format(", {} MPI processes", d.size()).c_str() : "");
    if (verbose && per_step < static_cast<uint64_t>(d.size()))
        std::fprintf(stderr, "train: warning: %llu sequences per step for %d processes: some have nothing to do\n",
                     (unsigned long long)per_step, d.size());
    Progress prog("train", static_cast<uint64_t>(total - start), verbose);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t cur_epoch = UINT64_MAX;
    std::vector<size_t> order;
    TrainResult res;
    int64_t tokens_done = 0;
    for (int64_t step = start; step < total; ++step) {
        params.zero_grad();
        double loss = 0;
        int64_t step_tokens = 0;
        for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
            std::vector<const Example*> mb;
            for (int64_t k = 0; k < o.batch_size; ++k) {
                const uint64_t pos = static_cast<uint64_t>(step) * per_step + static_cast<uint64_t>(micro * o.batch_size + k);
                const uint64_t epoch = pos / data.size();
                if (epoch != cur_epoch) {
                    order = epoch_order(o.seed, epoch, data.size());
                    cur_epoch = epoch;
                }
                mb.push_back(&data[order[pos % data.size()]]);
            }
            int64_t n_valid = 0;
            for (const Example* e : mb) n_valid += e->n_valid_targets();
            if (n_valid == 0) continue;  // HF would produce NaN; such a micro-batch contributes nothing
            const float scale = 1.0f / static_cast<float>(n_valid * o.grad_accum);
            double sum = 0;
            for (size_t k = 0; k < mb.size(); ++k) {
                step_tokens += static_cast<int64_t>(mb[k]->ids.size());
                const uint64_t slot = static_cast<uint64_t>(micro * o.batch_size) + k;  // in the step's global batch
                if (!d.owns(slot)) continue;
                const DropoutKey key{o.seed, static_cast<uint64_t>(step), slot};
                sum += model.forward_backward(*mb[k], scale, key, true);
            }
            loss += sum / static_cast<double>(n_valid) / static_cast<double>(o.grad_accum);
        }
        if (d.size() > 1) {  // the sums over all ranks' sequences: the single-process gradient and loss
            for (auto& q : params.params()) d.allreduce_sum(q->g.data(), q->g.size());
            d.allreduce_sum(&loss, 1);
        }
        const double norm = clip_grad_norm(params.params(), o.max_grad_norm);
        const double lr = lr_at(step, total, warmup, o.schedule, o.lr);
        adam.step(params.params(), lr);
        tokens_done += step_tokens;
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double tps = elapsed > 0 ? static_cast<double>(tokens_done) / elapsed : 0.0;
        res.final_loss = loss;
        res.tokens_per_second = tps;
        std::string eval_cols = ",";
        const bool last = step + 1 == total;
        if (!eval_data.empty() && ((o.eval_every > 0 && (step + 1) % o.eval_every == 0) || last)) {
            const double el = evaluate(model, eval_data, &d);
            res.eval_loss = el;
            eval_cols = fmt::format("{:.6f},{:.4f}", el, std::exp(el));
            if (verbose)
                std::fprintf(stderr, "%strain: step %lld eval loss %.4f perplexity %.3f\n",
                             Progress::stderr_is_terminal() ? "\n" : "", (long long)(step + 1), el, std::exp(el));
        }
        const double epoch_f = static_cast<double>((step + 1) * static_cast<int64_t>(per_step)) / static_cast<double>(data.size());
        if (log) {
            std::fprintf(log, "%lld,%.4f,%.6f,%.6g,%.6f,%lld,%.1f,%.2f,%s\n", (long long)(step + 1), epoch_f, loss, lr,
                         norm, (long long)step_tokens, tps, elapsed, eval_cols.c_str());
            std::fflush(log);
        }
        if (verbose && !Progress::stderr_is_terminal() && o.log_every > 0 &&
            ((step + 1) % o.log_every == 0 || step == start || last))
            std::fprintf(stderr, "train: step %lld/%lld loss %.4f lr %.3g grad_norm %.3f %.0f tok/s\n",
                         (long long)(step + 1), (long long)total, loss, lr, norm, tps);
        prog.update(static_cast<uint64_t>(step + 1 - start), fmt::format("loss {:.4f} lr {:.2g} {:.0f} tok/s", loss, lr, tps));
        if (o.save_every > 0 && (step + 1) % o.save_every == 0 && !last) {
            if (d.size() > 1) check_same_on_all_ranks(d, weights_hash(params), "the weights");
            if (root)
                save_checkpoint(o.output_dir, params, adam, CheckpointInfo{step + 1, fp}, o.base_name,
                                o.keep_checkpoints);
        }
        res.steps = step + 1;
    }
    prog.finish();
    if (log) std::fclose(log);
    if (d.size() > 1) check_same_on_all_ranks(d, weights_hash(params), "the trained weights");
    if (root) params.save_peft(o.output_dir, o.base_name);
    if (verbose) std::fprintf(stderr, "train: adapter written to %s\n", o.output_dir.c_str());
    return res;
}

}  // namespace calpaca
