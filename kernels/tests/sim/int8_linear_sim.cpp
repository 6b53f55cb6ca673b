// int8_linear_sim.cpp: runs kernels/int8_linear.cu on the CPU through cuda_host_sim.h (dp4a by its C fallback in
// rellax_common.cuh) and checks, per shape:
//   - the quantized weights (f32, f16 and bf16 sources) and activations (per row and group of G columns) equal a host
//     quantizer written from the C# definition (PrimitivesReference.QuantizeRowInt8: the same float operations, so the same
//     integers), bit for bit;
//   - the GEMM's int32 sums are exact: with unit scales, no outlier columns and no bias, y equals the exact integer dot;
//   - the layer equals a double-precision reference (PrimitivesReference.LinearInt8: per-group activation scales, outlier
//     columns in fp32) within float rounding, for several group sizes;
//   - the embedding gather equals q · scale exactly.
//   g++ -std=c++20 -O1 -pthread -I kernels kernels/tests/sim/int8_linear_sim.cpp -o /tmp/int8_linear_sim && /tmp/int8_linear_sim
// Exits non-zero on any mismatch. Says nothing about speed or real warp schedules (see cuda_host_sim.h).
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda_host_sim.h"

#include "../../int8_linear.cu"

namespace {

int failures = 0;

void fail(const char* what, int m, int k, int n, long long i, double got, double want) {
    if (failures++ < 20) std::fprintf(stderr, "FAIL %s M=%d K=%d N=%d at %lld: got %.9g, want %.9g\n", what, m, k, n, i, got, want);
}

// PrimitivesReference.QuantizeRowInt8 (round half to even in the default environment, as cvt.rni).
float quantize_row(const float* v, int k, const std::vector<int>* skip, int8_t* q) {
    float amax = 0.0f;
    for (int c = 0; c < k; c++) {
        if (skip && (*skip)[c]) continue;
        if (!std::isfinite(v[c])) { for (int i = 0; i < k; i++) q[i] = 0; return NAN; }
        amax = std::max(amax, std::fabs(v[c]));
    }
    if (amax == 0.0f) { for (int i = 0; i < k; i++) q[i] = 0; return 0.0f; }
    const float inv = 127.0f / amax;
    for (int c = 0; c < k; c++) {
        float r = std::nearbyint(v[c] * inv);
        q[c] = (skip && (*skip)[c]) ? 0 : (int8_t)std::min(127.0f, std::max(-127.0f, r));
    }
    return amax / 127.0f;
}

uint16_t to_half(float f) {  // round to nearest even, normal range only (test values are in [-2, 2] or 0)
    uint32_t b; std::memcpy(&b, &f, 4);
    const uint32_t sign = (b >> 16) & 0x8000u;
    const int e = (int)((b >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    uint32_t r = ((uint32_t)e << 10) | ((b >> 13) & 0x3ff);
    const uint32_t rem = b & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float from_bits16(uint16_t h, int dtype) {
    return dtype == RELLAX_INT8_DTYPE_F16 ? rellax_f16_to_f32(h) : rellax_bf16_to_f32(h);
}

void check(int m, int k, int n, int dtype, int group, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int kq = (k + 3) / 4;
    std::vector<float> x((size_t)m * k), wf((size_t)n * k), bias(n);
    for (auto& v : x) v = u(rng);
    for (auto& v : wf) v = u(rng);
    for (auto& v : bias) v = u(rng);
    if (k > 3) for (int c : {2, k / 3}) for (int t = 0; t < m; t++) x[(size_t)t * k + c] *= 8.0f;  // outliers at threshold 6
    for (int c = 0; c < k; c++) wf[c] = 0.0f;                                                        // row 0: scale 0
    // The weight in its storage dtype, and the f32 values it stands for.
    std::vector<uint16_t> w16((size_t)n * k);
    if (dtype != RELLAX_INT8_DTYPE_F32)
        for (size_t i = 0; i < wf.size(); i++) {
            uint32_t b; std::memcpy(&b, &wf[i], 4);
            w16[i] = dtype == RELLAX_INT8_DTYPE_F16 ? to_half(wf[i]) : (uint16_t)(b >> 16);  // bf16: truncate (any bf16 value will do)
            wf[i] = from_bits16(w16[i], dtype);
        }
    const void* wsrc = dtype == RELLAX_INT8_DTYPE_F32 ? (const void*)wf.data() : (const void*)w16.data();

    // Weights.
    std::vector<int> w8((size_t)n * kq, -1), sums(n, -1);
    std::vector<float> sw(n, -1.0f);
    rellax_sim_launch({(unsigned)n, 1, 1}, {32, 1, 1}, [&] { rellax_int8_quantize_weights(wsrc, dtype, n, k, w8.data(), sw.data(), sums.data()); });
    std::vector<int8_t> qw((size_t)n * k);
    for (int j = 0; j < n; j++) {
        const float s = quantize_row(&wf[(size_t)j * k], k, nullptr, &qw[(size_t)j * k]);
        if (std::memcmp(&s, &sw[j], 4) != 0) fail("weight scale", m, k, n, j, sw[j], s);
        int sum = 0;
        for (int c = 0; c < k; c++) {
            const int got = rellax_int8_byte(w8[(size_t)j * kq + c / 4], c);
            sum += qw[(size_t)j * k + c];
            if (got != qw[(size_t)j * k + c]) fail("weight value", m, k, n, (long long)j * k + c, got, qw[(size_t)j * k + c]);
        }
        for (int c = k; c < 4 * kq; c++)
            if (rellax_int8_byte(w8[(size_t)j * kq + c / 4], c) != 0) fail("weight padding", m, k, n, c, 1, 0);
        if (sums[j] != sum) fail("weight row sum", m, k, n, j, sums[j], sum);
    }

    // Activations: flags, list, quantized rows.
    const int groups = (k + group - 1) / group;
    std::vector<int> flags(std::max(k, 1), -1), list(k + 1, -1), x8((size_t)m * kq, -1);
    std::vector<float> sx((size_t)m * groups, -1.0f);
    const float threshold = 6.0f;
    if (k > 0) rellax_sim_launch({(unsigned)((k + 255) / 256), 1, 1}, {256, 1, 1}, [&] { rellax_int8_outlier_flags(x.data(), m, k, threshold, flags.data()); });
    rellax_sim_launch({1, 1, 1}, {32, 1, 1}, [&] { rellax_int8_compact(flags.data(), k, list.data()); });
    if (groups > 0) rellax_sim_launch({(unsigned)groups, (unsigned)m, 1}, {32, 1, 1}, [&] { rellax_int8_quantize_rows(x.data(), m, k, group, flags.data(), x8.data(), sx.data()); });
    std::vector<int> outlier(k, 0);
    for (int c = 0; c < k; c++)
        for (int t = 0; t < m; t++) if (std::fabs(x[(size_t)t * k + c]) > threshold) outlier[c] = 1;
    int expected_count = 0;
    for (int c = 0; c < k; c++)
        if (outlier[c]) { if (list[1 + expected_count] != c) fail("outlier list", m, k, n, expected_count, list[1 + expected_count], c); expected_count++; }
    if (list[0] != expected_count) fail("outlier count", m, k, n, 0, list[0], expected_count);
    std::vector<int8_t> qx((size_t)m * k);
    for (int t = 0; t < m; t++) {
        for (int g = 0; g < groups; g++) {
            const int c0 = g * group, len = std::min(k, c0 + group) - c0;
            const std::vector<int> skip(outlier.begin() + c0, outlier.begin() + c0 + len);
            const float s = quantize_row(&x[(size_t)t * k + c0], len, &skip, &qx[(size_t)t * k + c0]);
            if (std::memcmp(&s, &sx[(size_t)t * groups + g], 4) != 0) fail("activation scale", m, k, n, (long long)t * groups + g, sx[(size_t)t * groups + g], s);
        }
        for (int c = 0; c < k; c++)
            if (rellax_int8_byte(x8[(size_t)t * kq + c / 4], c) != qx[(size_t)t * k + c]) fail("activation value", m, k, n, (long long)t * k + c, rellax_int8_byte(x8[(size_t)t * kq + c / 4], c), qx[(size_t)t * k + c]);
    }

    const rellax_sim_dim3 grid{(unsigned)((n + 63) / 64), (unsigned)((m + 63) / 64), 1};
    // Exact int32 sums: unit scales, no outliers, no bias -> y = (float)Σ x8·w8 (exact for |Σ| < 2^24 at these K).
    {
        std::vector<float> ones_m((size_t)m * groups, 1.0f), ones_n(n, 1.0f), y((size_t)m * n, -1.0f);
        std::vector<int> none{0};
        rellax_sim_launch(grid, {256, 1, 1}, [&] { rellax_int8_linear(x8.data(), ones_m.data(), w8.data(), ones_n.data(), none.data(), x.data(), nullptr, y.data(), m, n, k, group); });
        for (int t = 0; t < m; t++)
            for (int j = 0; j < n; j++) {
                long long acc = 0;
                for (int c = 0; c < k; c++) acc += (long long)qx[(size_t)t * k + c] * qw[(size_t)j * k + c];
                if (y[(size_t)t * n + j] != (float)acc) fail("exact int32 sum", m, k, n, (long long)t * n + j, y[(size_t)t * n + j], (double)acc);
            }
    }
    // The layer against the double reference, with and without bias.
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        std::vector<float> y((size_t)m * n, -1.0f);
        rellax_sim_launch(grid, {256, 1, 1}, [&] {
            rellax_int8_linear(x8.data(), sx.data(), w8.data(), sw.data(), list.data(), x.data(), with_bias ? bias.data() : nullptr, y.data(), m, n, k, group);
        });
        for (int t = 0; t < m; t++)
            for (int j = 0; j < n; j++) {
                double sum = 0, fp = 0;
                for (int g = 0; g < groups; g++) {
                    long long acc = 0;
                    for (int c = g * group; c < std::min(k, (g + 1) * group); c++) acc += (long long)qx[(size_t)t * k + c] * qw[(size_t)j * k + c];
                    sum += (double)sx[(size_t)t * groups + g] * acc;
                }
                for (int c = 0; c < k; c++)
                    if (outlier[c]) fp += (double)x[(size_t)t * k + c] * qw[(size_t)j * k + c];
                const double want = (double)sw[j] * (sum + fp) + (with_bias ? bias[j] : 0.0);
                const double got = y[(size_t)t * n + j];
                if (!(std::fabs(got - want) <= 1e-5 * std::sqrt((double)k) + 1e-5 * std::fabs(want))) fail("linear vs double reference", m, k, n, (long long)t * n + j, got, want);
            }
    }
    // Embedding gather.
    {
        const int rows = n, tokens = 9;
        std::vector<int> ids(tokens);
        for (int i = 0; i < tokens; i++) ids[i] = (int)(rng() % rows);
        ids[0] = rows;  // outside: a zero row
        std::vector<float> y((size_t)tokens * k, -1.0f);
        if (k > 0) rellax_sim_launch({(unsigned)((tokens * k + 255) / 256), 1, 1}, {256, 1, 1}, [&] { rellax_int8_embedding(ids.data(), w8.data(), sw.data(), y.data(), tokens, k, rows); });
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < k; c++) {
                const float want = ids[t] >= rows ? 0.0f : (float)qw[(size_t)ids[t] * k + c] * sw[ids[t]];
                if (y[(size_t)t * k + c] != want) fail("embedding", m, k, n, (long long)t * k + c, y[(size_t)t * k + c], want);
            }
    }
    std::printf("%s M=%d K=%d N=%d dtype=%d G=%d (%d outlier columns)\n", failures ? "FAIL" : "ok", m, k, n, dtype, group, list[0]);
}

}  // namespace

int main() {
    const int shapes[][3] = {{1, 1, 1}, {5, 3, 17}, {6, 4, 16}, {7, 259, 33}, {70, 130, 65}, {13, 1031, 70}, {65, 64, 64}};
    unsigned seed = 1;
    for (int group : {4, 36, 128, 256})
        for (auto& s : shapes) check(s[0], s[1], s[2], RELLAX_INT8_DTYPE_F32, group, seed++);
    check(9, 70, 20, RELLAX_INT8_DTYPE_F16, 128, seed++);
    check(9, 70, 20, RELLAX_INT8_DTYPE_BF16, 36, seed++);
    if (failures) {
        std::fprintf(stderr, "int8_linear_sim: %d mismatch(es)\n", failures);
        return 1;
    }
    std::printf("int8_linear_sim: all passed\n");
    return 0;
}
