// cflora_sim.cpp: runs kernels/cflora.cu on the CPU through cuda_host_sim.h against a double-accumulation reference
// (the same formula as CfloraReference in C#), for machines without a GPU. Exits non-zero on any mismatch.
//   g++ -std=c++20 -O1 -pthread -I kernels kernels/tests/sim/cflora_sim.cpp -o /tmp/cflora_sim && /tmp/cflora_sim
// It checks indexing, tiling (ragged 64-wide tiles, K tiles straddling d_in), the warp reductions and the dtype
// paths; the device-only f16 conversion (inline PTX cvt.f32.f16) is replaced by its bit-exact host fallback.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_host_sim.h"

#include "../../cflora.cu"
#include "../cflora_check.h"

namespace {

int check(int T, int S, int d_in, int d_out, int r, int w0_dtype, int ab_dtype, bool with_bias, float scale) {
    const cflora_check::Problem p = cflora_check::make_problem(T, S, d_in, d_out, r, w0_dtype, ab_dtype, with_bias, scale);
    std::vector<float> v((size_t)T * r, -1.0f), y((size_t)T * d_out, -1.0f);
    rellax_sim_launch({(unsigned)T, 1, 1}, {256, 1, 1}, [&] {
        rellax_cflora_down(p.x.data(), p.a.data(), p.a.dtype, p.g.data(), p.row_sample.data(), v.data(), T, d_in, r, scale);
    });
    rellax_sim_launch({(unsigned)((d_out + 63) / 64), (unsigned)((T + 63) / 64), 1}, {256, 1, 1}, [&] {
        rellax_cflora_gemm(p.x.data(), v.data(), p.w0.data(), p.w0.dtype, p.b.data(), p.b.dtype,
                           with_bias ? p.bias.data() : nullptr, y.data(), T, d_out, d_in, r);
    });
    return cflora_check::count_mismatches(p, y, "cflora");
}

}  // namespace

int main() {
    int failures = 0;
    failures += check(1, 1, 1, 1, 1, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, false, 1.0f) != 0;
    failures += check(5, 2, 37, 45, 8, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, true, 2.0f) != 0;
    failures += check(70, 3, 100, 130, 16, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F16, true, 1.0f) != 0;
    failures += check(65, 4, 48, 64, 8, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_BF16, false, 2.0f) != 0;
    failures += check(9, 3, 33, 20, 40, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_F16, true, 0.5f) != 0;
    failures += check(3, 2, 20, 70, 128, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F32, false, 0.25f) != 0;
    if (failures) {
        std::fprintf(stderr, "cflora_sim: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("cflora_sim: all passed\n");
    return 0;
}
