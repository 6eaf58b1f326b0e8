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

using sharp_rt_test::read_array;

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
        const auto means = read_array<float>(dir + "/ndc_mean_vectors.bin");
        const auto scales = read_array<float>(dir + "/ndc_singular_values.bin");
        const auto quats = read_array<float>(dir + "/ndc_quaternions.bin");
        const auto colors = read_array<float>(dir + "/ndc_colors.bin");
        const auto opacities = read_array<float>(dir + "/ndc_opacities.bin");
        const auto camera = read_array<double>(dir + "/camera.bin");
        if (camera.size() != 3) throw std::runtime_error("camera.bin must hold 3 float64 values");
        sharp_rt::NdcGaussiansView view;
        view.mean_vectors = means.data();
        view.singular_values = scales.data();
        view.quaternions = quats.data();
        view.colors = colors.data();
        view.opacities = opacities.data();
        view.count = opacities.size();
        const int width = static_cast<int>(camera[1]), height = static_cast<int>(camera[2]);
        sharp_rt::Gaussians g;
        const double t_unproject =
            median_seconds(repeats, [&] { g = sharp_rt::unproject(view, camera[0], width, height); });
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
