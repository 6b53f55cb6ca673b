// subr_sim.cpp: runs kernels/subr_topk.cu on the CPU through cuda_host_sim.h against the references of subr_check.h
// (bit-exact against the kernel's own fp32 operation order, and within near ties against double), for machines
// without a GPU. Exits non-zero on any mismatch.
//   g++ -std=c++20 -O1 -pthread -I kernels kernels/tests/sim/subr_sim.cpp -o /tmp/subr_sim && /tmp/subr_sim [--quick]
// It covers the six dot paths (f32 / f16 / i8, vectorised and scalar: d = 1, 7, 100, 513, 512, 1040, misaligned tables),
// k = 1, 2, 31, 1024, L = 0, < k, = k, > k and several thousand (many tiles, merges of the queue, the 2048-slot
// limit at k = 1024), exact ties (duplicate events, identical rows), adversarial score orders, both output orders,
// grid-stride (fewer blocks than samples) and 64- and 256-thread blocks. The device-only f16 conversion (inline PTX
// cvt.f32.f16) is replaced by its bit-exact host fallback.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda_host_sim.h"

#include "../../subr_topk.cu"
#include "../subr_check.h"

namespace {

using subr_check::Layout;

int run(int N, int d, int dtype, std::vector<int> lengths, int k, bool by_score, Layout layout, int distinct = 0,
        bool misaligned = false, unsigned grid = 0, unsigned block = 256) {
    const subr_check::Problem p = subr_check::make_problem(N, d, dtype, lengths, k, by_score, layout, distinct, misaligned);
    std::vector<int> positions((size_t)p.B * k, 12345);
    std::vector<float> scores((size_t)p.B * k, 12345.0f);
    if (grid == 0) grid = (unsigned)p.B;
    const auto start = std::chrono::steady_clock::now();
    auto* kernel = p.dtype == RELLAX_SUBR_DTYPE_F32 ? rellax_subr_topk_f32
                 : p.dtype == RELLAX_SUBR_DTYPE_F16 ? rellax_subr_topk_f16 : rellax_subr_topk_i8;
    rellax_sim_launch({grid, 1, 1}, {block, 1, 1}, [&] {
        kernel(p.table(), p.dtype == RELLAX_SUBR_DTYPE_I8 ? p.scales.data() : nullptr, p.history.data(), p.offsets.data(),
               p.targets.data(), p.B, p.d, p.k, p.by_score, positions.data(), scores.data());
    });
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const int bad = subr_check::count_mismatches(p, positions, scores, "subr_sim");
    std::printf("%s N=%d d=%d dtype=%d B=%d total=%d k=%d %s layout=%d distinct=%d%s grid=%u block=%u path=%d (%.0f ms)\n",
                bad ? "FAIL" : "ok  ", N, d, dtype, p.B, (int)p.history.size(), k, by_score ? "score" : "chrono", (int)layout,
                distinct, misaligned ? " misaligned" : "", grid, block, p.path(), ms);
    std::fflush(stdout);
    return bad != 0;
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int F32 = RELLAX_SUBR_DTYPE_F32, F16 = RELLAX_SUBR_DTYPE_F16, I8 = RELLAX_SUBR_DTYPE_I8;
    int failures = 0;
    for (int dtype : {F32, F16, I8}) {
        for (bool by_score : {false, true}) {
            // Odd widths: scalar paths (d = 1, 7, 513) and vector paths (d = 16 / 32 / 64 / 512 where divisible).
            failures += run(50, 1, dtype, {0, 1, 5, 37}, 2, by_score, Layout::Random, 0, false, 0, 64);
            failures += run(60, 7, dtype, {31, 30, 32, 100}, 31, by_score, Layout::Random, 0, false, 0, 64);
            failures += run(80, 100, dtype, {3, 31, 200}, 31, by_score, Layout::Random);
            failures += run(40, 513, dtype, {45, 1}, 2, by_score, Layout::Random, 0, false, 0, 64);
            failures += run(40, 1040, dtype, {70, 33}, 31, by_score, Layout::Random, 0, false, 0, 64);  // several vectors per lane
            failures += run(64, 64, dtype, {600, 0, 17}, 1, by_score, Layout::Random, 0, false, 2, 64);
            // Ties: duplicate events and identical rows; adversarial orders.
            failures += run(100, 16, dtype, {300, 64}, 31, by_score, Layout::Duplicates, 0, false, 0, 64);
            failures += run(90, 32, dtype, {400}, 31, by_score, Layout::Random, 7);
            failures += run(90, 32, dtype, {700}, 31, by_score, Layout::Ascending, 0, false, 0, 64);
            failures += run(90, 32, dtype, {500}, 2, by_score, Layout::Descending, 0, false, 0, 64);
            // Long random histories with a small k: the threshold after each merge decides what is queued.
            failures += run(200, 8, dtype, {2500, 1500}, 31, by_score, Layout::Random, 0, false, 0, 64);
            failures += run(200, 20, dtype, {1800}, 2, by_score, Layout::Random, 0, false, 0, 64);
            failures += run(500, 8, dtype, {900, 1100}, 31, by_score, Layout::KthLast, 0, false, 0, 64);
            failures += run(500, 8, dtype, {700}, 1, by_score, Layout::KthLast, 0, false, 0, 64);
            // Misaligned table: scalar path although d is a multiple of 16.
            failures += run(50, 48, dtype, {130, 9}, 31, by_score, Layout::Random, 5, true, 0, 64);
        }
        if (quick) continue;
        // k = 1024: L < k, = k, > k, the 2048-slot limit and many merges; long histories; grid-stride; d = 512.
        failures += run(3000, 16, dtype, {1024, 500, 2600}, 1024, false, Layout::Random, 0, false, 2, 256);
        failures += run(3000, 16, dtype, {2600}, 1024, true, Layout::Ascending, 0, false, 0, 256);
        failures += run(300, 8, dtype, {6000, 0, 1}, 60, false, Layout::Random, 50, false, 1, 256);
        failures += run(200, 512, dtype, {300, 40}, 30, true, Layout::Random, 0, false, 0, 256);
    }
    if (failures) {
        std::fprintf(stderr, "subr_sim: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("subr_sim: all passed\n");
    return 0;
}
