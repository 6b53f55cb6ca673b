// subr_topk_test.cu: self-test for kernels/subr_topk.cu on a GPU machine (built by CMake, run by ctest).
// rellax_subr_topk_{f32,f16,i8} vs the references of subr_check.h (bit-exact against the kernel's own fp32 operation order, and
// within near ties against double) over f32 / f16 / i8 tables (vectorised and scalar paths, a misaligned table),
// d = 1, 7, 100, 512, 513, k = 1, 2, 31, 60, 1024, L = 0 .. 100,000, duplicate events, identical rows, adversarial
// score orders, both output orders, grid-stride; exits non-zero on any mismatch or CUDA error. Then times the
// benchmark shape of issue 4 (N = 100,000, d = 512, B = 1024, L = 2000, k = 30) and prints the effective bandwidth
// (bytes of embedding rows gathered / time). The same kernel runs on the CPU in kernels/tests/sim/subr_sim.cpp.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "cuda_check.h"

#include "../subr_topk.cu"
#include "subr_check.h"

template <class T>
static T* upload(const void* host, size_t bytes) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, bytes == 0 ? 4 : bytes));
    if (bytes) CUDA_CHECK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return (T*)d;
}

using subr_check::Layout;

// Runs one problem; returns the number of mismatches. iterations > 0 also times that many launches.
static int run(int N, int d, int dtype, const std::vector<int>& lengths, int k, bool by_score, Layout layout, int distinct = 0,
               bool misaligned = false, int grid = 0, int iterations = 0) {
    const subr_check::Problem p = subr_check::make_problem(N, d, dtype, lengths, k, by_score, layout, distinct, misaligned);
    char* d_storage = upload<char>(p.storage(), p.table_bytes());
    const size_t elem = dtype == RELLAX_SUBR_DTYPE_F32 ? 4 : dtype == RELLAX_SUBR_DTYPE_F16 ? 2 : 1;
    const void* d_table = d_storage + (misaligned ? elem : 0);
    float* d_scales = dtype == RELLAX_SUBR_DTYPE_I8 ? upload<float>(p.scales.data(), p.scales.size() * 4) : nullptr;
    int* d_history = upload<int>(p.history.data(), p.history.size() * 4);
    int* d_offsets = upload<int>(p.offsets.data(), p.offsets.size() * 4);
    int* d_targets = upload<int>(p.targets.data(), p.targets.size() * 4);
    int* d_positions;
    float* d_scores;
    CUDA_CHECK(cudaMalloc(&d_positions, (size_t)p.B * k * 4));
    CUDA_CHECK(cudaMalloc(&d_scores, (size_t)p.B * k * 4));
    CUDA_CHECK(cudaMemset(d_positions, 0x5a, (size_t)p.B * k * 4));
    CUDA_CHECK(cudaMemset(d_scores, 0x5a, (size_t)p.B * k * 4));
    const int blocks = grid > 0 ? grid : (p.B < 262144 ? p.B : 262144);
    auto* kernel = dtype == RELLAX_SUBR_DTYPE_F32 ? rellax_subr_topk_f32
                 : dtype == RELLAX_SUBR_DTYPE_F16 ? rellax_subr_topk_f16 : rellax_subr_topk_i8;
    auto launch = [&] {
        kernel<<<blocks, 256>>>(d_table, d_scales, d_history, d_offsets, d_targets, p.B, d, k, by_score ? 1 : 0, d_positions, d_scores);
    };
    launch();
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<int> positions((size_t)p.B * k);
    std::vector<float> scores((size_t)p.B * k);
    CUDA_CHECK(cudaMemcpy(positions.data(), d_positions, positions.size() * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(scores.data(), d_scores, scores.size() * 4, cudaMemcpyDeviceToHost));
    const int bad = subr_check::count_mismatches(p, positions, scores, "subr_topk_test");
    std::printf("%s N=%d d=%d dtype=%d B=%d total=%zu k=%d %s layout=%d distinct=%d%s path=%d\n", bad ? "FAIL" : "ok  ", N, d,
                dtype, p.B, p.history.size(), k, by_score ? "score" : "chrono", (int)layout, distinct, misaligned ? " misaligned" : "",
                p.path());
    if (iterations > 0) {
        cudaEvent_t start, stop;
        CUDA_CHECK(cudaEventCreate(&start));
        CUDA_CHECK(cudaEventCreate(&stop));
        launch();  // warm-up
        CUDA_CHECK(cudaEventRecord(start));
        for (int i = 0; i < iterations; i++) launch();
        CUDA_CHECK(cudaEventRecord(stop));
        CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        ms /= iterations;
        const double row_bytes = (double)p.history.size() * d * elem + (dtype == RELLAX_SUBR_DTYPE_I8 ? 4.0 * p.history.size() : 0.0);
        std::printf("     time %.3f ms, %.1f GB/s of gathered rows (+ ids %.1f GB/s)\n", ms, row_bytes / ms / 1e6,
                    4.0 * p.history.size() / ms / 1e6);
        CUDA_CHECK(cudaEventDestroy(start));
        CUDA_CHECK(cudaEventDestroy(stop));
    }
    for (void* ptr : {(void*)d_storage, (void*)d_scales, (void*)d_history, (void*)d_offsets, (void*)d_targets, (void*)d_positions, (void*)d_scores})
        if (ptr) CUDA_CHECK(cudaFree(ptr));
    return bad != 0;
}

int main() {
    const int F32 = RELLAX_SUBR_DTYPE_F32, F16 = RELLAX_SUBR_DTYPE_F16, I8 = RELLAX_SUBR_DTYPE_I8;
    int failures = 0;
    for (int dtype : {F32, F16, I8}) {
        for (bool by_score : {false, true}) {
            failures += run(50, 1, dtype, {0, 1, 5, 37}, 2, by_score, Layout::Random);
            failures += run(60, 7, dtype, {31, 30, 32, 100}, 31, by_score, Layout::Random);
            failures += run(800, 100, dtype, {3, 31, 2000}, 31, by_score, Layout::Random);
            failures += run(400, 513, dtype, {45, 1, 3000}, 30, by_score, Layout::Random);
            failures += run(5000, 512, dtype, {2000, 0, 60, 20000}, 60, by_score, Layout::Random);
            failures += run(5000, 512, dtype, {1023, 1024, 1025, 5000}, 1024, by_score, Layout::Random);
            failures += run(5000, 512, dtype, {5000}, 1024, by_score, Layout::Ascending);
            failures += run(5000, 64, dtype, {100000, 7}, 1, by_score, Layout::Random);
            failures += run(100, 16, dtype, {3000, 64}, 31, by_score, Layout::Duplicates);
            failures += run(900, 32, dtype, {4000}, 31, by_score, Layout::Random, 7);
            failures += run(900, 32, dtype, {3000}, 60, by_score, Layout::Ascending);
            failures += run(900, 32, dtype, {3000}, 2, by_score, Layout::Descending);
            failures += run(900, 32, dtype, {3000, 900}, 31, by_score, Layout::KthLast);
            failures += run(500, 48, dtype, {1300, 9}, 31, by_score, Layout::Random, 5, true);
            failures += run(300, 8, dtype, std::vector<int>(300, 100), 30, by_score, Layout::Random, 0, false, 7);  // grid-stride
        }
    }
    // The benchmark shape of issue 4 (the table does not fit in L2): correctness, then timing.
    std::vector<int> lengths(1024, 2000);
    failures += run(100000, 512, F32, lengths, 30, false, Layout::Random, 0, false, 0, 20);
    failures += run(100000, 512, F16, lengths, 30, false, Layout::Random, 0, false, 0, 20);
    failures += run(100000, 512, I8, lengths, 30, false, Layout::Random, 0, false, 0, 20);
    if (failures) {
        std::fprintf(stderr, "subr_topk_test: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("subr_topk_test: all passed\n");
    return 0;
}
