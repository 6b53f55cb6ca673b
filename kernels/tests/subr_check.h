// subr_check.h: the host side shared by the SUBR self-tests: subr_topk_test.cu (on a GPU, via ctest) and
// sim/subr_sim.cpp (the same kernel simulated on the CPU). Deterministic random problems (random rows, duplicate
// events, identical rows, adversarial score orders, empty and long histories), and two references:
//   - exact: the kernel's own fp32 operation order re-done on the host (per-lane fmaf partials over the same vector
//     chunks, then the xor-shuffle butterfly; i8 exact), then a sort-based selection by (score desc, position desc).
//     The kernel must match it bit for bit: positions, scores, -1 / NaN padding. This checks the selection logic
//     (threshold, queue, merges, ties, output orders) with no tolerance at all.
//   - double: SubrReference's formula (f32 / f16 values in double; i8 exact). Scores must agree within a bound
//     derived from Σ|t_c h_c|, and the selected set may differ only by items whose reference score is within that
//     bound of the k-th best reference score (near ties).
// Include after subr_topk.cu (for RELLAX_SUBR_PATH_*).
#pragma once
#include "host_bits.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

// Table dtypes of the tests (the kernel has one entry point per dtype: rellax_subr_topk_f32 / _f16 / _i8).
#define RELLAX_SUBR_DTYPE_F32 0
#define RELLAX_SUBR_DTYPE_F16 1
#define RELLAX_SUBR_DTYPE_I8 2

namespace subr_check {

inline unsigned g_state = 2463534242u;

inline unsigned next_u32() {  // xorshift32, deterministic
    g_state ^= g_state << 13;
    g_state ^= g_state >> 17;
    g_state ^= g_state << 5;
    return g_state;
}

inline float uniform() { return (float)(next_u32() & 0xffffff) / (float)0x800000 - 1.0f; }  // [-1, 1)

inline int below(int n) { return (int)(next_u32() % (unsigned)n); }

using rellax_test::bits_to_float;
using rellax_test::float_to_bits;
using rellax_test::half_to_float;

// float -> binary16 bits, round to nearest even (values here are small and normal or zero).
inline unsigned short float_to_half(float f) {
    const unsigned u = float_to_bits(f);
    const unsigned sign = (u >> 16) & 0x8000u;
    const float a = std::fabs(f);
    if (a < 6.103515625e-05f) {  // subnormal half: a multiple of 2^-24
        const unsigned m = (unsigned)std::nearbyint(a * 16777216.0f);
        return (unsigned short)(sign | m);
    }
    const unsigned au = float_to_bits(a);
    unsigned e = ((au >> 23) & 0xffu) - 127u + 15u, m = au & 0x7fffffu;
    unsigned h = (e << 10) | (m >> 13);
    const unsigned rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (unsigned short)(sign | h);
}

enum class Layout {
    Random,      // random rows of the table
    Duplicates,  // rows drawn from a handful of items: many duplicate events (exact score ties)
    Ascending,   // history ordered by increasing exact score: every row beats the threshold (worst case for merges)
    Descending,  // decreasing score: after the first k rows nothing beats the threshold
    KthLast,     // decreasing score, except that the k-th best row comes last: it must beat the threshold of the
                 // last merge (the (k+1)-th best overall), so an off-by-one threshold loses it
};

struct Problem {
    int N = 0, d = 0, dtype = 0, B = 0, k = 0, by_score = 0;
    bool misaligned = false;  // table pointer offset by one element: forces the scalar dot paths
    // Storage, with one spare leading element (used when misaligned).
    std::vector<float> f32;
    std::vector<unsigned short> f16;
    std::vector<signed char> i8;
    std::vector<float> scales;
    std::vector<float> values;  // (N, d), the exact float value of every stored element (dequantised for i8)
    std::vector<int> history, offsets, targets;

    const void* table() const {
        const int o = misaligned ? 1 : 0;
        if (dtype == RELLAX_SUBR_DTYPE_F32) return f32.data() + o;
        if (dtype == RELLAX_SUBR_DTYPE_F16) return f16.data() + o;
        return i8.data() + o;
    }
    size_t table_bytes() const {
        const size_t n = (size_t)N * d + 1;
        return dtype == RELLAX_SUBR_DTYPE_F32 ? n * 4 : dtype == RELLAX_SUBR_DTYPE_F16 ? n * 2 : n;
    }
    const void* storage() const {  // start of the allocation (the spare element included)
        return dtype == RELLAX_SUBR_DTYPE_F32 ? (const void*)f32.data()
             : dtype == RELLAX_SUBR_DTYPE_F16 ? (const void*)f16.data() : (const void*)i8.data();
    }
    int path() const {
        const bool aligned = !misaligned;
        if (dtype == RELLAX_SUBR_DTYPE_F32) return aligned && d % 4 == 0 ? RELLAX_SUBR_PATH_F32_VEC : RELLAX_SUBR_PATH_F32;
        if (dtype == RELLAX_SUBR_DTYPE_F16) return aligned && d % 8 == 0 ? RELLAX_SUBR_PATH_F16_VEC : RELLAX_SUBR_PATH_F16;
        return aligned && d % 16 == 0 ? RELLAX_SUBR_PATH_I8_VEC : RELLAX_SUBR_PATH_I8;
    }
};

// The kernel's exact score of (t, h): per-lane partial sums in the kernel's order, then the xor butterfly.
inline float exact_score(const Problem& p, int t, int h) {
    const int d = p.d;
    const int path = p.path();
    if (p.dtype == RELLAX_SUBR_DTYPE_I8) {
        const signed char* q = p.i8.data() + (p.misaligned ? 1 : 0);
        int acc = 0;
        for (int c = 0; c < d; c++) acc += (int)q[(size_t)t * d + c] * (int)q[(size_t)h * d + c];
        const float s = p.scales[t] * p.scales[h];
        return (float)acc * s;
    }
    const float* tv = p.values.data() + (size_t)t * d;
    const float* hv = p.values.data() + (size_t)h * d;
    float lanes[32];
    for (int lane = 0; lane < 32; lane++) {
        float acc = 0.0f;
        if (path == RELLAX_SUBR_PATH_F32_VEC || path == RELLAX_SUBR_PATH_F16_VEC) {
            const int w = path == RELLAX_SUBR_PATH_F32_VEC ? 4 : 8;
            for (int v = lane; v < d / w; v += 32)
                for (int e = 0; e < w; e++) acc = std::fmaf(tv[v * w + e], hv[v * w + e], acc);
        } else {
            for (int c = lane; c < d; c += 32) acc = std::fmaf(tv[c], hv[c], acc);
        }
        lanes[lane] = acc;
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        float next[32];
        for (int lane = 0; lane < 32; lane++) next[lane] = lanes[lane] + lanes[lane ^ offset];
        std::memcpy(lanes, next, sizeof lanes);
    }
    return lanes[0];
}

// Scores in double (SubrReference.Scores; for i8 SubrReference.ScoresInt8, which is exact_score) and the error bound
// of an fp32 dot product of length d: gamma_d * Σ|t_c h_c| with gamma_d ~ d u, plus margin.
inline void reference_score(const Problem& p, int t, int h, double* score, double* bound) {
    if (p.dtype == RELLAX_SUBR_DTYPE_I8) {
        *score = exact_score(p, t, h);
        *bound = 0.0;
        return;
    }
    double acc = 0.0, mag = 0.0;
    for (int c = 0; c < p.d; c++) {
        const double prod = (double)p.values[(size_t)t * p.d + c] * p.values[(size_t)h * p.d + c];
        acc += prod;
        mag += std::fabs(prod);
    }
    *score = acc;
    *bound = (p.d + 2) * 1.2e-7 * mag + 1e-30;
}

// Sort-based selection (SubrReference.Select): the n best positions by (score desc, position desc), in the requested
// order. -0 equals +0 (float comparison).
template <class Score>
std::vector<int> select(const std::vector<Score>& s, int k, bool by_score) {
    std::vector<int> pos(s.size());
    std::iota(pos.begin(), pos.end(), 0);
    std::sort(pos.begin(), pos.end(), [&](int a, int b) { return s[a] != s[b] ? s[a] > s[b] : a > b; });
    pos.resize(std::min<size_t>(pos.size(), (size_t)k));
    if (!by_score) std::sort(pos.begin(), pos.end());
    return pos;
}

inline void fill_table(Problem& p, int distinct_rows) {
    const size_t n = (size_t)p.N * p.d;
    std::vector<float> raw(n);
    for (int r = 0; r < p.N; r++) {
        const int src = distinct_rows > 0 && r >= distinct_rows ? r % distinct_rows : r;  // identical rows
        for (int c = 0; c < p.d; c++) raw[(size_t)r * p.d + c] = src == r ? uniform() : raw[(size_t)src * p.d + c];
    }
    p.values.assign(n, 0.0f);
    if (p.dtype == RELLAX_SUBR_DTYPE_F32) {
        p.f32.assign(n + 1, 0.0f);
        for (size_t i = 0; i < n; i++) p.f32[i + (p.misaligned ? 1 : 0)] = p.values[i] = raw[i];
    } else if (p.dtype == RELLAX_SUBR_DTYPE_F16) {
        p.f16.assign(n + 1, 0);
        for (size_t i = 0; i < n; i++) {
            const unsigned short h = float_to_half(raw[i]);
            p.f16[i + (p.misaligned ? 1 : 0)] = h;
            p.values[i] = half_to_float(h);
        }
    } else {
        p.i8.assign(n + 1, 0);
        p.scales.assign(p.N, 0.0f);
        for (int r = 0; r < p.N; r++) {  // SubrTable.Quantize
            float mx = 0.0f;
            for (int c = 0; c < p.d; c++) mx = std::max(mx, std::fabs(raw[(size_t)r * p.d + c]));
            const float scale = mx / 127.0f, inv = mx > 0 ? 127.0f / mx : 0.0f;
            p.scales[r] = scale;
            for (int c = 0; c < p.d; c++) {
                const float q = std::min(127.0f, std::max(-127.0f, std::nearbyint(raw[(size_t)r * p.d + c] * inv)));
                p.i8[(size_t)r * p.d + c + (p.misaligned ? 1 : 0)] = (signed char)q;
                p.values[(size_t)r * p.d + c] = q * scale;
            }
        }
    }
}

// A problem: B samples with the given history lengths, a table of N rows (distinct_rows > 0: rows repeat with that
// period, so identical rows tie exactly), histories laid out per `layout`.
inline Problem make_problem(int N, int d, int dtype, const std::vector<int>& lengths, int k, bool by_score, Layout layout,
                            int distinct_rows = 0, bool misaligned = false) {
    Problem p;
    p.N = N;
    p.d = d;
    p.dtype = dtype;
    p.B = (int)lengths.size();
    p.k = k;
    p.by_score = by_score ? 1 : 0;
    p.misaligned = misaligned;
    fill_table(p, distinct_rows);
    p.offsets.push_back(0);
    for (int b = 0; b < p.B; b++) {
        const int L = lengths[b];
        const int target = below(N);
        p.targets.push_back(target);
        std::vector<int> h(L);
        const int pool = layout == Layout::Duplicates ? std::max(1, std::min(N, 5)) : N;
        for (int i = 0; i < L; i++) h[i] = layout == Layout::Duplicates ? (int)((next_u32() % pool) * (N / pool)) : below(N);
        if (layout == Layout::KthLast && L > k) {
            std::vector<int> order(L);
            std::iota(order.begin(), order.end(), 0);
            std::vector<float> s(L);
            for (int i = 0; i < L; i++) s[i] = exact_score(p, target, h[i]);
            std::sort(order.begin(), order.end(), [&](int a, int c) { return s[a] != s[c] ? s[a] > s[c] : a > c; });
            std::vector<int> sorted;
            for (int i = 0; i < L; i++)
                if (i != k - 1) sorted.push_back(h[order[i]]);
            sorted.push_back(h[order[k - 1]]);
            h = sorted;
        }
        if (layout == Layout::Ascending || layout == Layout::Descending) {
            std::stable_sort(h.begin(), h.end(), [&](int a, int c) {
                const float sa = exact_score(p, target, a), sc = exact_score(p, target, c);
                return layout == Layout::Ascending ? sa < sc : sa > sc;
            });
        }
        p.history.insert(p.history.end(), h.begin(), h.end());
        p.offsets.push_back((int)p.history.size());
    }
    return p;
}

// Compares the kernel's output (positions, scores: (B, k)) with both references; prints and counts mismatches.
inline int count_mismatches(const Problem& p, const std::vector<int>& positions, const std::vector<float>& scores,
                            const char* name) {
    int bad = 0;
    auto report = [&](int b, const char* what, int i, double a, double e) {
        if (bad++ < 10)
            std::fprintf(stderr, "%s N=%d d=%d dtype=%d k=%d by_score=%d%s: sample %d (L=%d) slot %d: %s: got %.9g, expected %.9g\n",
                         name, p.N, p.d, p.dtype, p.k, p.by_score, p.misaligned ? " misaligned" : "", b,
                         p.offsets[b + 1] - p.offsets[b], i, what, a, e);
    };
    for (int b = 0; b < p.B; b++) {
        const int L = p.offsets[b + 1] - p.offsets[b];
        const int* h = p.history.data() + p.offsets[b];
        const int t = p.targets[b];
        std::vector<float> exact(L);
        std::vector<double> ref(L), bound(L);
        double max_bound = 0.0;
        for (int i = 0; i < L; i++) {
            exact[i] = exact_score(p, t, h[i]);
            reference_score(p, t, h[i], &ref[i], &bound[i]);
            max_bound = std::max(max_bound, bound[i]);
        }
        const std::vector<int> want = select(exact, p.k, p.by_score != 0);
        const int n = (int)want.size();
        const int* got_pos = positions.data() + (size_t)b * p.k;
        const float* got_score = scores.data() + (size_t)b * p.k;
        // 1. Bit-exact against the kernel's own operation order.
        for (int i = 0; i < p.k; i++) {
            if (i < n) {
                if (got_pos[i] != want[i]) report(b, "position", i, got_pos[i], want[i]);
                else if (!(got_score[i] == exact[want[i]])) report(b, "score", i, got_score[i], exact[want[i]]);
            } else {
                if (got_pos[i] != -1) report(b, "padding position", i, got_pos[i], -1);
                if (!std::isnan(got_score[i])) report(b, "padding score (NaN)", i, got_score[i], NAN);
            }
        }
        // 2. Against the double reference: scores within the bound, sets equal up to near ties of the k-th best.
        const std::vector<int> want_ref = select(ref, p.k, true);
        const double kth = n > 0 ? ref[want_ref[n - 1]] : 0.0;
        std::vector<char> in_got(L, 0), in_ref(L, 0);
        for (int i = 0; i < n; i++) {
            const int q = got_pos[i];
            if (q < 0 || q >= L) {
                report(b, "position out of range", i, q, L);
                continue;
            }
            in_got[q] = 1;
            if (std::fabs(got_score[i] - ref[q]) > bound[q]) report(b, "score vs double reference", i, got_score[i], ref[q]);
        }
        for (int i = 0; i < n; i++) in_ref[want_ref[i]] = 1;
        for (int q = 0; q < L; q++)
            if (in_got[q] != in_ref[q] && std::fabs(ref[q] - kth) > 2 * max_bound)
                report(b, in_got[q] ? "selected, but not near the k-th best" : "missed, but not near the k-th best", q, ref[q], kth);
        // 3. The order itself.
        for (int i = 1; i < n; i++) {
            const bool ok = p.by_score ? (got_score[i - 1] > got_score[i] || (got_score[i - 1] == got_score[i] && got_pos[i - 1] > got_pos[i]))
                                       : got_pos[i - 1] < got_pos[i];
            if (!ok) report(b, p.by_score ? "not best-first" : "not chronological", i, got_pos[i], got_pos[i - 1]);
        }
    }
    if (bad) std::fprintf(stderr, "%s: %d mismatch(es)\n", name, bad);
    return bad;
}

}  // namespace subr_check
