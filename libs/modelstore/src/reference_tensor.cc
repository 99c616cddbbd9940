#include "bitloom/modelstore/reference_tensor.h"

#include <cstring>

#include "bitloom/core/dtype.h"

namespace bitloom::modelstore {

void EncodeReferenceTensor(const std::string& name, absl::Span<const uint64_t> shape,
                           absl::Span<const float> values, v1::TensorEntry* entry,
                           std::vector<uint8_t>* bytes) {
  entry->set_name(name);
  for (uint64_t d : shape) entry->add_shape(d);
  if (shape.size() == 1) {
    entry->set_codec(v1::CODEC_F32);
    entry->set_bits_per_weight(32);
    bytes->resize(values.size() * sizeof(float));
    std::memcpy(bytes->data(), values.data(), bytes->size());
    return;
  }
  entry->set_codec(v1::CODEC_F16);
  entry->set_bits_per_weight(16);
  bytes->resize(values.size() * sizeof(uint16_t));
  auto* out = reinterpret_cast<uint16_t*>(bytes->data());
  for (size_t j = 0; j < values.size(); ++j) out[j] = F32ToF16(values[j]);
}

}  // namespace bitloom::modelstore
