// Training checkpoints: OUTDIR/checkpoints/checkpoint-<step>/ holding
//   adapter_config.json, adapter_model.safetensors  the PEFT adapter at that step (usable as is)
//   state.safetensors   parameters in calpaca's internal layout and AdamW's m / v (f32, exact)
//   state.json          step, optimizer step count, the run's settings fingerprint
// A checkpoint is written into "checkpoint-<step>.tmp-<pid>" and renamed when complete, so a
// killed run never leaves a partial checkpoint under the real name; older ones beyond `keep`
// are removed after the rename.
#pragma once
#include <cstdint>
#include <string>

#include "calpaca/train/lora.h"
#include "calpaca/train/optimizer.h"

namespace calpaca {

struct CheckpointInfo {
    int64_t step = 0;
    uint64_t fingerprint = 0;  // hash of the data, base and hyper-parameters that must not change on resume
};

void save_checkpoint(const std::string& out_dir, const TrainableParams& p, const AdamW& opt, const CheckpointInfo& info,
                     const std::string& base_name, int keep);
// The newest complete checkpoint directory under out_dir/checkpoints, or "" if none.
std::string latest_checkpoint(const std::string& out_dir);
// Restores parameters and optimizer state; returns the info. Errors name the file.
CheckpointInfo load_checkpoint(const std::string& dir, TrainableParams& p, AdamW& opt);

}  // namespace calpaca
