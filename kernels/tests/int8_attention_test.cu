// int8_attention_test.cu: self-test for kernels/int8_attention.cu on a GPU machine (built by CMake, run by ctest).
// The launch sequences of CudaAttention (key mean, Q/K quantization, prefill; cache append; decode) against the
// references of attention_check.h (a C++ port of AttentionReference): relative L1 < 1e-3 against the int8 reference,
// SPEC §7's bound against exact attention, padding rows exactly 0, the cache bit-identical to QuantizeIntoCache; over
// padding, GQA, T = 1, T not a multiple of 16 / 64, D in {8, 64, 96, 128, 256}, both layouts, causal and not. Then
// times issue 5's benchmark shapes (B = 1, Hq = 32, Hkv in {32, 8}, D = 128, T in {512 .. 4096}, causal) and prints
// ms per call and effective TFLOP/s (4·T²·D·Hq/2 for the causal half). Exits non-zero on any mismatch or CUDA error.
// The same kernels run on the CPU in kernels/tests/sim/attention_sim.cpp.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "cuda_check.h"

#include "../int8_attention.cu"
#include "attention_check.h"

using attention_check::Accuracy;
using attention_check::Shape;

template <class T>
static T* upload(const std::vector<T>& host) {
    void* d = nullptr;
    const size_t bytes = host.size() * sizeof(T);
    CUDA_CHECK(cudaMalloc(&d, bytes == 0 ? 4 : bytes));
    if (bytes) CUDA_CHECK(cudaMemcpy(d, host.data(), bytes, cudaMemcpyHostToDevice));
    return (T*)d;
}

template <class T>
static T* alloc(size_t n, int fill_byte = 0x5a) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, n == 0 ? 4 : n * sizeof(T)));
    CUDA_CHECK(cudaMemset(d, fill_byte, n == 0 ? 4 : n * sizeof(T)));
    return (T*)d;
}

template <class T>
static std::vector<T> download(const T* d, size_t n) {
    std::vector<T> host(n);
    CUDA_CHECK(cudaMemcpy(host.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

static unsigned blocks(long long items, int per_block) { return (unsigned)((items + per_block - 1) / per_block); }

// Device copies of one prefill problem and its scratch.
struct Prefill {
    Shape s;
    int Dp;
    float *q, *k, *v, *o, *mean, *qs, *ks;
    signed char *qq, *kq;
    int *padding, *query_padding;
    // q has T tokens, k and v Tk = s.keys() positions; padding in key positions, and in query rows for the quantizer.
    Prefill(const Shape& shape, const std::vector<float>& hq, const std::vector<float>& hk, const std::vector<float>& hv,
            const std::vector<int>& lengths)
        : s(shape), Dp(shape.padded_d()) {
        const int tk = s.keys();
        std::vector<int> pad(s.B), qpad(s.B);
        for (int b = 0; b < s.B; b++) {
            pad[b] = tk - lengths[b];
            qpad[b] = std::max(0, pad[b] - s.shift());
        }
        q = upload(hq); k = upload(hk); v = upload(hv); padding = upload(pad); query_padding = upload(qpad);
        o = alloc<float>(hq.size());
        mean = alloc<float>((size_t)s.B * s.Hkv * s.D);
        qq = alloc<signed char>((size_t)s.B * s.Hq * s.T * Dp); qs = alloc<float>((size_t)s.B * s.Hq * s.T);
        kq = alloc<signed char>((size_t)s.B * s.Hkv * tk * Dp); ks = alloc<float>((size_t)s.B * s.Hkv * tk);
    }
    ~Prefill() {
        for (void* p : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)mean, (void*)qs, (void*)ks, (void*)qq, (void*)kq, (void*)padding,
                        (void*)query_padding})
            cudaFree(p);
    }
    void launch(float scale, bool causal, bool smooth) {
        const int tk = s.keys();
        const long long qbs = s.batch_stride(s.Hq), qhs = s.head_stride(s.Hq), qts = s.token_stride(s.Hq);
        const long long kbs = s.k_batch_stride(), khs = s.k_head_stride(), kts = s.token_stride(s.Hkv);
        if (smooth) rellax_attn_key_mean<<<dim3(s.Hkv, s.B), 128>>>(k, kbs, khs, kts, padding, s.Hkv, tk, s.D, mean);
        rellax_attn_quantize_rows<<<blocks((long long)s.B * s.Hq * s.T, RELLAX_ATTN_QUANT_WARPS), 32 * RELLAX_ATTN_QUANT_WARPS>>>(
            q, qbs, qhs, qts, nullptr, query_padding, s.B, s.Hq, s.T, s.D, scale * attention_check::kLog2E, qq, qs, nullptr, s.T, Dp, 0);
        rellax_attn_quantize_rows<<<blocks((long long)s.B * s.Hkv * tk, RELLAX_ATTN_QUANT_WARPS), 32 * RELLAX_ATTN_QUANT_WARPS>>>(
            k, kbs, khs, kts, smooth ? mean : nullptr, padding, s.B, s.Hkv, tk, s.D, 1.0f, kq, ks, nullptr, tk, Dp, 0);
        auto* kernel = s.D <= 64 ? rellax_attn_prefill_int8_d64 : s.D <= 128 ? rellax_attn_prefill_int8_d128 : rellax_attn_prefill_int8_d256;
        kernel<<<dim3(blocks(s.T, RELLAX_ATTN_ROWS), s.Hq, s.B), 32 * RELLAX_ATTN_WARPS>>>(
            qq, qs, kq, ks, v, kbs, khs, kts, o, qbs, qhs, qts, padding, s.Hq, s.Hkv, s.T, tk, s.D, Dp, causal ? 1 : 0);
        CUDA_CHECK(cudaGetLastError());
    }
};

// T query tokens against Tk key positions (0: Tk = T); lengths count real key positions.
static int check_prefill(int B, int Hq, int Hkv, int T, int D, const std::vector<int>& lengths, int Tk = 0) {
    int failures = 0;
    for (bool head_major : {true, false})
        for (bool causal : {true, false})
            for (bool outliers : {false, true}) {
                const Shape s{B, Hq, Hkv, T, D, head_major, Tk};
                const unsigned seed = (unsigned)(T * 11 + D + (outliers ? 1000 : 0));
                const std::vector<float> q = attention_check::normal((size_t)B * Hq * T * D, seed);
                const std::vector<float> k = outliers ? attention_check::keys_with_outliers(s, seed + 1)
                                                      : attention_check::normal((size_t)B * Hkv * s.keys() * D, seed + 1);
                const std::vector<float> v = attention_check::normal(k.size(), seed + 2);
                const float scale = 1.0f / std::sqrt((float)D);
                Prefill p(s, q, k, v, lengths);
                p.launch(scale, causal, true);
                CUDA_CHECK(cudaDeviceSynchronize());
                const std::vector<float> o = download(p.o, q.size());
                const Accuracy vs_int8 = attention_check::measure(o, attention_check::int8_prefill(q, k, v, s, lengths, scale, causal));
                const Accuracy vs_exact = attention_check::measure(o, attention_check::exact(q, k, v, s, lengths, scale, causal));
                const int pad_bad = attention_check::nonzero_padding(o, s, lengths);
                const bool ok = vs_int8.rel_l1 < 1e-3 && vs_exact.meets_spec() && pad_bad == 0;
                std::printf("%s prefill B=%d Hq=%d Hkv=%d T=%d Tk=%d D=%d %s %s%s: vs int8 ref relL1 %.2e; vs exact relL1 %.2e cos %.6f; "
                            "padding nonzero %d\n",
                            ok ? "ok  " : "FAIL", B, Hq, Hkv, T, s.keys(), D, head_major ? "head-major" : "token-major", causal ? "causal" : "full",
                            outliers ? " outliers" : "", vs_int8.rel_l1, vs_exact.rel_l1, vs_exact.cosine, pad_bad);
                failures += !ok;
            }
    return failures;
}

// Cache append + decode (prompt through the decode kernel, then single-token steps), as FlashAttentionTests does.
static int check_decode(int B, int Hq, int Hkv, int D, int prompt, int steps) {
    const int total = prompt + steps, cap = total + 2;
    const Shape full{B, Hq, Hkv, total, D, false};
    const std::vector<float> q = attention_check::normal((size_t)B * Hq * total * D, (unsigned)(D + prompt));
    const std::vector<float> k = attention_check::keys_with_outliers(full, (unsigned)(D + prompt + 1));
    const std::vector<float> v = attention_check::normal(k.size(), (unsigned)(D + prompt + 2));
    std::vector<int> lengths(B), full_lengths(B);
    for (int b = 0; b < B; b++) { lengths[b] = prompt - 3 * b; full_lengths[b] = lengths[b] + steps; }
    const float scale = 1.0f / std::sqrt((float)D);
    const std::vector<double> exact = attention_check::exact(q, k, v, full, full_lengths, scale, true);
    attention_check::CacheImage image(B, Hkv, D, cap);
    const size_t rows = (size_t)B * Hkv * cap;
    signed char *keys = alloc<signed char>(rows * D), *values = alloc<signed char>(rows * D);
    float *key_scales = alloc<float>(rows), *value_scales = alloc<float>(rows), *key_mean = alloc<float>((size_t)B * Hkv * D);
    int* key_sums = alloc<int>(rows);
    std::vector<int> pad(B);
    for (int b = 0; b < B; b++) pad[b] = prompt - lengths[b];
    int* padding = upload(pad);
    std::vector<float> output(q.size());
    int failures = 0, done = 0;
    std::vector<int> chunks{prompt};
    for (int i = 0; i < steps; i++) chunks.push_back(1);
    for (int chunk : chunks) {
        Shape s = full;
        s.T = chunk;
        const size_t qrow = (size_t)Hq * D, krow = (size_t)Hkv * D;
        std::vector<float> qc((size_t)B * chunk * qrow), kc((size_t)B * chunk * krow), vc((size_t)B * chunk * krow);
        for (int b = 0; b < B; b++) {
            std::copy_n(q.begin() + ((size_t)b * total + done) * qrow, chunk * qrow, qc.begin() + (size_t)b * chunk * qrow);
            std::copy_n(k.begin() + ((size_t)b * total + done) * krow, chunk * krow, kc.begin() + (size_t)b * chunk * krow);
            std::copy_n(v.begin() + ((size_t)b * total + done) * krow, chunk * krow, vc.begin() + (size_t)b * chunk * krow);
        }
        float *dq = upload(qc), *dk = upload(kc), *dv = upload(vc), *dout = alloc<float>(qc.size());
        const long long kbs = s.batch_stride(Hkv), khs = s.head_stride(Hkv), kts = s.token_stride(Hkv);
        if (done == 0) rellax_attn_key_mean<<<dim3(Hkv, B), 128>>>(dk, kbs, khs, kts, padding, Hkv, chunk, D, key_mean);
        const unsigned grid = blocks((long long)B * Hkv * chunk, RELLAX_ATTN_QUANT_WARPS);
        rellax_attn_quantize_rows<<<grid, 32 * RELLAX_ATTN_QUANT_WARPS>>>(dk, kbs, khs, kts, key_mean, padding, B, Hkv, chunk, D, 1.0f, keys,
                                                                           key_scales, key_sums, cap, D, done);
        rellax_attn_quantize_rows<<<grid, 32 * RELLAX_ATTN_QUANT_WARPS>>>(dv, kbs, khs, kts, nullptr, padding, B, Hkv, chunk, D, 1.0f, values,
                                                                           value_scales, nullptr, cap, D, done);
        const long long qbs = s.batch_stride(Hq), qhs = s.head_stride(Hq), qts = s.token_stride(Hq);
        rellax_attn_int8_decode<<<blocks((long long)B * Hq * chunk, RELLAX_ATTN_WARPS), 32 * RELLAX_ATTN_WARPS>>>(
            dq, qbs, qhs, qts, keys, key_scales, values, value_scales, padding, B, Hq, Hkv, chunk, D, cap, done + chunk,
            scale * attention_check::kLog2E, 1, dout, qbs, qhs, qts);
        CUDA_CHECK(cudaGetLastError());
        CUDA_CHECK(cudaDeviceSynchronize());
        attention_check::quantize_into_cache(image, kc, vc, s, done == 0 ? &lengths : nullptr);
        const std::vector<float> o = download(dout, qc.size());
        const Accuracy a = attention_check::measure(o, attention_check::int8_decode(qc, image, s, scale, true));
        // The cache must hold exactly what the reference quantizer wrote (positions [0, count)).
        const std::vector<signed char> hk = download(keys, rows * D), hv = download(values, rows * D);
        const std::vector<float> hks = download(key_scales, rows), hvs = download(value_scales, rows);
        const std::vector<int> hsum = download(key_sums, rows);
        int cache_bad = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < Hkv; h++)
                for (int j = 0; j < image.count; j++) {
                    const size_t r = image.row(b, h, j);
                    cache_bad += std::memcmp(&hk[r * D], &image.keys[r * D], D) != 0 || std::memcmp(&hv[r * D], &image.values[r * D], D) != 0 ||
                                 std::memcmp(&hks[r], &image.key_scales[r], 4) != 0 || std::memcmp(&hvs[r], &image.value_scales[r], 4) != 0 ||
                                 hsum[r] != image.key_sums[r];
                }
        if (a.rel_l1 >= 1e-3 || cache_bad) {
            std::printf("FAIL decode chunk at %d (Tq = %d): relL1 %.2e vs Int8Decode, %d cache rows differ\n", done, chunk, a.rel_l1, cache_bad);
            failures++;
        }
        for (int b = 0; b < B; b++)
            std::copy_n(o.begin() + (size_t)b * chunk * qrow, chunk * qrow, output.begin() + ((size_t)b * total + done) * qrow);
        for (void* p : {(void*)dq, (void*)dk, (void*)dv, (void*)dout}) cudaFree(p);
        done += chunk;
    }
    const Accuracy overall = attention_check::measure(output, exact);
    failures += !overall.meets_spec();
    std::printf("%s decode B=%d Hq=%d Hkv=%d D=%d prompt=%d + %d steps: whole sequence vs exact relL1 %.2e cos %.6f\n",
                failures ? "FAIL" : "ok  ", B, Hq, Hkv, D, prompt, steps, overall.rel_l1, overall.cosine);
    for (void* p : {(void*)keys, (void*)values, (void*)key_scales, (void*)value_scales, (void*)key_mean, (void*)key_sums, (void*)padding})
        cudaFree(p);
    return failures;
}

// Times the whole int8 prefill (mean + quantization + attention) on issue 5's benchmark shapes.
static void benchmark() {
    std::printf("benchmark: int8 prefill (key mean + quantize + attention), B=1 Hq=32 D=128 causal\n");
    for (int hkv : {32, 8})
        for (int T : {512, 1024, 2048, 4096}) {
            const Shape s{1, 32, hkv, T, 128, true};
            const std::vector<float> q = attention_check::normal((size_t)32 * T * 128, 1);
            const std::vector<float> k = attention_check::normal((size_t)hkv * T * 128, 2), v = attention_check::normal(k.size(), 3);
            Prefill p(s, q, k, v, {T});
            p.launch(0.0883883f, true, true);
            CUDA_CHECK(cudaDeviceSynchronize());
            cudaEvent_t start, stop;
            CUDA_CHECK(cudaEventCreate(&start));
            CUDA_CHECK(cudaEventCreate(&stop));
            const int iterations = 20;
            CUDA_CHECK(cudaEventRecord(start));
            for (int i = 0; i < iterations; i++) p.launch(0.0883883f, true, true);
            CUDA_CHECK(cudaEventRecord(stop));
            CUDA_CHECK(cudaEventSynchronize(stop));
            float ms = 0;
            CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
            ms /= iterations;
            const double flops = 4.0 * T * (double)T * 128 * 32 / 2;
            std::printf("  Hkv=%2d T=%4d: %.3f ms  (%.1f TFLOP/s effective)\n", hkv, T, ms, flops / (ms * 1e-3) / 1e12);
            CUDA_CHECK(cudaEventDestroy(start));
            CUDA_CHECK(cudaEventDestroy(stop));
        }
}

int main() {
    int failures = 0;
    failures += check_prefill(1, 1, 1, 1, 64, {1});
    failures += check_prefill(2, 4, 2, 37, 64, {37, 20});
    failures += check_prefill(3, 6, 2, 45, 128, {45, 1, 0});
    failures += check_prefill(1, 8, 4, 67, 8, {60});
    failures += check_prefill(2, 2, 2, 130, 64, {130, 129});
    failures += check_prefill(1, 2, 1, 200, 256, {171});
    failures += check_prefill(1, 2, 2, 150, 96, {150});
    failures += check_prefill(1, 2, 1, 1024, 128, {1000});
    // Fewer queries than keys (a chunk against a KV cache), as attention_sim's check_chunks.
    failures += check_prefill(1, 4, 2, 1, 64, {300}, 300);
    failures += check_prefill(2, 6, 2, 3, 24, {130, 70}, 130);
    failures += check_prefill(3, 4, 1, 17, 8, {200, 17, 5}, 200);
    failures += check_prefill(2, 8, 4, 1, 128, {65, 0}, 65);
    failures += check_prefill(1, 2, 2, 70, 64, {150}, 150);
    failures += check_decode(1, 4, 4, 64, 40, 1);
    failures += check_decode(2, 8, 2, 128, 33, 5);
    failures += check_decode(3, 8, 4, 8, 20, 1);
    if (failures) {
        std::fprintf(stderr, "int8_attention_test: %d check(s) failed\n", failures);
        return 1;
    }
    benchmark();
    std::printf("int8_attention_test: all passed\n");
    return 0;
}
