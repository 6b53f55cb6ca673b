// host_bits.h: float bit helpers for the host side of the self-tests and simulations (kernels/tests): exact
// float <-> bits, and IEEE binary16 -> float written independently of the kernels' own conversion.
#pragma once
#include <cstring>

namespace rellax_test {

inline float bits_to_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline unsigned float_to_bits(float f) {
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// IEEE binary16 bits -> float (exact), independent of the kernel's own conversion.
inline float half_to_float(unsigned short h) {
    const unsigned sign = ((unsigned)h & 0x8000u) << 16, em = (unsigned)h & 0x7fffu;
    unsigned magnitude;
    if (em >= 0x7c00u) magnitude = 0x7f800000u | ((em & 0x3ffu) << 13);
    else if (em >= 0x0400u) magnitude = (em << 13) + ((127u - 15u) << 23);
    else magnitude = float_to_bits((float)em * 5.9604644775390625e-8f);
    return bits_to_float(sign | magnitude);
}

}  // namespace rellax_test
