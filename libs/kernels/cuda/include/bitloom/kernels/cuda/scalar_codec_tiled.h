// The tiled GPU layout of 2-, 3-, 4- and 8-bit CODEC_HADAMARD_SCALAR codes, and the decode GEMV that
// reads it.
//
// The artifact's layout (kernels/scalar_codec.h) packs each row's codes in column order. The register
// GEMV (scalar_codec_gemv.h) decodes it with two HFMA2 per pair of codes because the 16 k-slots of
// one tensor-core mma come from four different 128-column scale groups. At load time the engine can
// instead rewrite a weight with K = 2, 3, 4 or 8 in place into tiles (docs/FORMAT.md keeps describing the
// artifact; this layout exists only in VRAM): per 16-row tile and 128-column group, lane (g, t) of a
// warp owns rows g and g+8 of columns [32t, 32t + 32) of the group, each 32-bit word holding its
// codes at fixed positions inside the two 16-bit halves. Then one LOP3 turns a word (or, at K = 3,
// the word shifted by 9; the one pair spread over three words takes three) into a tensor-core
// operand {1024 + q·2^(K·c)}, every mma reads one scale group, and the scale, the 1024
// offset and the grid centre are applied once per group to the fp32 accumulator (with activation sums
// from mma on a constant operand). Same bytes as the artifact's codes; the scales are not moved.
// docs/KERNELS.md ("Tiled layout") specifies the layout and has the numbers.
//
// A weight is tiled when TiledLayoutApplies: K = 2, 3, 4 or 8, rows a multiple of 16, cols a multiple of
// 128, group size a multiple of 128, and a 16-row tile small enough to pass through one block's
// shared memory during the rewrite. ScalarCodecGemvParams::tiled marks it; LaunchScalarCodecGemv(Group)
// then runs the tiled kernel (every entry of a group must be tiled, with at most two distinct K, or none
// tiled), and
// LaunchScalarCodecDequant expands it for the prefill GEMM. The rotating and streamed launches do not
// take tiled weights.
//
// Ownership: the caller owns every device buffer. The launchers are asynchronous on `stream`,
// allocate nothing, never synchronise and never log; thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"

namespace bitloom::kernels::cuda {

inline constexpr int64_t kTiledTileRows = 16;
inline constexpr int64_t kTiledGroupCols = 128;
// The in-place rewrite passes one 16-row tile (2·K·cols bytes) through the 227 KiB of shared memory
// an sm_90 block may have; TiledMaxCols(K) is the widest row that allows (29056 at K = 4).
inline constexpr int64_t kTiledMaxTileBytes = 227 * 1024;
int64_t TiledMaxCols(int bits);

// Whether `weight` (its weight fields, from MakeGemvParams) may be tiled. Ignores `tiled`.
bool TiledLayoutApplies(const ScalarCodecGemvParams& weight);

// Whether the weights of one grouped launch may all be tiled and launched together: each
// TiledLayoutApplies, with at most two distinct K among them (what one tiled launch reads).
bool TiledGroupApplies(absl::Span<const ScalarCodecGemvParams> weights);

// Rewrites `weight`'s codes (the artifact layout) into the tiled layout, in place; the caller then
// sets weight.tiled. INVALID_ARGUMENT when !TiledLayoutApplies or the weight is already tiled;
// INTERNAL for a CUDA error. A tile passes through shared memory (up to 227 KiB, sm_90);
// FAILED_PRECONDITION when the device has less than a tile needs.
absl::Status LaunchScalarCodecRetile(const ScalarCodecGemvParams& weight, cudaStream_t stream);

// Knobs of the tiled launch that change only its speed; 0 = the plan's choice.
struct TiledGemvTuning {
  int warps_per_block = 0;  // 1, 2, 4, 8 or 16 (PlanTiledGemv)
  int groups_ahead = 0;     // 1, 2 or 4: groups whose codes a warp keeps in flight (PlanTiledGroupsAhead)
};

// y = W'·x for every entry of a group of tiled weights (LaunchScalarCodecGemvGroup's contract;
// that launcher forwards here when the entries are tiled). The entries may mix two K (q at 2 bits,
// k/v at 3): each block decodes its tile with its entry's K. INVALID_ARGUMENT naming the entry and
// field, or a knob out of range; INTERNAL for a launch error.
absl::Status LaunchScalarCodecGemvTiled(absl::Span<const ScalarCodecGemvParams> group,
                                        const TiledGemvTuning& tuning, cudaStream_t stream);

// What LaunchScalarCodecGemvTiled checks, without launching (IsSupported uses it).
absl::Status CheckScalarCodecGemvTiled(absl::Span<const ScalarCodecGemvParams> group);

// Warps per block of the tiled launch, a power of two up to 16 and no more than the row's 128-column
// groups: the fewest that put kTiledMinWarpsPerSm warps on each of `multiprocessors` SMs and leave
// no warp more than kTiledMaxGroupsPerWarp groups; the latter stops doubling once the launch has
// kTiledMaxWarpsPerSm warps per SM. When the launch has 2-bit codes (lo_bits, its smallest K) on rows
// of at least kTiledLongRowGroups groups, half that, if the launch then has kTiledAheadMaxWarpsPerSm
// to kTiledOneWaveWarpsPerSm warps per SM. Fitted to the H200's sweeps (docs/KERNELS.md, "Tiled layout"): 8B q/k/v 8, gate/up
// 4, o_proj, k_proj and down_proj 16; 70B q/o and gate 8, gate/up 4 (8 was 5% slower); 70B q/k/v at
// 2/3/3 4 and down_proj at K = 2 8 (session 12: 17.5 → 13.5 and 46.6 → 38.3 µs with the ring below).
inline constexpr int kTiledMinWarpsPerSm = 23;
inline constexpr int kTiledMaxGroupsPerWarp = 8;
inline constexpr int kTiledMaxWarpsPerSm = 108;
inline constexpr int kTiledLongRowGroups = 64;
inline constexpr int kTiledOneWaveWarpsPerSm = 32;
int PlanTiledGemv(int64_t tiles, int64_t groups_per_row, int multiprocessors, int lo_bits);

// Groups of codes a warp keeps in flight, 1, 2 or 4, where the launch's warps per SM stay within what
// the deeper ring's registers leave resident, and a warp walks at least two groups: 2-bit codes on
// long rows 4 up to kTiledAheadFourMaxWarpsPerSm (and four groups a warp), else 2 up to
// kTiledOneWaveWarpsPerSm; otherwise 2 up to kTiledAheadMaxWarpsPerSm. H200 (docs/KERNELS.md, "Tiled
// layout"): 8B down_proj 19.8 → 13.5 µs and o_proj 6.9 → 5.4 with 2 (session 10); 70B q/k/v at 2/3/3
// with 4 and down_proj at 2 bits with 2 (session 12); the crowded launches (gate/up, 70B q/o) were
// 10-30% slower with 2-4. (8B q/k/v at 3/3/3 is 7.0 → 6.5 µs with 2 alone, but the 8B step was not
// faster.)
inline constexpr int kTiledAheadMaxWarpsPerSm = 16;
inline constexpr int kTiledAheadFourMaxWarpsPerSm = 20;
int PlanTiledGroupsAhead(int64_t tiles, int64_t groups_per_row, int warps_per_block, int multiprocessors,
                         int lo_bits);

}  // namespace bitloom::kernels::cuda
