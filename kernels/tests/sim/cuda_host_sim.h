// cuda_host_sim.h: just enough of CUDA to run the kernels of kernels/*.cu on the CPU, for checking their index
// arithmetic, tiling and synchronization on machines without a GPU (g++ -std=c++20 -pthread).
//
// Model: one block at a time; each of its threads is a std::thread (threadIdx/blockIdx are thread_local);
// __shared__ is `static` (one block at a time, so it is shared by exactly that block's threads);
// __syncthreads is a std::barrier over the block; warp shuffles exchange through a per-warp slot array between two
// per-warp barriers (all 32 lanes must call them, as on the device). Shared-memory atomicAdd is a std::atomic_ref;
// the vector types (float4, int4, uint4) and __syncwarp are emulated. Device-only code paths (inline PTX)
// are behind `#if defined(__CUDA_ARCH__)` in the kernels and not simulated. RELLAX_CUDA_HOST_SIM is defined, so a
// kernel may pick a faster simulation path (int8_attention.cu gathers whole mma fragments with
// rellax_sim::warp_gather instead of 32·n shuffles). Not a performance model.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

struct rellax_sim_dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local rellax_sim_dim3 threadIdx, blockIdx;
inline rellax_sim_dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)
#define __align__(n) __attribute__((aligned(n)))
#define RELLAX_CUDA_HOST_SIM 1

namespace rellax_sim {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<unsigned> warp_slots;  // [threads], the 4 bytes each lane offers to a shuffle
inline std::vector<int> gather_slots;     // [threads * 8], the registers each lane offers to warp_gather

// Every lane's n (<= 8) ints, lane-major: all[lane * n + r] (what 32·n __shfl_sync calls would give, in one
// exchange: the int8/f16 mma fallbacks of int8_attention.cu gather whole fragments). All 32 lanes must call it.
inline void warp_gather(const int* mine, int n, int* all) {
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned warp = tid / 32;
    auto& bar = *warp_barriers[warp];
    for (int r = 0; r < n; r++) gather_slots[tid * 8 + r] = mine[r];
    bar.arrive_and_wait();
    for (int lane = 0; lane < 32; lane++)
        for (int r = 0; r < n; r++) all[lane * n + r] = gather_slots[(warp * 32 + lane) * 8 + r];
    bar.arrive_and_wait();
}

// Lane `source(lane)`'s value of v, for a 4-byte type; all 32 lanes of the warp must call it.
template <class T, class Source>
T shuffle(T v, Source source) {
    static_assert(sizeof(T) == 4, "shuffles move 4-byte values");
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned warp = tid / 32, lane = tid % 32;
    auto& bar = *warp_barriers[warp];
    std::memcpy(&warp_slots[tid], &v, 4);
    bar.arrive_and_wait();
    T other;
    std::memcpy(&other, &warp_slots[warp * 32 + (source(lane) & 31u)], 4);
    bar.arrive_and_wait();
    return other;
}
}  // namespace rellax_sim

inline void __syncthreads() { rellax_sim::block_barrier->arrive_and_wait(); }

inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) {
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    rellax_sim::warp_barriers[tid / 32]->arrive_and_wait();
}

inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
    return rellax_sim::shuffle(v, [=](unsigned lane) { return lane ^ (unsigned)lane_mask; });
}
inline int __shfl_xor_sync(unsigned /*mask*/, int v, int lane_mask) {
    return rellax_sim::shuffle(v, [=](unsigned lane) { return lane ^ (unsigned)lane_mask; });
}
inline float __shfl_sync(unsigned /*mask*/, float v, int src_lane) {
    return rellax_sim::shuffle(v, [=](unsigned) { return (unsigned)src_lane; });
}
inline int __shfl_sync(unsigned /*mask*/, int v, int src_lane) {
    return rellax_sim::shuffle(v, [=](unsigned) { return (unsigned)src_lane; });
}
inline float __shfl_down_sync(unsigned /*mask*/, float v, unsigned delta) {
    // Lanes whose source is past lane 31 keep their own value, as on the device.
    const float other = rellax_sim::shuffle(v, [=](unsigned lane) { return lane + delta < 32 ? lane + delta : lane; });
    return other;
}

// Shared- or global-memory atomic add; returns the old value.
inline int atomicAdd(int* address, int value) { return std::atomic_ref<int>(*address).fetch_add(value); }

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// Round to nearest, ties to even (the default floating-point environment), as the device instruction cvt.rni.
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }

// Runs kernel() for every block of `grid` with `block` threads each (block threads: a multiple of 32).
template <class Kernel>
void rellax_sim_launch(rellax_sim_dim3 grid, rellax_sim_dim3 block, Kernel kernel) {
    const unsigned threads = block.x * block.y * block.z;
    gridDim = grid;
    blockDim = block;
    rellax_sim::block_barrier = std::make_unique<std::barrier<>>(threads);
    rellax_sim::warp_barriers.clear();
    for (unsigned w = 0; w < (threads + 31) / 32; w++)
        rellax_sim::warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    rellax_sim::warp_slots.assign(threads, 0u);
    rellax_sim::gather_slots.assign((size_t)threads * 8, 0);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                std::vector<std::thread> pool;
                pool.reserve(threads);
                for (unsigned t = 0; t < threads; t++) {
                    pool.emplace_back([=] {
                        blockIdx = {bx, by, bz};
                        threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        kernel();
                    });
                }
                for (auto& th : pool) th.join();
            }
}
