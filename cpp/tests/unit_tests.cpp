// Self-contained checks of the C++ core (no data files): solver accuracy and edge cases,
// preprocessing identities, writer layouts and error reporting.  Exit status 0 = all passed.
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "sharp_rt/sharp_rt.hpp"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        ++failures;
        std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    }
}

template <typename Exception, typename F>
void check_throws(F&& f, const std::string& what) {
    try {
        f();
    } catch (const Exception&) {
        return;
    } catch (...) {
        check(false, what + " (wrong exception type)");
        return;
    }
    check(false, what + " (no exception)");
}

using Mat = std::array<double, 9>;

Mat multiply(const Mat& a, const Mat& b) {
    Mat c{};
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 3; ++k) c[3 * i + j] += a[3 * i + k] * b[3 * k + j];
    return c;
}

Mat transpose(const Mat& a) {
    Mat t{};
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) t[3 * i + j] = a[3 * j + i];
    return t;
}

double max_abs(const Mat& a) {
    double m = 0.0;
    for (double v : a) m = std::max(m, std::fabs(v));
    return m;
}

double relative_error(const Mat& a, const Mat& b) {
    Mat d{};
    for (int i = 0; i < 9; ++i) d[i] = a[i] - b[i];
    return max_abs(d) / std::max(max_abs(b), 1e-300);
}

double det(const Mat& r) {
    return r[0] * (r[4] * r[8] - r[5] * r[7]) - r[1] * (r[3] * r[8] - r[5] * r[6]) + r[2] * (r[3] * r[7] - r[4] * r[6]);
}

void test_eigh() {
    std::mt19937 rng(1234);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> log_scale(-4.0, 1.0);
    double worst = 0.0;
    for (int trial = 0; trial < 20000; ++trial) {
        float q[4], s[3];
        for (float& v : q) v = static_cast<float>(normal(rng));
        for (float& v : s) v = static_cast<float>(std::pow(10.0, log_scale(rng)));
        if (trial % 7 == 0) s[1] = s[0];               // repeated eigenvalues
        if (trial % 11 == 0) s[2] = s[1] = s[0];       // isotropic
        const Mat c = sharp_rt::covariance(q, s);
        const sharp_rt::EigenFrame e = sharp_rt::eigh_3x3(c);
        const Mat d = {e.values[0], 0, 0, 0, e.values[1], 0, 0, 0, e.values[2]};
        const Mat back = multiply(multiply(e.rotation, d), transpose(e.rotation));
        worst = std::max(worst, relative_error(back, c));
        check(std::fabs(det(e.rotation) - 1.0) < 1e-5, "eigh_3x3: det(R) = +1");
        check(e.values[0] >= e.values[1] - 1e-6 * e.values[0] && e.values[1] >= e.values[2] - 1e-6 * e.values[0],
              "eigh_3x3: descending eigenvalues");
    }
    check(worst < 2e-6, "eigh_3x3: reconstruction within 2e-6, got " + std::to_string(worst));
    // Degenerate inputs: zero matrix and identity; no NaN.
    for (const Mat& c : {Mat{}, Mat{1, 0, 0, 0, 1, 0, 0, 0, 1}, Mat{2, 0, 0, 0, 3, 0, 0, 0, 1}}) {
        const sharp_rt::EigenFrame e = sharp_rt::eigh_3x3(c);
        const Mat d = {e.values[0], 0, 0, 0, e.values[1], 0, 0, 0, e.values[2]};
        const Mat back = multiply(multiply(e.rotation, d), transpose(e.rotation));
        Mat diff{};
        for (int i = 0; i < 9; ++i) diff[i] = back[i] - c[i];
        check(max_abs(diff) <= 1e-6 * std::max(1.0, max_abs(c)), "eigh_3x3: degenerate matrix");
    }
}

void test_transform_frames() {
    std::mt19937 rng(99);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> log_scale(-5.0, 0.0);
    const std::vector<Mat> maps = {
        {0.4, 0, 0, 0, 0.6, 0, 0, 0, 1},     // unprojection-like diagonal
        {1, 0, 0, 0, 1, 0, 0, 0, 1},         // identity
        {-1, 0, 0, 0, 1, 0, 0, 0, 1},        // reflection
        {0.3, -1.2, 0.5, 2.0, 0.1, -0.7, 0.4, 0.9, 1.5},  // general
    };
    const std::size_t n = 5000;
    std::vector<float> q(4 * n), s(3 * n);
    for (float& v : q) v = static_cast<float>(normal(rng));
    for (float& v : s) v = static_cast<float>(std::pow(10.0, log_scale(rng)));
    q[0] = q[1] = q[2] = q[3] = 0.0f;  // zero quaternion acts as identity
    s[3] = s[4] = s[5] = 0.0f;         // zero scales
    for (const Mat& a : maps) {
        std::vector<float> q_out(4 * n), s_out(3 * n);
        sharp_rt::transform_frames(q.data(), s.data(), n, a, q_out.data(), s_out.data());
        double worst = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
            const Mat expected = multiply(multiply(a, sharp_rt::covariance(&q[4 * i], &s[3 * i])), transpose(a));
            const Mat got = sharp_rt::covariance(&q_out[4 * i], &s_out[3 * i]);
            worst = std::max(worst, max_abs(expected) > 0 ? relative_error(got, expected) : max_abs(got));
            const float* qo = &q_out[4 * i];
            const float norm = std::sqrt(qo[0] * qo[0] + qo[1] * qo[1] + qo[2] * qo[2] + qo[3] * qo[3]);
            check(std::fabs(norm - 1.0f) < 1e-5f && qo[0] >= 0.4999f, "transform_frames: unit quaternion, w >= 1/2");
            check(s_out[3 * i] >= s_out[3 * i + 1] && s_out[3 * i + 1] >= s_out[3 * i + 2] * (1 - 1e-5f) &&
                      s_out[3 * i + 2] >= 0.0f,
                  "transform_frames: scales descending and >= 0");
        }
        check(worst < 1e-5, "transform_frames: covariance within 1e-5, got " + std::to_string(worst));
    }
    // In-place operation.
    std::vector<float> q2 = q, s2 = s;
    sharp_rt::transform_frames(q2.data(), s2.data(), n, maps[0], q2.data(), s2.data());
    std::vector<float> q3(4 * n), s3(3 * n);
    sharp_rt::transform_frames(q.data(), s.data(), n, maps[0], q3.data(), s3.data());
    check(q2 == q3 && s2 == s3, "transform_frames: in place == out of place");
    check_throws<std::invalid_argument>(
        [&] { sharp_rt::transform_frames(q.data(), s.data(), n, Mat{NAN, 0, 0, 0, 1, 0, 0, 0, 1}, q3.data(), s3.data()); },
        "transform_frames: non-finite map throws");
}

void test_preprocess() {
    // Same size: exact v / 255.
    std::vector<std::uint8_t> rgb(5 * 4 * 3);
    for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<std::uint8_t>(i * 37 % 256);
    const std::vector<float> same = sharp_rt::preprocess(rgb.data(), 4, 5, 4);  // 4x5 -> 4x4: rows resampled
    check(same.size() == 3 * 16, "preprocess: output size");
    std::vector<std::uint8_t> square(4 * 4 * 3);
    for (std::size_t i = 0; i < square.size(); ++i) square[i] = static_cast<std::uint8_t>(i * 53 % 256);
    const std::vector<float> id = sharp_rt::preprocess(square.data(), 4, 4, 4);
    bool exact = true;
    for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 4; ++x)
            for (int c = 0; c < 3; ++c)
                exact &= id[c * 16 + y * 4 + x] == static_cast<float>(square[(y * 4 + x) * 3 + c]) / 255.0f;
    check(exact, "preprocess: identity resize is v / 255");
    // Corners are preserved by align_corners=True; size 1 takes the top-left pixel.
    const std::vector<float> big = sharp_rt::preprocess(square.data(), 4, 4, 9);
    check(big[0] == static_cast<float>(square[0]) / 255.0f && big[80] == static_cast<float>(square[45]) / 255.0f,
          "preprocess: corners preserved");
    const std::vector<float> one = sharp_rt::preprocess(square.data(), 4, 4, 1);
    check(one[0] == static_cast<float>(square[0]) / 255.0f, "preprocess: size 1");
    check_throws<std::invalid_argument>([&] { sharp_rt::preprocess(square.data(), 0, 4, 4); }, "preprocess: zero width");
    check_throws<std::invalid_argument>([&] { sharp_rt::preprocess(square.data(), 4, 4, 0); }, "preprocess: zero size");
    check_throws<std::invalid_argument>([&] { sharp_rt::preprocess(nullptr, 4, 4, 4); }, "preprocess: null");
}

void test_camera_and_writers() {
    check(std::fabs(sharp_rt::focal_length_px(36, 24, 30.0) - 30.0) < 1e-12, "focal_length_px: full frame");
    check(std::fabs(sharp_rt::focal_length_px(600, 400) - 500.0) < 1e-9, "focal_length_px: default 30 mm");
    check_throws<std::invalid_argument>([] { sharp_rt::focal_length_px(0, 4); }, "focal_length_px: bad size");
    check_throws<std::invalid_argument>([] { sharp_rt::unprojection_diagonal(0.0, 4, 4); }, "unprojection: f = 0");

    // Disparity quantiles: torch.quantile([1, 1/2, 1/3, 1/4, 1/5] ... ) on 1/z = 1..5.
    const float z[5] = {1.0f, 0.5f, 1.0f / 3.0f, 0.25f, 0.2f};
    const std::array<float, 2> q = sharp_rt::disparity_quantiles(z, 5);
    check(std::fabs(q[0] - 1.4f) < 1e-6f && std::fabs(q[1] - 4.6f) < 1e-6f, "disparity_quantiles: 1..5");
    const std::array<float, 2> empty = sharp_rt::disparity_quantiles(z, 0);
    check(empty[0] == 0.0f && empty[1] == 0.0f, "disparity_quantiles: empty");
    const float zn[2] = {1.0f, NAN};
    check(std::isnan(sharp_rt::disparity_quantiles(zn, 2)[0]), "disparity_quantiles: NaN propagates");

    sharp_rt::Gaussians g;
    g.mean_vectors = {0.1f, -0.2f, 2.0f, 0.3f, 0.4f, 4.0f};
    g.singular_values = {0.1f, 0.05f, 0.01f, 0.2f, 0.2f, 0.2f};
    g.quaternions = {1, 0, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f};
    g.colors = {0.0f, 0.5f, 1.0f, 0.001f, 0.2f, 0.9f};
    g.opacities = {0.5f, 0.9f};
    g.f_px = 500.0;
    g.width = 600;
    g.height = 400;
    std::ostringstream ply;
    sharp_rt::write_ply(g, ply);
    const std::string bytes = ply.str();
    const std::string header = sharp_rt::ply_header(2);
    check(bytes.compare(0, header.size(), header) == 0, "write_ply: header first");
    check(bytes.size() == header.size() + 2 * 14 * 4 + 16 * 4 + 9 * 4 + 2 * 4 + 2 * 4 + 2 * 4 + 1 + 3,
          "write_ply: file size");
    check(bytes.substr(bytes.size() - 4) == std::string("\x00\x01\x05\x00", 4), "write_ply: color_space + version");
    std::ostringstream plain;
    sharp_rt::write_ply(g, plain, sharp_rt::PlyLayout::Plain);
    check(plain.str().size() == sharp_rt::ply_header(2, sharp_rt::PlyLayout::Plain).size() + 2 * 14 * 4,
          "write_ply: plain layout size");

    std::ostringstream splat;
    sharp_rt::write_splat(g, splat);
    const std::string records = splat.str();
    check(records.size() == 64, "write_splat: 32 bytes per Gaussian");
    // Gaussian 1 has the larger volume * opacity: it comes first.
    float x0;
    std::memcpy(&x0, records.data(), 4);
    check(x0 == 0.3f, "write_splat: sorted by volume * opacity");
    const auto* r1 = reinterpret_cast<const std::uint8_t*>(records.data()) + 32;  // Gaussian 0
    check(r1[24] == 0 && r1[26] == 255 && r1[27] == 128 && r1[28] == 255 && r1[29] == 128,
          "write_splat: colour, opacity and rotation bytes");

    // No Gaussians: a valid file with zero vertices; an empty .splat.
    sharp_rt::Gaussians none;
    none.f_px = 500.0;
    none.width = 600;
    none.height = 400;
    std::ostringstream empty_ply, empty_splat;
    sharp_rt::write_ply(none, empty_ply);
    check(empty_ply.str().size() == sharp_rt::ply_header(0).size() + 16 * 4 + 9 * 4 + 8 + 8 + 8 + 1 + 3,
          "write_ply: zero Gaussians");
    sharp_rt::write_splat(none, empty_splat);
    check(empty_splat.str().empty(), "write_splat: zero Gaussians");
    const sharp_rt::NdcGaussiansView empty_view;
    check(sharp_rt::unproject(empty_view, 500.0, 600, 400).size() == 0, "unproject: zero Gaussians");

    // Non-finite engine outputs propagate without traps or undefined conversions.
    sharp_rt::Gaussians odd = g;
    odd.colors[0] = NAN;
    odd.opacities[0] = NAN;
    odd.quaternions[1] = INFINITY;
    std::ostringstream odd_splat;
    sharp_rt::write_splat(odd, odd_splat);
    check(odd_splat.str().size() == 64, "write_splat: NaN input");

    // Opacity exactly 0 or 1 and a zero scale: logit / log clamped to the largest finite float.
    sharp_rt::Gaussians edge = g;
    edge.opacities = {0.0f, 1.0f};
    edge.singular_values[0] = 0.0f;
    std::ostringstream edge_ply;
    sharp_rt::write_ply(edge, edge_ply, sharp_rt::PlyLayout::Plain);
    float vertex[2][14];
    const std::string edge_bytes = edge_ply.str();
    std::memcpy(vertex, edge_bytes.data() + sharp_rt::ply_header(2, sharp_rt::PlyLayout::Plain).size(), sizeof vertex);
    const float kMax = std::numeric_limits<float>::max();
    check(vertex[0][6] == -kMax && vertex[1][6] == kMax && vertex[0][7] == -kMax,
          "write_ply: logit(0), logit(1), log(0) clamped to finite floats");

    sharp_rt::Gaussians bad = g;
    bad.colors.pop_back();
    check_throws<std::invalid_argument>([&] { std::ostringstream os; sharp_rt::write_ply(bad, os); },
                                        "write_ply: inconsistent buffers");
    check_throws<std::runtime_error>([&] { sharp_rt::write_ply_file(g, "/nonexistent-dir/x.ply"); },
                                     "write_ply_file: unwritable path");
    check_throws<std::runtime_error>([] { sharp_rt::parse_ppm(std::vector<char>{'P', '3'}); }, "parse_ppm: P3");
    const std::string truncated = "P6\n2 2\n255\n\x01\x02";
    check_throws<std::runtime_error>([&] { sharp_rt::parse_ppm(std::vector<char>(truncated.begin(), truncated.end())); },
                                     "parse_ppm: truncated");
    const std::string ok = std::string("P6 # comment\n1 1\n255\n") + std::string("\x0a\x14\x1e", 3);
    const sharp_rt::RgbImage image = sharp_rt::parse_ppm(std::vector<char>(ok.begin(), ok.end()));
    check(image.width == 1 && image.pixels.size() == 3 && image.pixels[2] == 30, "parse_ppm: comment and pixels");
}

}  // namespace

int main() {
    try {
        test_eigh();
        test_transform_frames();
        test_preprocess();
        test_camera_and_writers();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("unit_tests: all checks passed\n");
    return 0;
}
