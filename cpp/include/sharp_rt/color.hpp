// sharp_rt/color.hpp -- colour conversions used by the writers (float32, ml-sharp's constants).
//
// Mirrors sharp_rt/runtime/color.py operation by operation, in float32.
#pragma once

#include <cmath>

namespace sharp_rt {

/// Degree-0 spherical-harmonics constant Y_0^0 = sqrt(1 / (4 pi)), rounded to float32.
constexpr float kShC0 = 0.28209479177387814f;

/// Encode one linear-RGB value as sRGB: 12.92 x up to 0.0031308, else 1.055 x^(1/2.4) - 0.055.
/// Negative values take the linear branch; NaN stays NaN.  Never throws.
inline float linear_to_srgb(float linear) {
    if (std::isnan(linear)) return linear;
    if (linear <= 0.0031308f) return linear * 12.92f;
    float high = std::pow(linear, static_cast<float>(1.0 / 2.4));
    high *= 1.055f;
    high -= 0.055f;
    return high;
}

/// Decode one sRGB value to linear RGB: x / 12.92 up to 0.04045, else ((x + 0.055) / 1.055)^2.4.
inline float srgb_to_linear(float srgb) {
    if (srgb <= 0.04045f) return srgb / 12.92f;
    return std::pow((srgb + 0.055f) / 1.055f, 2.4f);
}

/// Degree-0 SH coefficient of a colour value: (rgb - 0.5) / SH_C0 (what 3DGS .ply files store).
inline float rgb_to_sh(float rgb) { return (rgb - 0.5f) / kShC0; }

/// Colour value from a degree-0 SH coefficient: sh * SH_C0 + 0.5.
inline float sh_to_rgb(float sh) { return sh * kShC0 + 0.5f; }

}  // namespace sharp_rt
