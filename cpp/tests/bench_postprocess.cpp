// Post-processing benchmark of the C++ core (driven by benchmarks/cpp_postprocess.py):
//
//   bench_postprocess DIR [REPEATS=5]
//
// Reads DIR/ndc_*.bin and DIR/camera.bin (as golden_tool), then times unproject, write_ply_file and
// write_splat_file (files in DIR, no fsync), one thread.  Prints "stage median_seconds" lines.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "sharp_rt/sharp_rt.hpp"
#include "test_io.hpp"

using sharp_rt_test::load_ndc;
using sharp_rt_test::NdcFiles;

template <typename F>
static double median_seconds(int repeats, F&& f) {
    std::vector<double> times;
    for (int i = 0; i < repeats; ++i) {
        const auto start = std::chrono::steady_clock::now();
        f();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        std::fprintf(stderr, "usage: bench_postprocess DIR [REPEATS=5]\n");
        return 2;
    }
    try {
        const std::string dir = argv[1];
        const int repeats = argc > 2 ? std::max(1, std::stoi(argv[2])) : 5;
        const NdcFiles ndc = load_ndc(dir);
        const sharp_rt::NdcGaussiansView view = ndc.view();
        sharp_rt::Gaussians g;
        const double t_unproject =
            median_seconds(repeats, [&] { g = sharp_rt::unproject(view, ndc.f_px, ndc.width, ndc.height); });
        const double t_ply = median_seconds(repeats, [&] { sharp_rt::write_ply_file(g, dir + "/bench.ply"); });
        const double t_splat = median_seconds(repeats, [&] { sharp_rt::write_splat_file(g, dir + "/bench.splat"); });
        std::printf("gaussians %zu\nunproject %.6f\nwrite_ply %.6f\nwrite_splat %.6f\n", g.size(), t_unproject,
                    t_ply, t_splat);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_postprocess: %s\n", e.what());
        return 1;
    }
}
