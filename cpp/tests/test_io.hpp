// Test helpers: raw little-endian .bin files and binary PPM (P6) images.  Not part of the library.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

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

}  // namespace sharp_rt_test
