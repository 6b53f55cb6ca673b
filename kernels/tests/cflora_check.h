// cflora_check.h: the host side shared by the CFLoRA self-tests: cflora_test.cu (on a GPU, via ctest) and
// sim/cflora_sim.cpp (the same kernels simulated on the CPU). Deterministic random problems, weights in each storage
// dtype with the exact float values they hold, and the double-accumulation reference (the formula of CfloraReference
// in C#): y[t] = W0 x[t] (+ bias) + scale * B (G[s]^T (A x[t])). Include after cflora.cu (for RELLAX_CFLORA_DTYPE_*).
#pragma once
#include "host_bits.h"
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace cflora_check {

inline unsigned g_state = 12345u;

inline float uniform() {  // xorshift, deterministic, in [-1, 1)
    g_state ^= g_state << 13;
    g_state ^= g_state >> 17;
    g_state ^= g_state << 5;
    return (float)(g_state & 0xffffff) / (float)0x800000 - 1.0f;
}

using rellax_test::bits_to_float;
using rellax_test::float_to_bits;
using rellax_test::half_to_float;

// A weight in storage `dtype`: the raw storage (floats or 16-bit words) and the exact float values it holds.
struct Weight {
    int dtype;
    std::vector<float> f32;
    std::vector<unsigned short> bits;
    std::vector<float> values;
    const void* data() const { return dtype == RELLAX_CFLORA_DTYPE_F32 ? (const void*)f32.data() : (const void*)bits.data(); }
    size_t bytes() const { return dtype == RELLAX_CFLORA_DTYPE_F32 ? f32.size() * 4 : bits.size() * 2; }
};

inline Weight make_weight(int dtype, size_t n) {
    Weight w{dtype, {}, {}, {}};
    for (size_t i = 0; i < n; i++) {
        const float v = uniform();
        if (dtype == RELLAX_CFLORA_DTYPE_F32) {
            w.f32.push_back(v);
            w.values.push_back(v);
        } else if (dtype == RELLAX_CFLORA_DTYPE_BF16) {
            const unsigned short b = (unsigned short)(float_to_bits(v) >> 16);  // truncation: exactly representable
            w.bits.push_back(b);
            w.values.push_back(bits_to_float((unsigned)b << 16));
        } else {
            // f16 with a random sign, exponent 2^-14 .. 2^0 (and some subnormals) and mantissa.
            unsigned short h = (unsigned short)(g_state & 0x83ffu);
            h |= (unsigned short)(((g_state >> 10) % 16) << 10);
            uniform();
            w.bits.push_back(h);
            w.values.push_back(half_to_float(h));
        }
    }
    return w;
}

// One forward problem: x [T, d_in], G [S, r, r], bias [d_out] (or empty), the sample of each row, and the weights
// W0 [d_out, d_in], A [r, d_in], B [d_out, r].
struct Problem {
    int T, S, d_in, d_out, r;
    bool with_bias;
    float scale;
    std::vector<float> x, g, bias;
    std::vector<int> row_sample;
    Weight w0, a, b;
};

inline Problem make_problem(int T, int S, int d_in, int d_out, int r, int w0_dtype, int ab_dtype, bool with_bias, float scale) {
    Problem p{T, S, d_in, d_out, r, with_bias, scale, {}, {}, {}, {}, {}, {}, {}};
    p.x.resize((size_t)T * d_in);
    p.g.resize((size_t)S * r * r);
    p.bias.resize(with_bias ? d_out : 0);
    p.row_sample.resize(T);
    for (auto& v : p.x) v = uniform();
    for (auto& v : p.g) v = uniform();
    for (auto& v : p.bias) v = uniform();
    for (int t = 0; t < T; t++) {
        p.row_sample[t] = (int)((g_state >> 3) % (unsigned)S);
        uniform();
    }
    p.w0 = make_weight(w0_dtype, (size_t)d_out * d_in);
    p.a = make_weight(ab_dtype, (size_t)r * d_in);
    p.b = make_weight(ab_dtype, (size_t)d_out * r);
    return p;
}

// Compares y [T, d_out] with the double reference (tolerance 1e-4 + 1e-4 |want|), prints the first mismatches and a
// one-line verdict prefixed by `what`, and returns the number of mismatching elements.
inline int count_mismatches(const Problem& p, const std::vector<float>& y, const char* what) {
    int bad = 0;
    std::vector<double> u(p.r), vv(p.r);
    for (int t = 0; t < p.T; t++) {
        const float* xt = p.x.data() + (size_t)t * p.d_in;
        for (int i = 0; i < p.r; i++) {
            double acc = 0;
            for (int c = 0; c < p.d_in; c++) acc += (double)p.a.values[(size_t)i * p.d_in + c] * xt[c];
            u[i] = acc;
        }
        const float* gs = p.g.data() + (size_t)p.row_sample[t] * p.r * p.r;
        for (int j = 0; j < p.r; j++) {
            double acc = 0;
            for (int i = 0; i < p.r; i++) acc += u[i] * gs[i * p.r + j];
            vv[j] = acc;
        }
        for (int o = 0; o < p.d_out; o++) {
            double acc = p.with_bias ? p.bias[o] : 0.0;
            for (int c = 0; c < p.d_in; c++) acc += (double)p.w0.values[(size_t)o * p.d_in + c] * xt[c];
            double ad = 0;
            for (int j = 0; j < p.r; j++) ad += (double)p.b.values[(size_t)o * p.r + j] * vv[j];
            const double want = acc + p.scale * ad, got = y[(size_t)t * p.d_out + o];
            if (!(std::fabs(got - want) <= 1e-4 + 1e-4 * std::fabs(want))) {
                if (bad < 5) std::fprintf(stderr, "  mismatch at t=%d o=%d: got %.8g want %.8g\n", t, o, got, want);
                bad++;
            }
        }
    }
    std::printf("%s T=%d S=%d d_in=%d d_out=%d r=%d w0=%d ab=%d bias=%d: %s\n", what, p.T, p.S, p.d_in, p.d_out, p.r,
                p.w0.dtype, p.a.dtype, (int)p.with_bias, bad ? "FAIL" : "ok");
    return bad;
}

}  // namespace cflora_check
