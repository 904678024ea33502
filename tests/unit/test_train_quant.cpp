// Frozen quantized bases (QLoRA-style). The fixture model's matrices are quantized to Q8_0 / Q4_0
// with the project's quantizer; a frozen quantized base stands for the f32 model whose weights are
// the dequantized values, so the gradients of every trainable parameter (and the loss) must equal
// those of the f32 path on a base holding exactly those dequantized values.
#include <gtest/gtest.h>

#include <cmath>

#include "calpaca/base/threadpool.h"
#include "calpaca/tensor/quant.h"
#include "train_fixture.h"

namespace calpaca {
namespace {

using test::train_fixture_base;
using test::train_fixture_dir;
using test::train_fixture_lora;
using test::train_fixture_seqs;

std::vector<MatrixView*> matrices(BaseWeights& b) {
    std::vector<MatrixView*> v = {&b.tok_embd, &b.output};
    for (LayerWeights& L : b.layers)
        for (MatrixView* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) v.push_back(m);
    return v;
}

struct QuantBases {
    BaseWeights q;   // matrices quantized to the type (views into q.owned)
    BaseWeights dq;  // the same matrices dequantized to f32
    int n_quantized = 0;
};

// Every matrix whose row length the type's blocks divide is quantized (down_proj, 88 columns, stays
// f32, as llama.cpp's quantizer falls back for such rows): a mixed base, as real files are.
QuantBases quant_bases(DType t) {
    QuantBases b{train_fixture_base(), train_fixture_base(), 0};
    const auto mq = matrices(b.q), md = matrices(b.dq);
    for (size_t i = 0; i < mq.size(); ++i) {
        MatrixView& m = *mq[i];
        if (m.cols % static_cast<int64_t>(dtype_info(t).block_size) != 0) continue;
        const uint64_t rb = row_bytes(t, static_cast<uint64_t>(m.cols));
        std::vector<float> store((rb * static_cast<uint64_t>(m.rows) + 3) / 4);
        auto* dst = reinterpret_cast<uint8_t*>(store.data());
        for (int64_t r = 0; r < m.rows; ++r)
            quantize_row_ref(t, static_cast<const float*>(m.data) + r * m.cols, dst + static_cast<uint64_t>(r) * rb,
                             m.cols);
        std::vector<float> deq(static_cast<size_t>(m.rows * m.cols));
        to_f32(t, dst, deq.data(), deq.size());
        b.q.owned.push_back(std::move(store));  // moving a vector keeps its buffer: older views stay valid
        m = MatrixView{b.q.owned.back().data(), t, m.rows, m.cols};
        b.dq.owned.push_back(std::move(deq));
        *md[i] = MatrixView{b.dq.owned.back().data(), DType::F32, m.rows, m.cols};
        ++b.n_quantized;
    }
    return b;
}

// Deterministic non-zero B (and A) so that every LoRA gradient is non-zero.
void fill_lora(TrainableParams& p) {
    uint64_t k = 1;
    for (auto& q : p.params()) {
        if (q.get() == p.embed() || q.get() == p.head()) continue;
        for (size_t i = 0; i < q->w.size(); ++i) q->w[i] = static_cast<float>(0.2 * (hash_uniform(k, i) - 0.5));
        ++k;
    }
}

// Loss of the fixture's first micro-batch (HF mean) and the gradients it leaves in `params`.
double micro_batch(const BaseWeights& base, TrainableParams& params, ThreadPool* pool, bool recompute) {
    LlamaTrainModel model(base, params, pool, recompute);
    const auto seqs = train_fixture_seqs();
    const auto mb = test::train_fixture_json()["micro_batches"][0].get<std::vector<int>>();
    int64_t n_valid = 0;
    for (int i : mb) n_valid += seqs[static_cast<size_t>(i)].n_valid_targets();
    double sum = 0;
    for (size_t k = 0; k < mb.size(); ++k)
        sum += model.forward_backward(seqs[static_cast<size_t>(mb[k])], 1.0f / static_cast<float>(n_valid),
                                      DropoutKey{0, 0, k}, false);
    return sum / static_cast<double>(n_valid);
}

// max over parameters of ||g_a - g_b|| / ||g_b||
double worst_rel(const TrainableParams& a, const TrainableParams& b, std::string* name) {
    double worst = 0;
    for (size_t i = 0; i < a.params().size(); ++i) {
        const Param &pa = *a.params()[i], &pb = *b.params()[i];
        double num = 0, den = 0;
        for (size_t j = 0; j < pa.g.size(); ++j) {
            const double d = static_cast<double>(pa.g[j]) - pb.g[j];
            num += d * d;
            den += static_cast<double>(pb.g[j]) * pb.g[j];
        }
        EXPECT_GT(den, 0.0) << pb.name << ": zero reference gradient";
        const double rel = std::sqrt(num / std::max(den, 1e-300));
        if (rel >= worst) worst = rel, *name = pb.name;
    }
    return worst;
}

std::unique_ptr<TrainableParams> make_params(const BaseWeights& base, bool modules_to_save) {
    LoraSettings s = train_fixture_lora();
    s.train_embed = s.train_head = modules_to_save;
    auto p = TrainableParams::create(base, s, 3);
    fill_lora(*p);
    return p;
}

void check_type(DType t) {
    QuantBases b = quant_bases(t);
    ASSERT_EQ(b.n_quantized, 2 + 6 * static_cast<int>(b.q.layers.size())) << "every matrix but down_proj";
    ASSERT_EQ(b.q.layers[0].wq.type, t);
    ThreadPool pool(3);
    for (bool modules_to_save : {true, false}) {
        // modules_to_save: the trained embed/head are f32 copies of the dequantized base matrices;
        // frozen: the quantized token_embd rows and output matrix are used directly.
        auto pq = make_params(b.q, modules_to_save), pd = make_params(b.dq, modules_to_save);
        if (modules_to_save) {
            ASSERT_EQ(pq->embed()->w, pd->embed()->w) << "embed not the dequantized base";
            ASSERT_EQ(pq->head()->w, pd->head()->w) << "head not the dequantized base";
        }
        const double lq = micro_batch(b.q, *pq, &pool, false);
        const double ld = micro_batch(b.dq, *pd, nullptr, true);
        EXPECT_NEAR(lq, ld, 1e-6 * std::abs(ld)) << dtype_name(t);
        std::string name;
        const double rel = worst_rel(*pq, *pd, &name);
        EXPECT_LE(rel, 1e-5) << dtype_name(t) << " " << name;
        std::printf("[quant base] %s, modules_to_save %d: loss %.7f (f32 on dequantized %.7f), worst gradient "
                    "relative error %.3g (%s)\n",
                    dtype_name(t), modules_to_save, lq, ld, rel, name.c_str());
    }
}

TEST(TrainQuantBase, Q8_0GradientsEqualF32OnDequantizedWeights) { check_type(DType::Q8_0); }
TEST(TrainQuantBase, Q4_0GradientsEqualF32OnDequantizedWeights) { check_type(DType::Q4_0); }

TEST(TrainQuantBase, QuantizationIsInEffect) {
    // the Q4_0 base really is a different model from the f32 one (so the test above can fail)
    const BaseWeights f32 = train_fixture_base();
    QuantBases b = quant_bases(DType::Q4_0);
    auto pf = make_params(f32, true), pq = make_params(b.q, true);
    const double lf = micro_batch(f32, *pf, nullptr, true), lq = micro_batch(b.q, *pq, nullptr, true);
    EXPECT_GT(std::abs(lf - lq), 1e-5 * std::abs(lf));
    std::string name;
    EXPECT_GT(worst_rel(*pq, *pf, &name), 1e-4);
}

}  // namespace
}  // namespace calpaca
