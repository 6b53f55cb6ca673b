// cuda_host_sim.h: just enough of CUDA to run the kernels of kernels/*.cu on the CPU, for checking their index
// arithmetic, tiling and synchronization on machines without a GPU (g++ -std=c++20 -pthread).
//
// Model: one block at a time; each of its threads is a std::thread (threadIdx/blockIdx are thread_local);
// __shared__ is `static` (one block at a time, so it is shared by exactly that block's threads);
// __syncthreads is a std::barrier over the block; warp shuffles exchange through a per-warp slot array between two
// per-warp barriers (all 32 lanes must call them, as on the device). Device-only code paths (inline PTX) are behind
// `#if defined(__CUDA_ARCH__)` in the kernels and not simulated. Not a performance model.
#pragma once

#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

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

namespace rellax_sim {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<float> warp_slots;  // [threads]
}  // namespace rellax_sim

inline void __syncthreads() { rellax_sim::block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned warp = tid / 32, lane = tid % 32;
    auto& bar = *rellax_sim::warp_barriers[warp];
    rellax_sim::warp_slots[tid] = v;
    bar.arrive_and_wait();
    const float other = rellax_sim::warp_slots[warp * 32 + (lane ^ (unsigned)lane_mask)];
    bar.arrive_and_wait();
    return other;
}

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

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
    rellax_sim::warp_slots.assign(threads, 0.0f);
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
