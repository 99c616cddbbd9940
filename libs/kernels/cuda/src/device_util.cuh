// Device helpers shared by Bitloom's CUDA kernels: fp16 bit views, the SplitMix64 generator of the
// rotation signs, the tensor-core instruction the GEMVs are built on, and a compile-time loop.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

namespace bitloom::kernels::cuda::detail {

template <int... I, typename F>
__device__ __forceinline__ void StaticForImpl(std::integer_sequence<int, I...>, F&& f) {
  (f(std::integral_constant<int, I>{}), ...);
}
// f(std::integral_constant<int, i>) for i = 0..N−1, so indices stay compile-time constants and
// register arrays stay in registers.
template <int N, typename F>
__device__ __forceinline__ void StaticFor(F&& f) {
  StaticForImpl(std::make_integer_sequence<int, N>{}, f);
}

// SplitMix64 output number i (0-based) for state initialised to `seed`: the generator is a counter
// (state_i = seed + (i+1)·γ) followed by a mix, so any element's sign is computed independently.
// Must equal kernels/src/hadamard.cc's SplitMix64 sequence.
__device__ __forceinline__ uint64_t SplitMix64At(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The shared-memory address of a generic pointer into shared memory (PTX's .shared operands).
__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ __half2 U32AsHalf2(uint32_t u) {
  __half2 h;
  __builtin_memcpy(&h, &u, 4);
  return h;
}

__device__ __forceinline__ uint32_t Half2AsU32(__half2 h) {
  uint32_t u;
  __builtin_memcpy(&u, &h, 4);
  return u;
}

// D += A·B with A 16×16 fp16 (row), B 16×8 fp16 (col), D 16×8 fp32: mma.sync.m16n8k16, sm_80+.
// Fragment ownership (lane = 4·g + t): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..],
// a3 = A[g+8][2t+8..]; b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; d0,d1 = D[g][2t..2t+1],
// d2,d3 = D[g+8][2t..2t+1].
__device__ __forceinline__ void MmaM16N8K16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                            uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace bitloom::kernels::cuda::detail
