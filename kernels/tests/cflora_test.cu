// cflora_test.cu: self-test for kernels/cflora.cu on a GPU machine (built by CMake, run by ctest).
// CPU reference (double accumulation) vs rellax_cflora_down + rellax_cflora_gemm over several shapes (ragged 64-wide
// tiles, K tiles straddling d_in, r up to 128) and weight dtypes; exits non-zero on any mismatch or CUDA error.
// The same shapes and data run on the CPU in kernels/tests/sim/cflora_sim.cpp (no GPU needed); both take their
// problems and reference from cflora_check.h.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "cuda_check.h"

#include "../cflora.cu"
#include "cflora_check.h"

template <class T>
static T* upload(const void* host, size_t bytes) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, bytes == 0 ? 4 : bytes));
    if (bytes) CUDA_CHECK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return (T*)d;
}

static int check(int T, int S, int d_in, int d_out, int r, int w0_dtype, int ab_dtype, bool with_bias, float scale) {
    const cflora_check::Problem p = cflora_check::make_problem(T, S, d_in, d_out, r, w0_dtype, ab_dtype, with_bias, scale);
    float* d_x = upload<float>(p.x.data(), p.x.size() * 4);
    float* d_g = upload<float>(p.g.data(), p.g.size() * 4);
    float* d_bias = with_bias ? upload<float>(p.bias.data(), p.bias.size() * 4) : nullptr;
    int* d_rows = upload<int>(p.row_sample.data(), p.row_sample.size() * 4);
    void* d_w0 = upload<void>(p.w0.data(), p.w0.bytes());
    void* d_a = upload<void>(p.a.data(), p.a.bytes());
    void* d_b = upload<void>(p.b.data(), p.b.bytes());
    float *d_v, *d_y;
    CUDA_CHECK(cudaMalloc(&d_v, (size_t)T * r * 4));
    CUDA_CHECK(cudaMalloc(&d_y, (size_t)T * d_out * 4));

    rellax_cflora_down<<<T, 256>>>(d_x, d_a, ab_dtype, d_g, d_rows, d_v, T, d_in, r, scale);
    CUDA_CHECK(cudaGetLastError());
    const dim3 grid((d_out + 63) / 64, (T + 63) / 64);
    rellax_cflora_gemm<<<grid, 256>>>(d_x, d_v, d_w0, w0_dtype, d_b, ab_dtype, d_bias, d_y, T, d_out, d_in, r);
    CUDA_CHECK(cudaGetLastError());
    std::vector<float> y((size_t)T * d_out);
    CUDA_CHECK(cudaMemcpy(y.data(), d_y, y.size() * 4, cudaMemcpyDeviceToHost));
    for (void* ptr : {(void*)d_x, (void*)d_g, (void*)d_bias, (void*)d_rows, d_w0, d_a, d_b, (void*)d_v, (void*)d_y})
        if (ptr) CUDA_CHECK(cudaFree(ptr));
    return cflora_check::count_mismatches(p, y, "cflora");
}

int main() {
    int failures = 0;
    failures += check(1, 1, 1, 1, 1, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, false, 1.0f) != 0;
    failures += check(5, 2, 37, 45, 8, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, true, 2.0f) != 0;
    failures += check(70, 3, 100, 130, 16, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F16, true, 1.0f) != 0;
    failures += check(65, 4, 48, 64, 8, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_BF16, false, 2.0f) != 0;
    failures += check(9, 3, 33, 20, 40, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_F16, true, 0.5f) != 0;
    failures += check(3, 2, 20, 70, 128, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F32, false, 0.25f) != 0;
    failures += check(200, 8, 1024, 768, 8, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_BF16, true, 2.0f) != 0;
    if (failures) {
        std::fprintf(stderr, "cflora_test: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("cflora_test: all passed\n");
    return 0;
}
