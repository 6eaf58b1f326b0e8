// sharp_rt/ply.hpp -- 3DGS .ply writer in ml-sharp's layout, byte-compatible with sharp_rt/runtime/ply.py.
//
// Binary little endian; vertex x y z f_dc_0..2 opacity scale_0..2 rot_0..3 (float), then the
// elements extrinsic (16 float, identity), intrinsic (9 float, [f,0,W/2, 0,f,H/2, 0,0,1]),
// image_size (2 uint, [W, H]), frame (2 int, [1, N]), disparity (2 float, 10%/90% quantiles of 1/z
// as torch.quantile), color_space (1 uchar, 0 = sRGB), version (3 uchar, 1 5 0).
// Vertex values: linear colour -> sRGB -> (c - 0.5) / SH_C0; logit(opacity); log(scale); quaternion.
// logit(0), logit(1) and log(0) are clamped to the largest finite float (+-3.4e38), as in Python.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "color.hpp"
#include "gaussians.hpp"

namespace sharp_rt {

/// Which elements to write: ml-sharp's full layout, or the vertex element only.
enum class PlyLayout { Sharp, Plain };

/// The ASCII header (ending in "end_header\n") for n vertices.
inline std::string ply_header(std::size_t n, PlyLayout layout = PlyLayout::Sharp) {
    static const char* const kProperties[] = {"x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                                              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"};
    std::string h = "ply\nformat binary_little_endian 1.0\nelement vertex " + std::to_string(n) + "\n";
    for (const char* name : kProperties) h += std::string("property float ") + name + "\n";
    if (layout == PlyLayout::Sharp) {
        static const struct {
            const char* name;
            int count;
            const char* kind;
        } kElements[] = {{"extrinsic", 16, "float"}, {"intrinsic", 9, "float"}, {"image_size", 2, "uint"},
                         {"frame", 2, "int"},        {"disparity", 2, "float"}, {"color_space", 1, "uchar"},
                         {"version", 3, "uchar"}};
        for (const auto& e : kElements) {
            h += std::string("element ") + e.name + " " + std::to_string(e.count) + "\n";
            h += std::string("property ") + e.kind + " " + e.name + "\n";
        }
    }
    h += "end_header\n";
    return h;
}

/// 10% and 90% quantiles of 1 / z exactly as torch.quantile (linear) and the Python writer compute
/// them: rank q * (N - 1) in float32, torch.lerp with a fused multiply-add.
/// z: [n] depths.  Returns NaN twice if any 1 / z is NaN, {0, 0} for n = 0.  Never throws
/// (except std::bad_alloc: it copies 1 / z).
inline std::array<float, 2> disparity_quantiles(const float* z, std::size_t n, std::size_t stride = 1) {
    if (n == 0) return {0.0f, 0.0f};
    std::vector<float> disparity(n);
    for (std::size_t i = 0; i < n; ++i) {
        disparity[i] = 1.0f / z[i * stride];
        if (std::isnan(disparity[i])) return {NAN, NAN};
    }
    const float qs[2] = {0.1f, 0.9f};
    std::array<float, 2> out{};
    for (int k = 0; k < 2; ++k) {
        const float rank = qs[k] * static_cast<float>(n - 1);
        const std::size_t below = static_cast<std::size_t>(std::floor(rank));
        const std::size_t above = static_cast<std::size_t>(std::ceil(rank));
        const float weight = rank - static_cast<float>(below);
        std::nth_element(disparity.begin(), disparity.begin() + below, disparity.end());
        const float lo = disparity[below];
        std::nth_element(disparity.begin(), disparity.begin() + above, disparity.end());
        const float hi = disparity[above];
        const double diff = static_cast<double>(hi - lo);  // float32 difference, as torch.lerp
        const double rest = static_cast<double>(1.0f - weight);
        // float32 products are exact in float64: one float64 operation + rounding == the FMA.
        const double value = std::fabs(weight) < 0.5f ? static_cast<double>(lo) + static_cast<double>(weight) * diff
                                                      : static_cast<double>(hi) - diff * rest;
        out[k] = static_cast<float>(value);
    }
    return out;
}

namespace detail {
inline void put_le32(std::string& buf, std::uint32_t bits) {
    for (int b = 0; b < 4; ++b) buf.push_back(static_cast<char>((bits >> (8 * b)) & 0xffu));
}
inline void put_float(std::string& buf, float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    put_le32(buf, bits);
}
/// +-inf -> +-FLT_MAX; NaN and finite values unchanged (std::clamp would need a NaN-free input).
inline float clamp_finite(float v) {
    constexpr float kMax = std::numeric_limits<float>::max();
    return v > kMax ? kMax : (v < -kMax ? -kMax : v);
}
}  // namespace detail

/// Write metric Gaussians as a 3DGS .ply to a binary stream (same layout as the Python writer).
/// Assumes a little-endian host (x86-64, aarch64): vertex floats are written as they are in memory.
/// Throws std::invalid_argument for inconsistent buffers, std::runtime_error if the stream fails.
inline void write_ply(const Gaussians& g, std::ostream& os, PlyLayout layout = PlyLayout::Sharp) {
    g.check();
    const std::size_t n = g.size();
    const std::string header = ply_header(n, layout);
    os.write(header.data(), static_cast<std::streamsize>(header.size()));
    constexpr std::size_t kRowsPerChunk = 16384;
    std::vector<float> rows(std::min(n, kRowsPerChunk) * 14);  // [rows, 14] little-endian float32
    for (std::size_t start = 0; start < n; start += kRowsPerChunk) {
        const std::size_t stop = std::min(n, start + kRowsPerChunk);
        float* row = rows.data();
        for (std::size_t i = start; i < stop; ++i, row += 14) {
            for (int k = 0; k < 3; ++k) row[k] = g.mean_vectors[3 * i + k];
            for (int k = 0; k < 3; ++k) row[3 + k] = rgb_to_sh(linear_to_srgb(g.colors[3 * i + k]));
            const float o = g.opacities[i];
            row[6] = detail::clamp_finite(std::log(o / (1.0f - o)));
            for (int k = 0; k < 3; ++k) row[7 + k] = detail::clamp_finite(std::log(g.singular_values[3 * i + k]));
            for (int k = 0; k < 4; ++k) row[10 + k] = g.quaternions[4 * i + k];
        }
        os.write(reinterpret_cast<const char*>(rows.data()), static_cast<std::streamsize>((stop - start) * 14 * 4));
    }
    if (layout == PlyLayout::Sharp) {
        std::string tail;
        for (int i = 0; i < 16; ++i) detail::put_float(tail, i % 5 == 0 ? 1.0f : 0.0f);
        const double f = g.f_px;
        const double intrinsic[9] = {f, 0, g.width * 0.5, 0, f, g.height * 0.5, 0, 0, 1};
        for (double v : intrinsic) detail::put_float(tail, static_cast<float>(v));
        detail::put_le32(tail, static_cast<std::uint32_t>(g.width));
        detail::put_le32(tail, static_cast<std::uint32_t>(g.height));
        detail::put_le32(tail, 1u);
        detail::put_le32(tail, static_cast<std::uint32_t>(static_cast<std::int32_t>(n)));
        const std::array<float, 2> q = disparity_quantiles(g.mean_vectors.data() + 2, n, 3);
        detail::put_float(tail, q[0]);
        detail::put_float(tail, q[1]);
        tail.push_back('\0');  // color_space 0 = sRGB
        tail += std::string("\x01\x05\x00", 3);  // version 1.5.0
        os.write(tail.data(), static_cast<std::streamsize>(tail.size()));
    }
    if (!os) throw std::runtime_error("write_ply: writing the stream failed");
}

/// Write metric Gaussians as a 3DGS .ply file.  The data go to "<path>.tmp" first, which is renamed
/// to `path` on success (so readers never see a partial file; an existing file is replaced).
/// Throws std::runtime_error if the file cannot be written or renamed (the temporary is removed),
/// std::invalid_argument for inconsistent buffers.
inline void write_ply_file(const Gaussians& g, const std::string& path, PlyLayout layout = PlyLayout::Sharp) {
    write_file_atomically(path, "write_ply_file", [&](std::ostream& os) { write_ply(g, os, layout); });
}

}  // namespace sharp_rt
