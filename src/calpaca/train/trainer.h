// The training loop: micro-batches of examples, gradient accumulation, clipping, AdamW with a
// warm-up + decay schedule, periodic evaluation, CSV log, checkpoints and resume.
//
// Determinism: the example order (a seeded shuffle per epoch), LoRA initialisation and dropout
// masks are pure functions of (seed, step, position), and every kernel's result is independent
// of the thread count, so a run is reproducible bit for bit, and a resumed run continues
// exactly as the uninterrupted one would have.
//
// Data parallel (`mpirun -np K`, see distributed.h): the sequences of each step are dealt out
// round-robin over the ranks, their gradients and losses summed with an all-reduce before
// clipping and AdamW, so every rank holds the same weights and the result equals one process
// with the same global batch up to the float summation order; rank 0 alone prints, writes the
// log, checkpoints and the adapter, and on --resume reads the checkpoint and broadcasts it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calpaca/train/dataset.h"
#include "calpaca/train/llama_train.h"
#include "calpaca/train/optimizer.h"

namespace calpaca {

class Distributed;
class ThreadPool;

struct TrainOptions {
    std::string output_dir;
    std::string base_name;        // adapter_config.json base_model_name_or_path
    int64_t steps = 0;            // 0: from epochs
    double epochs = 1.0;
    double lr = 2e-4;
    int64_t batch_size = 1;       // sequences per micro-batch
    int64_t grad_accum = 8;
    double warmup_ratio = 0.05;
    int64_t warmup_steps = -1;    // >= 0 overrides warmup_ratio
    LrSchedule schedule = LrSchedule::Cosine;
    AdamWConfig adam{0.9, 0.999, 1e-8, 0.01};
    double max_grad_norm = 1.0;
    uint64_t seed = 42;
    int64_t save_every = 200;     // 0: only at the end
    int keep_checkpoints = 3;
    int64_t eval_every = 100;     // 0: only at the end (when there is eval data)
    int64_t log_every = 10;
    bool resume = false;
    bool recompute = true;
    bool verbose = true;          // progress + log lines on stderr
};

struct TrainResult {
    int64_t steps = 0;
    double final_loss = 0;
    double eval_loss = -1;        // -1: no eval data
    double tokens_per_second = 0;
};

// Trains `params` in place; writes the adapter to opt.output_dir at the end. `dist`: the
// processes of a data-parallel run (nullptr: this process alone).
TrainResult train(const BaseWeights& base, TrainableParams& params, const std::vector<Example>& data,
                  const std::vector<Example>& eval_data, const TrainOptions& opt, ThreadPool* pool,
                  uint64_t data_fingerprint, Distributed* dist = nullptr);

// Mean token loss of a data set (no dropout); with `dist`, the examples are shared out over the
// ranks and every rank returns the total.
double evaluate(LlamaTrainModel& model, const std::vector<Example>& data, Distributed* dist = nullptr);

// The order of the n examples in epoch `epoch` (a seeded Fisher-Yates shuffle).
std::vector<size_t> epoch_order(uint64_t seed, uint64_t epoch, size_t n);

}  // namespace calpaca
