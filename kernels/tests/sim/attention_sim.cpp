// attention_sim.cpp: runs kernels/int8_attention.cu on the CPU through cuda_host_sim.h against the references of
// attention_check.h (a C++ port of AttentionReference), for machines without a GPU. Exits non-zero on any mismatch.
//   g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I kernels kernels/tests/sim/attention_sim.cpp -o /tmp/attention_sim
//   /tmp/attention_sim
// Checks, as FlashAttentionTests does on the .NET backends:
//   - prefill (key mean, Q/K quantization, the d64 / d128 / d256 prefill kernels): relative L1 < 1e-3 against the
//     int8 reference and SPEC §7's bound (cosine >= 0.999, relative L1 <= 0.02) against exact attention, padding rows
//     exactly 0, over T = 1, T not a multiple of 16 or 64, padding (lengths T, T - 1, 1, 0), GQA, D in {8, 64, 96,
//     128, 256}, both layouts, causal and not, keys with outlier channels; smoothing off fails the bound on the
//     outlier case; NaN in q and v reaches exactly the rows that read it;
//   - cache append (key mean, quantize_rows into the cache): bytes, scales, sums and mean equal to QuantizeIntoCache;
//   - decode (Tq = a whole padded prompt, then Tq = 1 steps) against Int8Decode (relative L1 < 1e-3) and the whole
//     sequence against exact attention.
// The mma instructions run as their host fallbacks (warp fragments gathered, the 16x8 tile computed per the PTX ISA
// fragment layouts), so the fragment index arithmetic is what gets checked; ex2.approx is exp2f, cvt.rn.f16.f32 a
// bit-exact host conversion.
#include <chrono>
#include <string>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda_host_sim.h"

#include "../../int8_attention.cu"
#include "../attention_check.h"

namespace {

using attention_check::Shape;
using attention_check::Accuracy;

struct Strides {
    long long bs, hs, ts;
};
Strides strides(const Shape& s, int H) { return {s.batch_stride(H), s.head_stride(H), s.token_stride(H)}; }

unsigned blocks(long long items, int per_block) { return (unsigned)((items + per_block - 1) / per_block); }

// The launch sequence of CudaAttention.Prefill (int8), on the simulator.
std::vector<float> prefill(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, const Shape& s,
                           const std::vector<int>& lengths, float scale, bool causal, bool smooth) {
    // q has T tokens, k and v Tk = s.keys() positions; padding is in key positions, and for the query quantizer in
    // query rows (query t is key position Tk - T + t), as CudaAttentionKernels.Prefill uploads them.
    const int Dp = s.padded_d(), tk = s.keys();
    std::vector<int> padding(s.B), query_padding(s.B);
    for (int b = 0; b < s.B; b++) {
        padding[b] = tk - lengths[b];
        query_padding[b] = std::max(0, padding[b] - s.shift());
    }
    std::vector<float> mean((size_t)s.B * s.Hkv * s.D);
    std::vector<signed char> qq((size_t)s.B * s.Hq * s.T * Dp, 77), kq((size_t)s.B * s.Hkv * tk * Dp, 77);
    std::vector<float> qs((size_t)s.B * s.Hq * s.T, 7.0f), ks((size_t)s.B * s.Hkv * tk, 7.0f);
    std::vector<float> o(q.size(), 12345.0f);
    const Strides qst = strides(s, s.Hq), kst{s.k_batch_stride(), s.k_head_stride(), s.token_stride(s.Hkv)};
    if (smooth)
        rellax_sim_launch({(unsigned)s.Hkv, (unsigned)s.B, 1}, {64, 1, 1}, [&] {
            rellax_attn_key_mean(k.data(), kst.bs, kst.hs, kst.ts, padding.data(), s.Hkv, tk, s.D, mean.data());
        });
    rellax_sim_launch({blocks((long long)s.B * s.Hq * s.T, RELLAX_ATTN_QUANT_WARPS), 1, 1}, {32 * RELLAX_ATTN_QUANT_WARPS, 1, 1}, [&] {
        rellax_attn_quantize_rows(q.data(), qst.bs, qst.hs, qst.ts, nullptr, query_padding.data(), s.B, s.Hq, s.T, s.D,
                                  scale * attention_check::kLog2E, qq.data(), qs.data(), nullptr, s.T, Dp, 0);
    });
    rellax_sim_launch({blocks((long long)s.B * s.Hkv * tk, RELLAX_ATTN_QUANT_WARPS), 1, 1}, {32 * RELLAX_ATTN_QUANT_WARPS, 1, 1}, [&] {
        rellax_attn_quantize_rows(k.data(), kst.bs, kst.hs, kst.ts, smooth ? mean.data() : nullptr, padding.data(), s.B, s.Hkv, tk,
                                  s.D, 1.0f, kq.data(), ks.data(), nullptr, tk, Dp, 0);
    });
    auto* kernel = s.D <= 64 ? rellax_attn_prefill_int8_d64 : s.D <= 128 ? rellax_attn_prefill_int8_d128 : rellax_attn_prefill_int8_d256;
    rellax_sim_launch({blocks(s.T, RELLAX_ATTN_ROWS), (unsigned)s.Hq, (unsigned)s.B}, {32 * RELLAX_ATTN_WARPS, 1, 1}, [&] {
        kernel(qq.data(), qs.data(), kq.data(), ks.data(), v.data(), kst.bs, kst.hs, kst.ts, o.data(), qst.bs, qst.hs, qst.ts,
               padding.data(), s.Hq, s.Hkv, s.T, tk, s.D, Dp, causal ? 1 : 0);
    });
    return o;
}

std::vector<float> queries(const Shape& s, unsigned seed) { return attention_check::normal((size_t)s.B * s.Hq * s.T * s.D, seed); }

// T query tokens against Tk key positions (0: Tk = T); lengths count real key positions.
int check_prefill(int B, int Hq, int Hkv, int T, int D, std::vector<int> lengths, int Tk = 0) {
    int failures = 0;
    for (bool head_major : {true, false})
        for (bool causal : {true, false})
            for (bool outliers : {false, true}) {
                if (!causal && outliers) continue;
                const Shape s{B, Hq, Hkv, T, D, head_major, Tk};
                const unsigned seed = (unsigned)(T * 11 + D + (outliers ? 1000 : 0));
                const std::vector<float> q = queries(s, seed);
                const std::vector<float> k = outliers ? attention_check::keys_with_outliers(s, seed + 1)
                                                      : attention_check::normal((size_t)B * Hkv * s.keys() * D, seed + 1);
                const std::vector<float> v = attention_check::normal(k.size(), seed + 2);
                const float scale = 1.0f / std::sqrt((float)D);
                const auto start = std::chrono::steady_clock::now();
                const std::vector<float> o = prefill(q, k, v, s, lengths, scale, causal, true);
                const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
                const Accuracy vs_int8 = attention_check::measure(o, attention_check::int8_prefill(q, k, v, s, lengths, scale, causal));
                const Accuracy vs_exact = attention_check::measure(o, attention_check::exact(q, k, v, s, lengths, scale, causal));
                const int pad_bad = attention_check::nonzero_padding(o, s, lengths);
                const bool ok = vs_int8.rel_l1 < 1e-3 && vs_exact.meets_spec() && pad_bad == 0;
                std::printf("%s prefill B=%d Hq=%d Hkv=%d T=%d Tk=%d D=%d %s %s%s lengths=", ok ? "ok  " : "FAIL", B, Hq, Hkv, T, s.keys(), D,
                            head_major ? "head-major" : "token-major", causal ? "causal" : "full", outliers ? " outliers" : "");
                for (int l : lengths) std::printf("%d,", l);
                std::printf(" vs int8 ref: relL1 %.2e cos %.7f; vs exact: relL1 %.2e cos %.6f; padding nonzero %d (%.0f ms)\n",
                            vs_int8.rel_l1, vs_int8.cosine, vs_exact.rel_l1, vs_exact.cosine, pad_bad, ms);
                std::fflush(stdout);
                failures += !ok;
            }
    return failures;
}

int check_smoothing_matters() {
    const Shape s{1, 4, 2, 64, 64, true};
    const std::vector<int> lengths{64};
    const std::vector<float> q = queries(s, 99), k = attention_check::keys_with_outliers(s, 100);
    const std::vector<float> v = attention_check::normal(k.size(), 101);
    const float scale = 0.125f;
    const std::vector<double> exact = attention_check::exact(q, k, v, s, lengths, scale, true);
    const Accuracy smoothed = attention_check::measure(prefill(q, k, v, s, lengths, scale, true, true), exact);
    const Accuracy raw = attention_check::measure(prefill(q, k, v, s, lengths, scale, true, false), exact);
    const Accuracy raw_ref = attention_check::measure(prefill(q, k, v, s, lengths, scale, true, false),
                                                      attention_check::int8_prefill(q, k, v, s, lengths, scale, true, false));
    const bool ok = smoothed.meets_spec() && !raw.meets_spec() && raw_ref.rel_l1 < 1e-3;
    std::printf("%s smoothing matters (outlier keys, T=64, D=64): smoothed relL1 %.2e cos %.6f; unsmoothed relL1 %.2e cos %.6f "
                "(unsmoothed vs its int8 ref relL1 %.2e)\n",
                ok ? "ok  " : "FAIL", smoothed.rel_l1, smoothed.cosine, raw.rel_l1, raw.cosine, raw_ref.rel_l1);
    return !ok;
}

int check_nan() {
    const Shape s{1, 2, 1, 16, 64, true};
    std::vector<float> q = queries(s, 5), k = attention_check::normal(16 * 64, 6), v = attention_check::normal(16 * 64, 7);
    q[s.offset(2, 0, 1, 3) + 7] = NAN;   // query head 1, token 3
    v[s.offset(1, 0, 0, 10) + 2] = NAN;  // value token 10: every query at t >= 10 reads it
    const std::vector<float> o = prefill(q, k, v, s, {16}, 0.125f, true, true);
    int bad = 0;
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < 16; t++) {
            bool any_nan = false, all_finite = true;
            for (int c = 0; c < 64; c++) {
                const float x = o[s.offset(2, 0, h, t) + c];
                any_nan |= std::isnan(x);
                all_finite &= std::isfinite(x);
            }
            const bool expect_nan = t >= 10 || (h == 1 && t == 3);
            bad += expect_nan ? !any_nan : !all_finite;
        }
    std::printf("%s NaN propagation: %d rows wrong\n", bad ? "FAIL" : "ok  ", bad);
    return bad != 0;
}

// Device image of an Int8KvCache plus the launch sequence of CudaAttention.Append / Decode.
struct SimCache {
    attention_check::CacheImage img;
    SimCache(int b, int h, int d, int c) : img(b, h, d, c) {
        std::fill(img.keys.begin(), img.keys.end(), 99);  // the kernels must write every position they own
        std::fill(img.key_scales.begin(), img.key_scales.end(), 99.0f);
    }
    void append(const std::vector<float>& k, const std::vector<float>& v, const Shape& s, const std::vector<int>* lengths) {
        const Strides st = strides(s, s.Hkv);
        const int start = img.count;
        if (start == 0) {
            for (int b = 0; b < s.B; b++) img.padding[b] = s.T - (lengths ? (*lengths)[b] : s.T);
            rellax_sim_launch({(unsigned)s.Hkv, (unsigned)s.B, 1}, {64, 1, 1}, [&] {
                rellax_attn_key_mean(k.data(), st.bs, st.hs, st.ts, img.padding.data(), s.Hkv, s.T, s.D, img.key_mean.data());
            });
        }
        const unsigned grid = blocks((long long)s.B * s.Hkv * s.T, RELLAX_ATTN_QUANT_WARPS);
        rellax_sim_launch({grid, 1, 1}, {32 * RELLAX_ATTN_QUANT_WARPS, 1, 1}, [&] {
            rellax_attn_quantize_rows(k.data(), st.bs, st.hs, st.ts, img.key_mean.data(), img.padding.data(), s.B, s.Hkv, s.T, s.D, 1.0f,
                                      (signed char*)img.keys.data(), img.key_scales.data(), img.key_sums.data(), img.cap, s.D, start);
        });
        rellax_sim_launch({grid, 1, 1}, {32 * RELLAX_ATTN_QUANT_WARPS, 1, 1}, [&] {
            rellax_attn_quantize_rows(v.data(), st.bs, st.hs, st.ts, nullptr, img.padding.data(), s.B, s.Hkv, s.T, s.D, 1.0f,
                                      (signed char*)img.values.data(), img.value_scales.data(), nullptr, img.cap, s.D, start);
        });
        img.count = start + s.T;
    }
    std::vector<float> decode(const std::vector<float>& q, const Shape& s, float scale, bool causal) {
        const Strides st = strides(s, s.Hq);
        std::vector<float> o(q.size(), 12345.0f);
        rellax_sim_launch({blocks((long long)s.B * s.Hq * s.T, RELLAX_ATTN_WARPS), 1, 1}, {32 * RELLAX_ATTN_WARPS, 1, 1}, [&] {
            rellax_attn_int8_decode(q.data(), st.bs, st.hs, st.ts, (const signed char*)img.keys.data(), img.key_scales.data(),
                                    (const signed char*)img.values.data(), img.value_scales.data(), img.padding.data(), s.B, s.Hq,
                                    s.Hkv, s.T, s.D, img.cap, img.count, scale * attention_check::kLog2E, causal ? 1 : 0, o.data(),
                                    st.bs, st.hs, st.ts);
        });
        return o;
    }
};

// Positions [0, count) of every row must match exactly (bits of the scales).
int cache_mismatches(const attention_check::CacheImage& a, const attention_check::CacheImage& e) {
    int bad = 0;
    for (int b = 0; b < a.B; b++)
        for (int h = 0; h < a.H; h++) {
            for (int c = 0; c < a.D; c++) bad += std::memcmp(&a.key_mean[((size_t)b * a.H + h) * a.D + c], &e.key_mean[((size_t)b * a.H + h) * a.D + c], 4) != 0;
            for (int j = 0; j < e.count; j++) {
                const size_t r = e.row(b, h, j);
                bad += std::memcmp(&a.keys[r * a.D], &e.keys[r * a.D], a.D) != 0;
                bad += std::memcmp(&a.values[r * a.D], &e.values[r * a.D], a.D) != 0;
                bad += std::memcmp(&a.key_scales[r], &e.key_scales[r], 4) != 0;
                bad += std::memcmp(&a.value_scales[r], &e.value_scales[r], 4) != 0;
                bad += a.key_sums[r] != e.key_sums[r];
            }
        }
    return bad;
}

std::vector<float> slice(const std::vector<float>& x, const Shape& full, int H, int start, int count) {
    const size_t row = (size_t)H * full.D;
    std::vector<float> r((size_t)full.B * count * row);
    for (int b = 0; b < full.B; b++)
        std::copy(x.begin() + ((size_t)b * full.T + start) * row, x.begin() + ((size_t)b * full.T + start + count) * row,
                  r.begin() + (size_t)b * count * row);
    return r;
}

int check_cache(bool head_major) {
    const Shape s{2, 2, 2, 13, 64, head_major};
    const std::vector<int> lengths{13, 9};
    const std::vector<float> k = attention_check::keys_with_outliers(s, 21), v = attention_check::normal(k.size(), 22);
    SimCache cache(2, 2, 64, 20);
    attention_check::CacheImage expected(2, 2, 64, 20);
    cache.append(k, v, s, &lengths);
    attention_check::quantize_into_cache(expected, k, v, s, &lengths);
    int bad = cache_mismatches(cache.img, expected);
    const Shape s2{2, 2, 2, 3, 64, head_major};
    const std::vector<float> k2 = attention_check::keys_with_outliers(s2, 23), v2 = attention_check::normal(k2.size(), 24);
    cache.append(k2, v2, s2, nullptr);
    attention_check::quantize_into_cache(expected, k2, v2, s2, nullptr);
    bad += cache_mismatches(cache.img, expected);
    std::printf("%s cache append (%s, 13 + 3 tokens, lengths 13, 9, outlier keys): %d rows differ from QuantizeIntoCache\n",
                bad ? "FAIL" : "ok  ", head_major ? "head-major" : "token-major", bad);
    return bad != 0;
}

int check_decode(int B, int Hq, int Hkv, int D, int prompt, int steps) {
    const int total = prompt + steps;
    const Shape full{B, Hq, Hkv, total, D, false};
    const std::vector<float> q = queries(full, (unsigned)(D + prompt));
    const std::vector<float> k = attention_check::keys_with_outliers(full, (unsigned)(D + prompt + 1));
    const std::vector<float> v = attention_check::normal(k.size(), (unsigned)(D + prompt + 2));
    std::vector<int> lengths(B), full_lengths(B);
    for (int b = 0; b < B; b++) { lengths[b] = prompt - 3 * b; full_lengths[b] = lengths[b] + steps; }
    const float scale = 1.0f / std::sqrt((float)D);
    const std::vector<double> exact = attention_check::exact(q, k, v, full, full_lengths, scale, true);
    SimCache cache(B, Hkv, D, total + 2);
    attention_check::CacheImage image(B, Hkv, D, total + 2);
    std::vector<float> output(q.size());
    int failures = 0, done = 0;
    std::vector<int> chunks{prompt};
    for (int i = 0; i < steps; i++) chunks.push_back(1);
    for (int chunk : chunks) {
        Shape s = full;
        s.T = chunk;
        const std::vector<float> qc = slice(q, full, Hq, done, chunk), kc = slice(k, full, Hkv, done, chunk), vc = slice(v, full, Hkv, done, chunk);
        cache.append(kc, vc, s, done == 0 ? &lengths : nullptr);
        attention_check::quantize_into_cache(image, kc, vc, s, done == 0 ? &lengths : nullptr);
        const std::vector<float> o = cache.decode(qc, s, scale, true);
        const Accuracy a = attention_check::measure(o, attention_check::int8_decode(qc, image, s, scale, true));
        const bool ok = a.rel_l1 < 1e-3 && cache_mismatches(cache.img, image) == 0;
        if (!ok) std::printf("FAIL decode chunk at %d (Tq = %d): relL1 %.2e vs the int8 reference\n", done, chunk, a.rel_l1);
        failures += !ok;
        const size_t row = (size_t)Hq * D;
        for (int b = 0; b < B; b++)
            std::copy(o.begin() + (size_t)b * chunk * row, o.begin() + (size_t)(b + 1) * chunk * row,
                      output.begin() + ((size_t)b * total + done) * row);
        done += chunk;
    }
    const Accuracy overall = attention_check::measure(output, exact);
    failures += !overall.meets_spec();
    std::printf("%s decode B=%d Hq=%d Hkv=%d D=%d prompt=%d + %d steps: every chunk within 1e-3 of Int8Decode; "
                "whole sequence vs exact relL1 %.2e cos %.6f\n",
                failures ? "FAIL" : "ok  ", B, Hq, Hkv, D, prompt, steps, overall.rel_l1, overall.cosine);
    return failures;
}

}  // namespace

// Fewer queries than keys (a chunk of new tokens against a KV cache): Tq 1, 3 and 17 against Tk up to 300, GQA,
// sequences with fewer real keys than queries (their first query rows are padding) or none.
int check_chunks() {
    int failures = 0;
    failures += check_prefill(1, 4, 2, 1, 64, {300}, 300);
    failures += check_prefill(2, 6, 2, 3, 24, {130, 70}, 130);
    failures += check_prefill(3, 4, 1, 17, 8, {200, 17, 5}, 200);
    failures += check_prefill(2, 8, 4, 1, 128, {65, 0}, 65);
    failures += check_prefill(1, 2, 2, 70, 64, {150}, 150);  // two 64-row query tiles
    return failures;
}

int main(int argc, char** argv) {
    int failures = 0;
    if (argc > 1 && std::string(argv[1]) == "chunks") {  // only the Tq < Tk prefill checks (a few minutes less)
        failures = check_chunks();
        std::printf(failures ? "attention_sim chunks: %d failed\n" : "attention_sim chunks: all passed\n", failures);
        return failures ? 1 : 0;
    }
    if (argc > 1 && std::string(argv[1]) == "quick") {  // two whole-sequence (Tq = Tk) prefill shapes only
        failures = check_prefill(2, 4, 2, 37, 64, {37, 20}) + check_prefill(2, 2, 2, 130, 64, {130, 129});
        std::printf(failures ? "attention_sim quick: %d failed\n" : "attention_sim quick: all passed\n", failures);
        return failures ? 1 : 0;
    }
    failures += check_chunks();
    failures += check_prefill(1, 1, 1, 1, 64, {1});
    failures += check_prefill(2, 4, 2, 37, 64, {37, 20});
    failures += check_prefill(3, 6, 2, 45, 128, {45, 1, 0});
    failures += check_prefill(1, 8, 4, 67, 8, {60});
    failures += check_prefill(2, 2, 2, 130, 64, {130, 129});
    failures += check_prefill(1, 2, 1, 80, 256, {71});
    failures += check_prefill(1, 2, 2, 150, 96, {150});
    failures += check_smoothing_matters();
    failures += check_nan();
    failures += check_cache(true);
    failures += check_cache(false);
    failures += check_decode(1, 4, 4, 64, 40, 1);
    failures += check_decode(2, 8, 2, 128, 33, 5);
    failures += check_decode(3, 8, 4, 8, 20, 1);
    if (failures) {
        std::fprintf(stderr, "attention_sim: %d check(s) failed\n", failures);
        return 1;
    }
    std::printf("attention_sim: all passed\n");
    return 0;
}
