// Test helpers: raw little-endian .bin files and binary PPM (P6) images.  Not part of the library.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "sharp_rt/gaussians.hpp"

namespace sharp_rt_test {

/// Read a whole file.  Throws std::runtime_error if it cannot be read.
inline std::vector<char> read_bytes(const std::string& path) {
    std::ifstream is(path, std::ios::binary);
    if (!is) throw std::runtime_error("cannot open " + path);
    return std::vector<char>(std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>());
}

/// Read a raw float32 / float64 / ... array (host byte order, little endian on x86-64 and aarch64).
template <typename T>
std::vector<T> read_array(const std::string& path) {
    const std::vector<char> bytes = read_bytes(path);
    if (bytes.size() % sizeof(T) != 0) throw std::runtime_error(path + ": size is not a multiple of the element");
    std::vector<T> out(bytes.size() / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
}

/// Write a raw array.  Throws std::runtime_error on failure.
template <typename T>
void write_array(const std::string& path, const std::vector<T>& values) {
    std::ofstream os(path, std::ios::binary | std::ios::trunc);
    os.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
    if (!os) throw std::runtime_error("cannot write " + path);
}

/// NDC Gaussians and camera written by the Python tests into `dir` (ndc_*.bin, camera.bin).
struct NdcFiles {
    std::vector<float> means, scales, quats, colors, opacities;  // [N,3], [N,3], [N,4], [N,3], [N]
    double f_px = 0.0;
    int width = 0, height = 0;

    /// A view over the arrays (valid while this object lives).
    sharp_rt::NdcGaussiansView view() const {
        sharp_rt::NdcGaussiansView v;
        v.mean_vectors = means.data();
        v.singular_values = scales.data();
        v.quaternions = quats.data();
        v.colors = colors.data();
        v.opacities = opacities.data();
        v.count = opacities.size();
        return v;
    }
};

/// Load and check the files of :struct:`NdcFiles`; throws std::runtime_error if inconsistent.
inline NdcFiles load_ndc(const std::string& dir) {
    NdcFiles ndc;
    ndc.means = read_array<float>(dir + "/ndc_mean_vectors.bin");
    ndc.scales = read_array<float>(dir + "/ndc_singular_values.bin");
    ndc.quats = read_array<float>(dir + "/ndc_quaternions.bin");
    ndc.colors = read_array<float>(dir + "/ndc_colors.bin");
    ndc.opacities = read_array<float>(dir + "/ndc_opacities.bin");
    const auto camera = read_array<double>(dir + "/camera.bin");
    if (camera.size() != 3) throw std::runtime_error("camera.bin must hold 3 float64 values");
    const std::size_t n = ndc.opacities.size();
    if (ndc.means.size() != 3 * n || ndc.scales.size() != 3 * n || ndc.quats.size() != 4 * n ||
        ndc.colors.size() != 3 * n)
        throw std::runtime_error("inconsistent NDC arrays");
    ndc.f_px = camera[0];
    ndc.width = static_cast<int>(camera[1]);
    ndc.height = static_cast<int>(camera[2]);
    return ndc;
}

}  // namespace sharp_rt_test
