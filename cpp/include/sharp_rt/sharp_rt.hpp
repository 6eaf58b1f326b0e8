// sharp_rt/sharp_rt.hpp -- umbrella header of the sharp-rt C++ runtime core (header-only, C++17,
// standard library only).  See docs/cpp.md.
#pragma once

#include "camera.hpp"
#include "color.hpp"
#include "gaussians.hpp"
#include "linalg.hpp"
#include "ply.hpp"
#include "ppm.hpp"
#include "preprocess.hpp"
#include "splat.hpp"

namespace sharp_rt {
/// Version of the C++ core (follows the PLY "version" element it writes: 1.5.0).
constexpr const char* kCppCoreVersion = "0.1.0";
}  // namespace sharp_rt
