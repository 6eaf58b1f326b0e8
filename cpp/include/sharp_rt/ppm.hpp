// sharp_rt/ppm.hpp -- minimal binary PPM (P6, 8-bit) reader/writer, so that the examples decode an
// image without third-party libraries.  Convert other formats first, e.g.
// `python -c "from PIL import Image; Image.open('in.jpg').convert('RGB').save('in.ppm')"` or
// ImageMagick `convert in.jpg in.ppm`.  EXIF focal lengths are not available from a PPM: pass f_mm.
#pragma once

#include <cctype>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace sharp_rt {

/// An interleaved 8-bit RGB image: pixels [height, width, 3], rows packed.
struct RgbImage {
    int width = 0, height = 0;
    std::vector<std::uint8_t> pixels;
};

namespace detail {
// Next header token of a PPM (skips whitespace and # comments); empty at end of data.
inline std::string ppm_token(const std::vector<char>& data, std::size_t& pos) {
    for (;;) {
        while (pos < data.size() && std::isspace(static_cast<unsigned char>(data[pos]))) ++pos;
        if (pos < data.size() && data[pos] == '#') {
            while (pos < data.size() && data[pos] != '\n') ++pos;
            continue;
        }
        break;
    }
    std::string token;
    while (pos < data.size() && !std::isspace(static_cast<unsigned char>(data[pos])) && data[pos] != '#')
        token.push_back(data[pos++]);
    return token;
}
inline int ppm_int(const std::string& token, const char* what) {
    if (token.empty() || token.size() > 9 || token.find_first_not_of("0123456789") != std::string::npos)
        throw std::runtime_error(std::string("read_ppm: bad ") + what + " '" + token + "'");
    return std::stoi(token);
}
}  // namespace detail

/// Parse a binary PPM (P6, maxval 255) from memory.  Throws std::runtime_error for anything else
/// (ASCII P3, 16-bit, truncated data, zero or absurd sizes).
inline RgbImage parse_ppm(const std::vector<char>& data) {
    std::size_t pos = 0;
    if (detail::ppm_token(data, pos) != "P6") throw std::runtime_error("read_ppm: not a binary PPM (P6)");
    RgbImage image;
    image.width = detail::ppm_int(detail::ppm_token(data, pos), "width");
    image.height = detail::ppm_int(detail::ppm_token(data, pos), "height");
    const int maxval = detail::ppm_int(detail::ppm_token(data, pos), "maxval");
    if (maxval != 255) throw std::runtime_error("read_ppm: only 8-bit PPM (maxval 255) is supported");
    if (image.width < 1 || image.height < 1 || image.width > 65535 || image.height > 65535)
        throw std::runtime_error("read_ppm: bad image size");
    ++pos;  // the single whitespace byte after maxval
    const std::size_t bytes = 3 * static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height);
    if (pos > data.size() || data.size() - pos < bytes) throw std::runtime_error("read_ppm: truncated pixel data");
    image.pixels.assign(reinterpret_cast<const std::uint8_t*>(data.data()) + pos,
                        reinterpret_cast<const std::uint8_t*>(data.data()) + pos + bytes);
    return image;
}

/// Read a binary PPM (P6, 8-bit) file.  Throws std::runtime_error if it cannot be read or parsed.
inline RgbImage read_ppm(const std::string& path) {
    std::ifstream is(path, std::ios::binary);
    if (!is) throw std::runtime_error("read_ppm: cannot open " + path);
    const std::vector<char> data((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
    return parse_ppm(data);
}

}  // namespace sharp_rt
