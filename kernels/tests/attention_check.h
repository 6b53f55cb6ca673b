// attention_check.h: host references for kernels/int8_attention.cu, shared by the GPU self-test
// (kernels/tests/int8_attention_test.cu) and the CPU simulation (kernels/tests/sim/attention_sim.cpp).
//
// A C++ port of src/Rellax.Kernels/Attention/AttentionReference.cs (the ground truth): QuantizeRow (bit-exact: the
// same fp32 operations), the fp64 key mean, the int8 prefill algorithm with an fp64 softmax, exact fp64 attention,
// QuantizeIntoCache and Int8Decode; plus inputs (normal entries, keys with outlier channels as AttentionCheck makes
// them) and the accuracy measures of the C# tests (relative L1, cosine).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace attention_check {

constexpr float kLog2E = 1.44269504088896341f;

// Geometry of one call: B sequences, Hq query heads, Hkv KV heads, T query tokens of D channels, head- or token-major;
// k and v hold Tk >= T positions (0 means T), query t sitting at key position Tk - T + t (AttentionShape's KeyTokens).
// offset/strides with a head count H use T (shapes with Tk = T); k_offset/k_* address k and v with Tk.
struct Shape {
    int B, Hq, Hkv, T, D;
    bool head_major;
    int Tk = 0;
    int group() const { return Hq / Hkv; }
    int keys() const { return Tk > 0 ? Tk : T; }
    int shift() const { return keys() - T; }
    long long token_stride(int H) const { return head_major ? D : (long long)H * D; }
    long long head_stride(int H) const { return head_major ? (long long)T * D : D; }
    long long batch_stride(int H) const { return (long long)H * T * D; }
    long long offset(int H, int b, int h, int t) const {
        return b * batch_stride(H) + h * head_stride(H) + t * token_stride(H);
    }
    long long k_head_stride() const { return head_major ? (long long)keys() * D : D; }
    long long k_batch_stride() const { return (long long)Hkv * keys() * D; }
    long long k_offset(int b, int h, int j) const { return b * k_batch_stride() + h * k_head_stride() + j * token_stride(Hkv); }
    int padded_d() const { return (D + 31) / 32 * 32; }
};

// AttentionReference.QuantizeRow: returns m / 127 * multiplier; q gets round-half-even(x * (127 / m)) clamped.
inline float quantize_row(const float* x, int n, int8_t* q, float multiplier) {
    float m = 0.0f;
    for (int c = 0; c < n; c++) m = (std::isnan(x[c]) || std::isnan(m)) ? NAN : std::max(m, std::fabs(x[c]));
    if (m > 0.0f && std::isfinite(m)) {
        const float inv = 127.0f / m;
        for (int c = 0; c < n; c++) {
            const float r = std::nearbyint(x[c] * inv);
            q[c] = (int8_t)std::clamp(r, -127.0f, 127.0f);
        }
    } else {
        for (int c = 0; c < n; c++) q[c] = 0;
    }
    return m / 127.0f * multiplier;
}

// fp32 mean (accumulated in fp64) of key rows [first, end) of (b, h) (H is Hkv, kept for the callers).
inline std::vector<float> key_mean(const std::vector<float>& k, const Shape& s, int H, int b, int h, int first, int end) {
    (void)H;
    std::vector<double> sum(s.D, 0.0);
    for (int j = first; j < end; j++)
        for (int c = 0; c < s.D; c++) sum[c] += k[s.k_offset(b, h, j) + c];
    std::vector<float> mean(s.D, 0.0f);
    if (end > first)
        for (int c = 0; c < s.D; c++) mean[c] = (float)(sum[c] / (end - first));
    return mean;
}

// o = Σ_j w_j v_j / Σ_j w_j over j in [first, last], w = 2^(p - max) or e^(p - max); empty ranges give 0.
template <class ValueRow>
inline void accumulate(const std::vector<double>& p, int first, int last, double max, ValueRow value_row, double* o, int D,
                       bool exp2) {
    for (int c = 0; c < D; c++) o[c] = 0.0;
    if (last < first) return;
    double sum = 0.0;
    for (int j = first; j <= last; j++) {
        const double w = exp2 ? std::pow(2.0, p[j] - max) : std::exp(p[j] - max);
        sum += w;
        const float* vr = value_row(j);
        for (int c = 0; c < D; c++) o[c] += w * vr[c];
    }
    for (int c = 0; c < D; c++) o[c] /= sum;
}

// AttentionReference.Exact: fp64 attention, query t at key position Tk - T + t, padding query rows 0.
inline std::vector<double> exact(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                 const Shape& s, const std::vector<int>& lengths, float scale, bool causal) {
    const int tk = s.keys(), shift = s.shift();
    std::vector<double> o(q.size(), 0.0), p(tk);
    for (int b = 0; b < s.B; b++) {
        const int pad = tk - lengths[b];
        for (int h = 0; h < s.Hq; h++) {
            const int kvh = h / s.group();
            for (int t = std::max(0, pad - shift); t < s.T; t++) {
                const int last = causal ? t + shift : tk - 1;
                const long long qo = s.offset(s.Hq, b, h, t);
                double max = -INFINITY;
                for (int j = pad; j <= last; j++) {
                    const long long ko = s.k_offset(b, kvh, j);
                    double dot = 0.0;
                    for (int c = 0; c < s.D; c++) dot += (double)q[qo + c] * k[ko + c];
                    p[j] = dot * scale;
                    max = std::max(max, p[j]);
                }
                accumulate(p, pad, last, max, [&](int j) { return &v[s.k_offset(b, kvh, j)]; }, &o[qo], s.D, false);
            }
        }
    }
    return o;
}

// AttentionReference.Int8Prefill with per-token blocks (the kernels' granularity).
inline std::vector<double> int8_prefill(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                        const Shape& s, const std::vector<int>& lengths, float scale, bool causal,
                                        bool smooth = true) {
    const int D = s.D, tk = s.keys(), shift = s.shift();
    std::vector<double> o(q.size(), 0.0), p(tk);
    std::vector<int8_t> qh((size_t)s.T * D), kh((size_t)tk * D);
    std::vector<float> qs(s.T), kscale(tk), row(D);
    for (int b = 0; b < s.B; b++) {
        const int pad = tk - lengths[b], first_query = std::max(0, pad - shift);
        for (int kvh = 0; kvh < s.Hkv; kvh++) {
            const std::vector<float> mean = smooth ? key_mean(k, s, s.Hkv, b, kvh, pad, tk) : std::vector<float>(D, 0.0f);
            for (int j = pad; j < tk; j++) {
                for (int c = 0; c < D; c++) row[c] = k[s.k_offset(b, kvh, j) + c] - mean[c];
                kscale[j] = quantize_row(row.data(), D, &kh[(size_t)j * D], 1.0f);
            }
            for (int gi = 0; gi < s.group(); gi++) {
                const int h = kvh * s.group() + gi;
                for (int t = first_query; t < s.T; t++) qs[t] = quantize_row(&q[s.offset(s.Hq, b, h, t)], D, &qh[(size_t)t * D], scale * kLog2E);
                for (int t = first_query; t < s.T; t++) {
                    const int last = causal ? t + shift : tk - 1;
                    double max = -INFINITY;
                    for (int j = pad; j <= last; j++) {
                        long long dot = 0;
                        for (int c = 0; c < D; c++) dot += (int)qh[(size_t)t * D + c] * (int)kh[(size_t)j * D + c];
                        p[j] = (double)dot * (double)qs[t] * kscale[j];
                        max = (std::isnan(p[j]) || std::isnan(max)) ? NAN : std::max(max, p[j]);
                    }
                    accumulate(p, pad, last, max, [&](int j) { return &v[s.k_offset(b, kvh, j)]; },
                               &o[s.offset(s.Hq, b, h, t)], D, true);
                }
            }
        }
    }
    return o;
}

// Host image of an Int8KvCache (same layouts as the device buffers).
struct CacheImage {
    int B, H, D, cap, count = 0;
    std::vector<int8_t> keys, values;
    std::vector<float> key_scales, value_scales, key_mean;
    std::vector<int> key_sums, padding;
    CacheImage(int b, int h, int d, int c)
        : B(b), H(h), D(d), cap(c), keys((size_t)b * h * c * d), values((size_t)b * h * c * d), key_scales((size_t)b * h * c),
          value_scales((size_t)b * h * c), key_mean((size_t)b * h * d), key_sums((size_t)b * h * c), padding(b) {}
    size_t row(int b, int h, int j) const { return ((size_t)b * H + h) * cap + j; }
};

// AttentionReference.QuantizeIntoCache: s.Hq = s.Hkv = the cache's heads; lengths only on the first append.
inline void quantize_into_cache(CacheImage& cache, const std::vector<float>& k, const std::vector<float>& v, const Shape& s,
                                const std::vector<int>* lengths) {
    const int D = s.D, start = cache.count;
    if (start == 0)
        for (int b = 0; b < s.B; b++) {
            cache.padding[b] = s.T - (lengths ? (*lengths)[b] : s.T);
            for (int h = 0; h < s.Hkv; h++) {
                const std::vector<float> mean = key_mean(k, s, s.Hkv, b, h, cache.padding[b], s.T);
                std::copy(mean.begin(), mean.end(), cache.key_mean.begin() + ((size_t)b * s.Hkv + h) * D);
            }
        }
    std::vector<float> row(D);
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.Hkv; h++)
            for (int t = 0; t < s.T; t++) {
                const int j = start + t;
                const size_t r = cache.row(b, h, j);
                int8_t* kh = &cache.keys[r * D];
                int8_t* vh = &cache.values[r * D];
                if (j < cache.padding[b]) {
                    std::fill(kh, kh + D, 0); std::fill(vh, vh + D, 0);
                    cache.key_scales[r] = 0; cache.key_sums[r] = 0; cache.value_scales[r] = 0;
                    continue;
                }
                const long long src = s.offset(s.Hkv, b, h, t);
                for (int c = 0; c < D; c++) row[c] = k[src + c] - cache.key_mean[((size_t)b * s.Hkv + h) * D + c];
                cache.key_scales[r] = quantize_row(row.data(), D, kh, 1.0f);
                int sum = 0;
                for (int c = 0; c < D; c++) sum += kh[c];
                cache.key_sums[r] = sum;
                cache.value_scales[r] = quantize_row(&v[src], D, vh, 1.0f);
            }
    cache.count = start + s.T;
}

// AttentionReference.Int8Decode: query t is position count - Tq + t.
inline std::vector<double> int8_decode(const std::vector<float>& q, const CacheImage& cache, const Shape& s, float scale, bool causal) {
    const int D = s.D, keys = cache.count;
    std::vector<double> o(q.size(), 0.0), p(keys);
    std::vector<int8_t> qh(D);
    std::vector<float> vrow(D);
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.Hq; h++) {
            const int kvh = h / s.group();
            for (int t = 0; t < s.T; t++) {
                const int position = keys - s.T + t;
                if (position < cache.padding[b]) continue;
                const long long qo = s.offset(s.Hq, b, h, t);
                const float qs = quantize_row(&q[qo], D, qh.data(), scale * kLog2E);
                const int first = cache.padding[b], last = causal ? position : keys - 1;
                double max = -INFINITY;
                for (int j = first; j <= last; j++) {
                    const size_t r = cache.row(b, kvh, j);
                    long long dot = 0;
                    for (int c = 0; c < D; c++) dot += (int)qh[c] * (int)cache.keys[r * D + c];
                    p[j] = (double)dot * (double)qs * cache.key_scales[r];
                    max = (std::isnan(p[j]) || std::isnan(max)) ? NAN : std::max(max, p[j]);
                }
                accumulate(p, first, last, max, [&](int j) {
                    const size_t r = cache.row(b, kvh, j);
                    for (int c = 0; c < D; c++) vrow[c] = cache.values[r * D + c] * cache.value_scales[r];
                    return vrow.data();
                }, &o[qo], D, true);
            }
        }
    return o;
}

// N(0, sigma) floats from a fixed seed.
inline std::vector<float> normal(size_t n, unsigned seed, float sigma = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> a(n);
    for (auto& x : a) x = dist(rng);
    return a;
}

// Keys whose every 16th channel carries a per-(sequence, head) bias of 20-40 (AttentionCheck.KeysWithOutliers).
inline std::vector<float> keys_with_outliers(const Shape& s, unsigned seed) {
    std::vector<float> k = normal((size_t)s.B * s.Hkv * s.keys() * s.D, seed);
    std::mt19937 rng(seed + 1);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.Hkv; h++)
            for (int c = 0; c < s.D; c += 16) {
                const float bias = 20.0f * (u(rng) < 0.5f ? -1.0f : 1.0f) * (1.0f + u(rng));
                for (int t = 0; t < s.keys(); t++) k[s.k_offset(b, h, t) + c] += bias;
            }
    return k;
}

struct Accuracy {
    double cosine, rel_l1;
    bool meets_spec() const { return cosine >= 0.999 && rel_l1 <= 0.02; }
};

// Cosine similarity and Σ|a - e| / Σ|e| (AttentionCheck.Measure).
inline Accuracy measure(const std::vector<float>& a, const std::vector<double>& e) {
    double dot = 0, na = 0, ne = 0, l1 = 0, l1e = 0;
    for (size_t i = 0; i < a.size(); i++) {
        dot += a[i] * e[i]; na += (double)a[i] * a[i]; ne += e[i] * e[i];
        l1 += std::fabs(a[i] - e[i]); l1e += std::fabs(e[i]);
    }
    return {na == 0 && ne == 0 ? 1.0 : dot / std::sqrt(na * ne), l1e == 0 ? l1 : l1 / l1e};
}

// Number of elements of padding query rows (key position Tk - T + t < Tk - lengths[b]) that are not exactly 0.
inline int nonzero_padding(const std::vector<float>& o, const Shape& s, const std::vector<int>& lengths) {
    int bad = 0;
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.Hq; h++)
            for (int t = 0; t < std::min(s.T, s.keys() - lengths[b] - s.shift()); t++)
                for (int c = 0; c < s.D; c++) bad += o[s.offset(s.Hq, b, h, t) + c] != 0.0f;
    return bad;
}

}  // namespace attention_check
