// rmsnorm_test.cu: self-test for kernels/rmsnorm.cu on a GPU machine (built by CMake, run by ctest).
// CPU reference (double accumulation) vs rellax_rmsnorm_f32 over several shapes and block sizes;
// exits non-zero on any mismatch or CUDA error.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cuda_runtime.h>

#include "cuda_check.h"

#include "../rmsnorm.cu"

// x is (rows, n), weight is (n), y is (rows, n)
static void rmsnorm_cpu(const float* x, const float* weight, float* y, int rows, int n, float eps) {
    for (int r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
        const double inv = 1.0 / std::sqrt(ss / n + eps);
        for (int i = 0; i < n; i++) y[r * n + i] = (float)(x[r * n + i] * inv * weight[i]);
    }
}

static float uniform(unsigned* state) {  // xorshift, deterministic, in [-1, 1)
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return (float)(*state & 0xffffff) / (float)0x800000 - 1.0f;
}

static int check(int rows, int n, int block, float eps) {
    unsigned seed = 12345u + (unsigned)(rows * 7919 + n);
    std::vector<float> x((size_t)rows * n), w(n), y_ref((size_t)rows * n), y_gpu((size_t)rows * n);
    for (auto& v : x) v = 3.0f * uniform(&seed);
    for (auto& v : w) v = 1.0f + 0.5f * uniform(&seed);
    rmsnorm_cpu(x.data(), w.data(), y_ref.data(), rows, n, eps);

    float *d_x, *d_w, *d_y;
    CUDA_CHECK(cudaMalloc(&d_x, x.size() * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_w, w.size() * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_y, y_gpu.size() * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(d_x, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_w, w.data(), w.size() * sizeof(float), cudaMemcpyHostToDevice));
    rellax_rmsnorm_f32<<<rows, block>>>(d_x, d_w, d_y, rows, n, eps);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemcpy(y_gpu.data(), d_y, y_gpu.size() * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(d_x));
    CUDA_CHECK(cudaFree(d_w));
    CUDA_CHECK(cudaFree(d_y));

    int bad = 0;
    for (size_t i = 0; i < y_ref.size(); i++) {
        const float tol = 1e-5f + 1e-5f * std::fabs(y_ref[i]);
        if (!(std::fabs(y_gpu[i] - y_ref[i]) <= tol)) {
            if (bad < 5) {
                std::fprintf(stderr, "mismatch rows=%d n=%d block=%d at %zu: gpu %.8g cpu %.8g\n",
                             rows, n, block, i, y_gpu[i], y_ref[i]);
            }
            bad++;
        }
    }
    std::printf("rmsnorm rows=%d n=%d block=%d: %s\n", rows, n, block, bad ? "FAIL" : "ok");
    return bad;
}

int main() {
    const int shapes[][2] = {{1, 1}, {3, 7}, {4, 32}, {5, 33}, {8, 768}, {2, 4096}, {16, 5000}};
    const int blocks[] = {32, 128, 1024};
    int failures = 0;
    for (const auto& s : shapes)
        for (int b : blocks) failures += check(s[0], s[1], b, 1e-5f) != 0;
    if (failures) {
        std::fprintf(stderr, "rmsnorm_test: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("rmsnorm_test: all passed\n");
    return 0;
}
