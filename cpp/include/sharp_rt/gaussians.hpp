// sharp_rt/gaussians.hpp -- engine output views and metric Gaussians; unprojection NDC -> metric.
//
// Mirrors sharp_rt/runtime/unproject.py: means become diag(W/(2f), H/(2f), 1) m (float32),
// covariances A C A^T are re-diagonalized with sharp_rt::transform_frames.
#pragma once

#include <array>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "camera.hpp"
#include "linalg.hpp"

namespace sharp_rt {

/// Non-owning view of one batch item of the engine outputs (docs/engine-contract.md), float32:
/// mean_vectors [N, 3], singular_values [N, 3], quaternions [N, 4] (w, x, y, z, unnormalized),
/// colors [N, 3] linear RGB, opacities [N].  For batch item b of a [B, N, ...] tensor, offset each
/// pointer by b * N * (components).
struct NdcGaussiansView {
    const float* mean_vectors = nullptr;
    const float* singular_values = nullptr;
    const float* quaternions = nullptr;
    const float* colors = nullptr;
    const float* opacities = nullptr;
    std::size_t count = 0;  ///< N
};

/// Metric camera-space Gaussians (OpenCV axes: x right, y down, z forward), owning float32 buffers.
struct Gaussians {
    std::vector<float> mean_vectors;     ///< [N, 3]
    std::vector<float> singular_values;  ///< [N, 3] scales along the principal axes, descending
    std::vector<float> quaternions;      ///< [N, 4] unit (w, x, y, z), w >= 1/2
    std::vector<float> colors;           ///< [N, 3] linear RGB
    std::vector<float> opacities;        ///< [N]
    double f_px = 0.0;                   ///< focal length of the original image, pixels
    int width = 0, height = 0;           ///< size of the original image, pixels

    /// Number of Gaussians N.
    std::size_t size() const { return opacities.size(); }

    /// Throw std::invalid_argument unless the buffer sizes agree with N (= opacities.size()).
    void check() const {
        const std::size_t n = size();
        if (mean_vectors.size() != 3 * n || singular_values.size() != 3 * n || quaternions.size() != 4 * n ||
            colors.size() != 3 * n) {
            throw std::invalid_argument("Gaussians: buffer sizes disagree with N = " + std::to_string(n));
        }
    }
};

/// Unproject one batch item of NDC Gaussians to metric camera space.
/// f_px: focal length of the original image in pixels; width, height: its size.
/// Returns owning metric Gaussians (colors and opacities copied).  Throws std::invalid_argument
/// for f_px <= 0, a non-positive size or a null pointer with count > 0.  Thread-safe.
inline Gaussians unproject(const NdcGaussiansView& ndc, double f_px, int width, int height) {
    const std::array<double, 3> diag = unprojection_diagonal(f_px, width, height);
    const std::size_t n = ndc.count;
    if (n > 0 && (!ndc.mean_vectors || !ndc.singular_values || !ndc.quaternions || !ndc.colors || !ndc.opacities))
        throw std::invalid_argument("unproject: null buffer in NdcGaussiansView");
    Gaussians out;
    out.f_px = f_px;
    out.width = width;
    out.height = height;
    out.mean_vectors.resize(3 * n);
    out.singular_values.resize(3 * n);
    out.quaternions.resize(4 * n);
    out.colors.assign(ndc.colors, ndc.colors + 3 * n);
    out.opacities.assign(ndc.opacities, ndc.opacities + n);
    const float d[3] = {static_cast<float>(diag[0]), static_cast<float>(diag[1]), static_cast<float>(diag[2])};
    for (std::size_t i = 0; i < 3 * n; ++i) out.mean_vectors[i] = ndc.mean_vectors[i] * d[i % 3];
    const std::array<double, 9> linear = {diag[0], 0, 0, 0, diag[1], 0, 0, 0, diag[2]};
    transform_frames(ndc.quaternions, ndc.singular_values, n, linear, out.quaternions.data(),
                     out.singular_values.data());
    return out;
}

/// Write a file atomically: `write(std::ostream&)` fills `path + ".tmp"`, which is then renamed
/// over `path`.  Throws std::runtime_error (naming `who`) if the file cannot be opened, written or
/// renamed; the temporary is removed on any error, and exceptions from `write` propagate.
template <typename Writer>
inline void write_file_atomically(const std::string& path, const char* who, Writer&& write) {
    const std::string tmp = path + ".tmp";
    try {
        std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
        if (!os) throw std::runtime_error(std::string(who) + ": cannot open " + tmp);
        write(os);
        os.close();
        if (!os) throw std::runtime_error(std::string(who) + ": cannot write " + tmp);
    } catch (...) {
        std::remove(tmp.c_str());
        throw;
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw std::runtime_error(std::string(who) + ": cannot rename " + tmp + " to " + path);
    }
}

}  // namespace sharp_rt
