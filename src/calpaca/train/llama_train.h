// Forward with saved activations and hand-written backward of a LLaMA model with LoRA adapters,
// for one sequence at a time (a micro-batch is a loop over its sequences: right-padding with a
// causal mask never changes the non-padded positions, so no padding is needed).
//
// Loss convention (HF LlamaForCausalLM): position t predicts labels[t+1]; labels equal to -100
// are ignored. forward_backward() returns the SUM of the token losses and adds
// `grad_scale * d(sum)/d(param)` to each Param::g; the trainer sets grad_scale to
// 1 / (valid labels in the micro-batch * grad_accum), which is HF's mean loss / accumulation.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "calpaca/model/model.h"
#include "calpaca/train/lora.h"
#include "calpaca/train/ops.h"

namespace calpaca {

class ThreadPool;

// The frozen base: views of F32/F16/BF16 or quantized (Q8_0, Q4_0, ...: QLoRA-style) matrices, into
// a mapped GGUF or into `owned`. Quantized matrices stay quantized in memory; the forward and the
// backward dequantize blocks of them on the fly (train_kernels.h: matmul_frozen, matmul_tn), so
// they compute exactly the f32 model whose weights are the dequantized values. A trained
// token_embd / output (modules_to_save) is an f32 copy in TrainableParams whatever its base type.
struct BaseWeights {
    LlamaConfig cfg;
    MatrixView tok_embd, output;
    std::vector<float> output_norm;
    std::vector<LayerWeights> layers;
    std::vector<std::vector<float>> owned;  // storage for weights that are not views of a file

    static BaseWeights from_model(const Model& m);
    const MatrixView& matrix(int64_t layer, LoraTarget t) const;
};

struct Example {
    std::vector<int32_t> ids;
    std::vector<int32_t> labels;  // same length; -100 = ignored
    int64_t n_valid_targets() const;  // labels[1..] that are not -100
};

// Identifies one forward pass for dropout masks (so a recomputed forward sees the same masks).
struct DropoutKey {
    uint64_t seed = 0;
    uint64_t step = 0;
    uint64_t sequence = 0;  // index of the sequence within the step
};

class LlamaTrainModel {
public:
    // `recompute`: keep only each layer's input during the forward and recompute the layer in the
    // backward (activation checkpointing, as --gradient_checkpointing): memory O(layers*T*E).
    LlamaTrainModel(const BaseWeights& base, TrainableParams& params, ThreadPool* pool, bool recompute = true);
    ~LlamaTrainModel();

    // Sum of token losses of ex; gradients accumulated with grad_scale (see above). `train`
    // enables LoRA dropout.
    double forward_backward(const Example& ex, float grad_scale, const DropoutKey& key, bool train = true);
    // Sum of token losses, no gradients, no dropout.
    double loss(const Example& ex);

private:
    struct LayerCache;
    void layer_forward(int64_t l, const float* x_in, int64_t T, LayerCache& c, float* x_out, const DropoutKey* key);
    void layer_backward(int64_t l, int64_t T, LayerCache& c, float* dx, const DropoutKey* key);
    void linear_fwd(int64_t l, LoraTarget t, const float* x, int64_t T, float* y, std::vector<float>& a,
                    std::vector<float>& xd, const DropoutKey* key);
    void linear_bwd(int64_t l, LoraTarget t, const float* x, const std::vector<float>& a,
                    const std::vector<float>& xd, const float* dy, int64_t T, float* dx, const DropoutKey* key);
    double head_and_loss(const float* x_last, const Example& ex, int64_t T, float grad_scale, float* dx, bool backward);
    void check_example(const Example& ex) const;

    const BaseWeights& base_;
    TrainableParams& params_;
    ThreadPool* pool_;
    bool recompute_;
    RopeTable rope_;
    int64_t rope_T_ = 0;
};

}  // namespace calpaca
