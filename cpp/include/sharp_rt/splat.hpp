// sharp_rt/splat.hpp -- antimatter15 .splat writer (32 bytes per Gaussian, no header), like
// sharp_rt/runtime/splat.py.
//
// Record (little endian): position 3 x float32, scale 3 x float32 (linear), colour 4 x uint8
// (sRGB r, g, b, opacity, times 255, rounded half to even), rotation 4 x uint8 (unit quaternion
// w, x, y, z as q * 128 + 128, rounded, clipped to [0, 255]).  Records are sorted by descending
// scale_0 * scale_1 * scale_2 * opacity (float64); ties keep the input order (stable), NaN keys last.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "color.hpp"
#include "gaussians.hpp"

namespace sharp_rt {

/// Indices [N] sorting Gaussians by descending volume * opacity (stable; NaN keys last).
inline std::vector<std::size_t> splat_order(const Gaussians& g) {
    g.check();
    const std::size_t n = g.size();
    std::vector<double> key(n);
    for (std::size_t i = 0; i < n; ++i) {
        const float* s = &g.singular_values[3 * i];
        key[i] = static_cast<double>(s[0]) * s[1] * s[2] * static_cast<double>(g.opacities[i]);
    }
    // Sort (-key, index) pairs: descending key, ties in input order (= a stable sort), NaN keys last.
    std::vector<std::pair<double, std::size_t>> pairs;
    pairs.reserve(n);
    std::vector<std::size_t> nan_keys;
    for (std::size_t i = 0; i < n; ++i) {
        if (std::isnan(key[i])) {
            nan_keys.push_back(i);
        } else {
            pairs.emplace_back(-key[i], i);
        }
    }
    std::sort(pairs.begin(), pairs.end());
    std::vector<std::size_t> order;
    order.reserve(n);
    for (const auto& pair : pairs) order.push_back(pair.second);
    order.insert(order.end(), nan_keys.begin(), nan_keys.end());
    return order;
}

namespace detail {
// Clip to [0, 255], round half to even, convert; NaN becomes 0 (no undefined conversion).
inline std::uint8_t to_byte(float v) {
    if (std::isnan(v)) return 0;
    v = std::min(std::max(v, 0.0f), 255.0f);
    return static_cast<std::uint8_t>(std::nearbyint(v));
}
}  // namespace detail

/// Encode Gaussian i as one 32-byte .splat record into `record`.
inline void splat_record(const Gaussians& g, std::size_t i, std::uint8_t* record) {
    std::memcpy(record, &g.mean_vectors[3 * i], 12);
    std::memcpy(record + 12, &g.singular_values[3 * i], 12);
    for (int k = 0; k < 3; ++k) record[24 + k] = detail::to_byte(linear_to_srgb(g.colors[3 * i + k]) * 255.0f);
    record[27] = detail::to_byte(g.opacities[i] * 255.0f);
    const float* q = &g.quaternions[4 * i];
    const float norm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    const float scale = 128.0f / (norm > 0.0f ? norm : 1.0f);
    for (int k = 0; k < 4; ++k) record[28 + k] = detail::to_byte(q[k] * scale + 128.0f);
}

/// Write metric Gaussians as an antimatter15 .splat stream (records sorted, see splat_order).
/// Memory: ~56 bytes per Gaussian (encoded records, sort keys and order).  Assumes a little-endian
/// host (x86-64, aarch64).  Throws std::invalid_argument for inconsistent buffers,
/// std::runtime_error if the stream fails.
inline void write_splat(const Gaussians& g, std::ostream& os) {
    const std::vector<std::size_t> order = splat_order(g);
    // Encode in input order (sequential reads), then gather whole records in file order.
    std::vector<std::uint8_t> records(32 * order.size());
    for (std::size_t i = 0; i < order.size(); ++i) splat_record(g, i, &records[32 * i]);
    constexpr std::size_t kRecordsPerChunk = 16384;
    std::vector<std::uint8_t> chunk(32 * std::min(order.size(), kRecordsPerChunk));
    for (std::size_t start = 0; start < order.size(); start += kRecordsPerChunk) {
        const std::size_t stop = std::min(order.size(), start + kRecordsPerChunk);
        for (std::size_t i = start; i < stop; ++i) std::memcpy(&chunk[32 * (i - start)], &records[32 * order[i]], 32);
        os.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(32 * (stop - start)));
    }
    if (!os) throw std::runtime_error("write_splat: writing the stream failed");
}

/// Write metric Gaussians as a .splat file via "<path>.tmp" and a rename (see write_ply_file).
/// Throws std::runtime_error on I/O failure, std::invalid_argument for inconsistent buffers.
inline void write_splat_file(const Gaussians& g, const std::string& path) {
    write_file_atomically(path, "write_splat_file", [&](std::ostream& os) { write_splat(g, os); });
}

}  // namespace sharp_rt
