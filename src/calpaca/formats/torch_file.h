// PyTorch zip checkpoints (.bin / .pth written by torch.save): the zip directory, the
// restricted unpickle of data.pkl, and the validation of every tensor view against its
// storage entry — without converting anything (TensorSource does that lazily).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "calpaca/formats/tensor_source.h"

namespace calpaca {

struct TorchTensorView {
    TensorInfo info;
    StridedTensor view;  // every element it can address lies inside the buffer (checked)
};

std::vector<TorchTensorView> parse_torch_checkpoint(const uint8_t* data, size_t size, const std::string& name);

}  // namespace calpaca
