// sharp_rt/linalg.hpp -- robust closed-form symmetric 3x3 eigensolver and Gaussian frame transforms.
//
// Mirrors sharp_rt/runtime/linalg.py (float32 path of transform_frames) operation by operation:
//  1. the eigenvalue farthest from the other two (trigonometric formula, O. K. Smith 1961);
//  2. its eigenvector as the largest column of adj(C - lambda I);
//  3. a branch-free orthonormal basis of the orthogonal plane (Duff et al. 2017) and one
//     trigonometry-free Jacobi rotation for the 2x2 problem left there;
//  4. the third axis from the same rotation (always a proper rotation, det = +1);
//  5. the quaternion (w, x, y, z), after negating a pair of axes so that w >= 1/2.
// Scales of transformed Gaussians are |M^T e_k| with M = A R diag(s): no cancellation between
// large and small eigenvalues.  Do not compile with -ffast-math (it breaks the NaN/ordering logic
// and the bit-compatibility with Python); -ffp-contract=off keeps results identical across CPUs.
#pragma once

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <stdexcept>

namespace sharp_rt {
namespace detail {

using Vec3 = std::array<float, 3>;

// |q|^2 R(q) (row-major) and |q|^2; a zero quaternion is the identity.
inline void rotation_components(float w, float x, float y, float z, std::array<float, 9>& rot, float& norm2) {
    const float ww = w * w, xx = x * x, yy = y * y, zz = z * z;
    const float a = ww + zz, b = xx + yy;
    norm2 = a + b;
    const float c = ww - zz, d = xx - yy;
    const float x2 = x + x, y2 = y + y;
    const float xy = x2 * y, xz = x2 * z, wx = x2 * w;
    const float yz = y2 * z, wy = y2 * w;
    float wz = w * z;
    wz += wz;
    rot = {c + d, xy - wz, xz + wy, xy + wz, c - d, yz - wx, xz - wy, yz + wx, a - b};
    if (norm2 == 0.0f) {
        rot[0] = rot[4] = rot[8] = 1.0f;
        norm2 = 1.0f;
    }
}

// Eigenvalue farthest from the other two, its unit eigenvector, and whether it is the largest.
inline void first_axis(float c00, float c11, float c22, float c01, float c02, float c12, float& lam, Vec3& e,
                       bool& largest) {
    const float trace = c00 + c11 + c22;
    const float mean = trace * static_cast<float>(1.0 / 3.0);
    const float d0 = c00 - mean, d1 = c11 - mean, d2 = c22 - mean;
    const float sq01 = c01 * c01, sq02 = c02 * c02, sq12 = c12 * c12;
    const float p2 = (d0 * d0 + d1 * d1 + d2 * d2 + 2.0f * (sq01 + sq02 + sq12)) * static_cast<float>(1.0 / 6.0);
    const float p = std::sqrt(p2);
    const float c01c12 = c01 * c12, c02c12 = c02 * c12, c01c02 = c01 * c02;
    const float det = d0 * (d1 * d2 - sq12) - c01 * (c01 * d2 - c02c12) + c02 * (c01c12 - d1 * c02);
    const float p3 = p * p2;
    const float half = 0.5f * det / std::max(p3, FLT_MIN);  // cos(3 phi), in [-1, 1] up to rounding
    const float ah = std::min(std::fabs(half), 1.0f);
    const float c = std::cos(std::acos(ah) * static_cast<float>(1.0 / 3.0));
    lam = mean + 2.0f * c * std::copysign(p, half);

    const float a = c00 - lam, b = c11 - lam, cc = c22 - lam;
    const float adj00 = b * cc - sq12, adj11 = a * cc - sq02, adj22 = a * b - sq01;
    const float adj01 = c02c12 - c01 * cc, adj02 = c01c12 - b * c02, adj12 = c01c02 - a * c12;
    float ex = adj00, ey = adj01, ez = adj02;
    if (adj11 > adj00) ex = adj01, ey = adj11, ez = adj12;
    if (adj22 > std::max(adj00, adj11)) ex = adj02, ey = adj12, ez = adj22;
    float norm2 = ex * ex + ey * ey + ez * ez;
    if (norm2 == 0.0f) {  // C == lam I: every direction is an eigenvector
        ex += 1.0f;
        norm2 += 1.0f;
    }
    const float inv = 1.0f / std::sqrt(norm2);
    e = {ex * inv, ey * inv, ez * inv};
    largest = half >= 0.0f;
}

// Unit u, v with u x v = e for a unit e (Duff et al. 2017), branch-free.
inline void plane_basis(const Vec3& e, Vec3& u, Vec3& v) {
    const float sign = std::copysign(1.0f, e[2]);
    const float k = -1.0f / (sign + e[2]);
    const float kx = e[0] * k;
    const float bxy = kx * e[1];
    u = {1.0f + sign * (kx * e[0]), sign * bxy, -(sign * e[0])};
    v = {bxy, sign + k * (e[1] * e[1]), -e[1]};
}

// One Jacobi rotation of a symmetric 2x2 matrix: (cos, sin) is the eigenvector of the larger eigenvalue.
inline void plane_rotation(float b00, float b01, float b11, float& cos_out, float& sin_out) {
    const float h = 0.5f * (b00 - b11);
    const float radius = std::sqrt(h * h + b01 * b01);
    const float t = b01 / (radius + std::fabs(h) + FLT_MIN);
    const float c = 1.0f / std::sqrt(1.0f + t * t);
    const float s = t * c;
    if (h >= 0.0f) {
        cos_out = c, sin_out = s;
    } else {
        cos_out = s, sin_out = c;
    }
}

// Rotation matrix (row-major, columns = axes) -> unit quaternion (w, x, y, z) with w >= 1/2,
// after negating a pair of columns (same covariance, still a proper rotation).
inline std::array<float, 4> quaternion_from_axes(const std::array<float, 9>& r) {
    float f0 = std::copysign(1.0f, r[0]), f1 = std::copysign(1.0f, r[4]), f2 = std::copysign(1.0f, r[8]);
    const bool odd = (f0 * f1 * f2) < 0.0f;
    const float a0 = std::fabs(r[0]), a1 = std::fabs(r[4]), a2 = std::fabs(r[8]);
    const bool keep0 = odd && a0 <= a1 && a0 <= a2;
    const bool keep1 = odd && !keep0 && a1 <= a2;
    const bool keep2 = odd && !keep0 && !keep1;
    if (keep0) f0 = -f0;
    if (keep1) f1 = -f1;
    if (keep2) f2 = -f2;
    const float w = 0.5f * std::sqrt(1.0f + (f0 * r[0] + f1 * r[4] + f2 * r[8]));
    const float inv = 0.25f / w;
    return {w, (f1 * r[7] - f2 * r[5]) * inv, (f2 * r[2] - f0 * r[6]) * inv, (f0 * r[3] - f1 * r[1]) * inv};
}

}  // namespace detail

/// Eigen-decomposition of one symmetric 3x3 matrix: C = R diag(values) R^T.
struct EigenFrame {
    std::array<double, 3> values;    ///< eigenvalues, descending (up to rounding between nearly equal ones)
    std::array<double, 9> rotation;  ///< row-major proper rotation (det +1); column k is the eigenvector of values[k]
};

/// Diagonalize a symmetric 3x3 matrix (row-major; only the upper triangle is read) in closed form.
/// Computed in float32 after scaling to O(1) (relative accuracy ~1e-6 of the largest eigenvalue).
/// Never throws; non-finite input gives non-finite output.
inline EigenFrame eigh_3x3(const std::array<double, 9>& c) {
    double scale = 0.0;
    for (double v : c) scale = std::max(scale, std::fabs(v));
    if (!(scale > 0.0)) scale = 1.0;
    const float c00 = static_cast<float>(c[0] / scale), c11 = static_cast<float>(c[4] / scale);
    const float c22 = static_cast<float>(c[8] / scale), c01 = static_cast<float>(c[1] / scale);
    const float c02 = static_cast<float>(c[2] / scale), c12 = static_cast<float>(c[5] / scale);
    float lam;
    detail::Vec3 e0, u, v;
    bool largest;
    detail::first_axis(c00, c11, c22, c01, c02, c12, lam, e0, largest);
    detail::plane_basis(e0, u, v);
    const float cux = c00 * u[0] + c01 * u[1] + c02 * u[2];
    const float cuy = c01 * u[0] + c11 * u[1] + c12 * u[2];
    const float cuz = c02 * u[0] + c12 * u[1] + c22 * u[2];
    const float b00 = u[0] * cux + u[1] * cuy + u[2] * cuz;
    const float b01 = v[0] * cux + v[1] * cuy + v[2] * cuz;
    const float b11 = (c00 + c11 + c22 - lam) - b00;
    float cs, sn;
    detail::plane_rotation(b00, b01, b11, cs, sn);
    const float h = 0.5f * (b00 - b11);
    const float radius = std::sqrt(h * h + b01 * b01), center = 0.5f * (b00 + b11);
    detail::Vec3 e1, e2;
    for (int i = 0; i < 3; ++i) {
        e1[i] = cs * u[i] + sn * v[i];
        e2[i] = cs * v[i] - sn * u[i];
    }
    std::array<float, 3> vals = {lam, center + radius, center - radius};
    std::array<detail::Vec3, 3> axes = {e0, e1, e2};
    if (!largest) {  // cyclic permutation keeps a proper rotation
        vals = {vals[1], vals[2], vals[0]};
        axes = {axes[1], axes[2], axes[0]};
    }
    EigenFrame out{};
    for (int k = 0; k < 3; ++k) {
        out.values[k] = static_cast<double>(vals[k]) * scale;
        for (int i = 0; i < 3; ++i) out.rotation[3 * i + k] = axes[k][i];
    }
    return out;
}

/// Covariance R(q) diag(s^2) R(q)^T (row-major, float64) of one Gaussian; q = (w, x, y, z) is
/// normalized first (zero acts as the identity).
inline std::array<double, 9> covariance(const float* quaternion, const float* singular_values) {
    const double w = quaternion[0], x = quaternion[1], y = quaternion[2], z = quaternion[3];
    double n2 = w * w + x * x + y * y + z * z;
    std::array<double, 9> r = {w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y),
                               2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x),
                               2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z};
    if (n2 == 0.0) r = {1, 0, 0, 0, 1, 0, 0, 0, 1}, n2 = 1.0;
    std::array<double, 9> c{};
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
            double acc = 0.0;
            for (int k = 0; k < 3; ++k) {
                const double s = singular_values[k];
                acc += (r[3 * i + k] / n2) * s * s * (r[3 * j + k] / n2);
            }
            c[3 * i + j] = acc;
        }
    return c;
}

/// Re-diagonalize the covariances A R diag(s^2) R^T A^T of n linearly mapped Gaussians.
///
/// quaternions_in: [n, 4] (w, x, y, z), any norm (zero acts as identity); singular_values_in: [n, 3] >= 0;
/// linear: row-major 3x3 A (any, reflections included).
/// quaternions_out: [n, 4] unit, w >= 1/2; singular_values_out: [n, 3] descending, like an SVD's.
/// Output may alias the input.  Float32 arithmetic identical to sharp_rt.runtime.linalg.transform_frames.
/// Throws std::invalid_argument if A has non-finite entries or a pointer is null with n > 0.
inline void transform_frames(const float* quaternions_in, const float* singular_values_in, std::size_t n,
                             const std::array<double, 9>& linear, float* quaternions_out,
                             float* singular_values_out) {
    for (double v : linear)
        if (!std::isfinite(v)) throw std::invalid_argument("transform_frames: the linear map has non-finite entries");
    if (n == 0) return;
    if (!quaternions_in || !singular_values_in || !quaternions_out || !singular_values_out)
        throw std::invalid_argument("transform_frames: null buffer");
    double amax = 0.0;
    for (double v : linear) amax = std::max(amax, std::fabs(v));
    if (!(amax > 0.0)) amax = 1.0;
    std::array<double, 9> unit;
    for (int i = 0; i < 9; ++i) unit[i] = linear[i] / amax;
    const float amax_f = static_cast<float>(amax);

    for (std::size_t g = 0; g < n; ++g) {
        const float* q = quaternions_in + 4 * g;
        const float* s = singular_values_in + 3 * g;
        std::array<float, 9> rot;
        float norm2;
        detail::rotation_components(q[0], q[1], q[2], q[3], rot, norm2);
        float smax = std::max(std::max(s[0], s[1]), s[2]);
        smax = std::max(smax, FLT_MIN);
        const float inv = 1.0f / (norm2 * smax);
        const float gk[3] = {s[0] * inv, s[1] * inv, s[2] * inv};
        float rs[3][3];  // R diag(s) / s_max
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 3; ++k) rs[j][k] = rot[3 * j + k] * gk[k];
        float m[3][3];  // M = A R diag(s) / (s_max * amax), skipping zero and unit entries of A
        for (int i = 0; i < 3; ++i)
            for (int k = 0; k < 3; ++k) {
                bool have = false;
                float acc = 0.0f;
                for (int j = 0; j < 3; ++j) {
                    const double coef = unit[3 * i + j];
                    if (coef == 0.0) continue;
                    const float term = coef == 1.0 ? rs[j][k] : rs[j][k] * static_cast<float>(coef);
                    acc = have ? acc + term : term;
                    have = true;
                }
                m[i][k] = acc;
            }
        auto mmt = [&](int i, int j) { return m[i][0] * m[j][0] + m[i][1] * m[j][1] + m[i][2] * m[j][2]; };
        auto mt = [&](const detail::Vec3& x) {
            detail::Vec3 r;
            for (int k = 0; k < 3; ++k) r[k] = m[0][k] * x[0] + m[1][k] * x[1] + m[2][k] * x[2];
            return r;
        };
        auto norm = [](const detail::Vec3& x) { return std::sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]); };
        auto dot = [](const detail::Vec3& a, const detail::Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; };

        float lam;
        detail::Vec3 e0, u, v;
        bool largest;
        detail::first_axis(mmt(0, 0), mmt(1, 1), mmt(2, 2), mmt(0, 1), mmt(0, 2), mmt(1, 2), lam, e0, largest);
        detail::plane_basis(e0, u, v);
        const detail::Vec3 mu = mt(u), mv = mt(v);
        float cs, sn;
        detail::plane_rotation(dot(mu, mu), dot(mu, mv), dot(mv, mv), cs, sn);
        detail::Vec3 e1, e2, m1, m2;
        for (int i = 0; i < 3; ++i) {
            e1[i] = cs * u[i] + sn * v[i];
            e2[i] = cs * v[i] - sn * u[i];
            m1[i] = cs * mu[i] + sn * mv[i];
            m2[i] = cs * mv[i] - sn * mu[i];
        }
        const float scale = smax * amax_f;
        std::array<float, 3> scales = {norm(mt(e0)) * scale, norm(m1) * scale, norm(m2) * scale};
        std::array<detail::Vec3, 3> axes = {e0, e1, e2};
        if (!largest) {
            scales = {scales[1], scales[2], scales[0]};
            axes = {axes[1], axes[2], axes[0]};
        }
        std::array<float, 9> frame;
        for (int k = 0; k < 3; ++k)
            for (int i = 0; i < 3; ++i) frame[3 * i + k] = axes[k][i];
        const std::array<float, 4> quat = detail::quaternion_from_axes(frame);
        for (int k = 0; k < 4; ++k) quaternions_out[4 * g + k] = quat[k];
        for (int k = 0; k < 3; ++k) singular_values_out[3 * g + k] = scales[k];
    }
}

}  // namespace sharp_rt
