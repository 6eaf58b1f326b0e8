// sharp_rt/camera.hpp -- focal-length conventions and the NDC -> metric unprojection matrix.
//
// Mirrors sharp_rt/runtime/image_io.py (focal_length_px) and unproject.py (unprojection_matrix).
#pragma once

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>

namespace sharp_rt {

/// Focal length assumed when a photo has no EXIF focal length (35 mm equivalent), in mm.
constexpr double kDefaultFocalLengthMm = 30.0;

/// Convert a 35 mm-equivalent focal length to pixels with the image diagonal (ml-sharp's convention):
/// f_px = f_mm * hypot(width, height) / hypot(36, 24).
/// Throws std::invalid_argument for a non-positive size or a non-positive / non-finite f_mm.
inline double focal_length_px(int width, int height, double f_mm = kDefaultFocalLengthMm) {
    if (width <= 0 || height <= 0 || !(f_mm > 0.0) || !std::isfinite(f_mm)) {
        throw std::invalid_argument("focal_length_px: need a positive image size and f_mm > 0, got " +
                                    std::to_string(width) + "x" + std::to_string(height) +
                                    ", f_mm=" + std::to_string(f_mm));
    }
    return f_mm * std::hypot(static_cast<double>(width), static_cast<double>(height)) / std::hypot(36.0, 24.0);
}

/// The engine's second input: f_px / width of the *original* image (float32, one per batch item).
/// Throws std::invalid_argument if width <= 0.
inline float disparity_factor(double f_px, int width) {
    if (width <= 0) throw std::invalid_argument("disparity_factor: width must be positive");
    return static_cast<float>(f_px / width);
}

/// Diagonal of the NDC -> metric matrix diag(W / (2 f), H / (2 f), 1) (float64; the matrix is
/// independent of the engine's internal resolution).  Throws std::invalid_argument unless f_px > 0,
/// finite, and the size is positive.
inline std::array<double, 3> unprojection_diagonal(double f_px, int width, int height) {
    if (!(f_px > 0.0) || !std::isfinite(f_px) || width <= 0 || height <= 0) {
        throw std::invalid_argument("unprojection: need f_px > 0 and a positive image size, got f_px=" +
                                    std::to_string(f_px) + ", size " + std::to_string(width) + "x" +
                                    std::to_string(height));
    }
    return {width / (2.0 * f_px), height / (2.0 * f_px), 1.0};
}

}  // namespace sharp_rt
