// sharp_rt/preprocess.hpp -- resize an 8-bit RGB photo to the engine's float32 NCHW input.
//
// Bilinear, align_corners=True, with the float32 arithmetic of PyTorch's CPU kernel and of
// sharp_rt/runtime/preprocess.py: source coordinate k * float32((n_in - 1) / (n_out - 1)),
// weights (1 - l, l), value wh0 * (ww0 * x00 / 255 + ww1 * x01 / 255) + wh1 * (...).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sharp_rt {

/// Source taps of a 1-D linear resize with align_corners=True: output k is
/// w0[k] * x[i0[k]] + w1[k] * x[i1[k]].  All vectors have n_out entries.
struct LinearTaps {
    std::vector<std::size_t> i0, i1;
    std::vector<float> w0, w1;
};

/// Compute the taps of a 1-D resize from n_in to n_out samples (PyTorch's float32 arithmetic).
/// Throws std::invalid_argument if n_in < 1 or n_out < 1.
inline LinearTaps linear_taps(int n_in, int n_out) {
    if (n_in < 1 || n_out < 1) {
        throw std::invalid_argument("linear_taps: sizes must be positive, got n_in=" + std::to_string(n_in) +
                                    ", n_out=" + std::to_string(n_out));
    }
    const float scale = n_out > 1 ? static_cast<float>(n_in - 1) / static_cast<float>(n_out - 1) : 0.0f;
    LinearTaps taps;
    taps.i0.resize(n_out);
    taps.i1.resize(n_out);
    taps.w0.resize(n_out);
    taps.w1.resize(n_out);
    for (int k = 0; k < n_out; ++k) {
        const float src = scale * static_cast<float>(k);
        const long long floor_src = static_cast<long long>(std::floor(src));
        const long long i0 = std::min<long long>(floor_src, n_in - 1);
        const float w1 = std::clamp(src - static_cast<float>(i0), 0.0f, 1.0f);
        taps.i0[k] = static_cast<std::size_t>(i0);
        taps.i1[k] = static_cast<std::size_t>(std::min<long long>(i0 + 1, n_in - 1));
        taps.w1[k] = w1;
        taps.w0[k] = 1.0f - w1;
    }
    return taps;
}

/// Resize an interleaved 8-bit RGB image to the engine input, writing float32 [3, size, size]
/// (one batch item of the NCHW tensor [B, 3, size, size]) to `out`, values in [0, 1].
///
/// rgb: [height, width, 3] uint8, rows `row_stride` bytes apart (0 means 3 * width, packed).
/// out: caller-owned buffer of 3 * size * size floats (e.g. a mapped engine input).
/// Throws std::invalid_argument for null pointers, non-positive sizes or a row stride < 3 * width.
/// Thread-safe (no shared state); allocates O(width + size) scratch.
inline void preprocess_into(const std::uint8_t* rgb, int width, int height, int size, float* out,
                            std::size_t row_stride = 0) {
    if (rgb == nullptr || out == nullptr) throw std::invalid_argument("preprocess: null buffer");
    if (width < 1 || height < 1) {
        throw std::invalid_argument("preprocess: image has zero size " + std::to_string(width) + "x" +
                                    std::to_string(height));
    }
    if (size < 1) throw std::invalid_argument("preprocess: size must be positive, got " + std::to_string(size));
    const std::size_t packed = 3 * static_cast<std::size_t>(width);
    if (row_stride == 0) row_stride = packed;
    if (row_stride < packed) throw std::invalid_argument("preprocess: row_stride < 3 * width");

    const LinearTaps rows = linear_taps(height, size);
    const LinearTaps cols = linear_taps(width, size);
    const std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
    const std::size_t line = 3 * static_cast<std::size_t>(size);
    // Horizontally resampled source rows [3 * size] (interleaved RGB), cached by source row index.
    std::vector<float> top(line), bottom(line);
    std::size_t top_row = static_cast<std::size_t>(-1), bottom_row = static_cast<std::size_t>(-1);
    auto horizontal = [&](std::size_t source_row, std::vector<float>& dst) {
        const std::uint8_t* src = rgb + source_row * row_stride;
        for (int k = 0; k < size; ++k) {
            const std::uint8_t* p0 = src + 3 * cols.i0[k];
            const std::uint8_t* p1 = src + 3 * cols.i1[k];
            for (int c = 0; c < 3; ++c) {
                const float left = (static_cast<float>(p0[c]) / 255.0f) * cols.w0[k];
                const float right = (static_cast<float>(p1[c]) / 255.0f) * cols.w1[k];
                dst[3 * k + c] = left + right;
            }
        }
    };
    for (int y = 0; y < size; ++y) {
        if (rows.i0[y] != top_row) {
            if (rows.i0[y] == bottom_row) {
                std::swap(top, bottom);
                std::swap(top_row, bottom_row);
            } else {
                horizontal(rows.i0[y], top);
                top_row = rows.i0[y];
            }
        }
        if (rows.i1[y] != bottom_row) {
            horizontal(rows.i1[y], bottom);
            bottom_row = rows.i1[y];
        }
        const float rw0 = rows.w0[y], rw1 = rows.w1[y];
        for (int k = 0; k < size; ++k) {
            for (int c = 0; c < 3; ++c) {
                const float a = top[3 * k + c] * rw0;
                const float b = bottom[3 * k + c] * rw1;
                out[c * plane + static_cast<std::size_t>(y) * size + k] = a + b;
            }
        }
    }
}

/// Resize an 8-bit RGB image to a new float32 [3, size, size] vector (see preprocess_into).
/// rgb: [height, width, 3] uint8, packed rows.  Throws std::invalid_argument like preprocess_into.
inline std::vector<float> preprocess(const std::uint8_t* rgb, int width, int height, int size) {
    if (size < 1) throw std::invalid_argument("preprocess: size must be positive, got " + std::to_string(size));
    std::vector<float> out(3 * static_cast<std::size_t>(size) * static_cast<std::size_t>(size));
    preprocess_into(rgb, width, height, size, out.data());
    return out;
}

}  // namespace sharp_rt
