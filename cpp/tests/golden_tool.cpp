// Golden-data driver for tests/test_cpp.py: runs the C++ core on files written by the Python test.
//
//   golden_tool preprocess IMAGE.ppm SIZE OUT.bin      -> float32 [3, SIZE, SIZE]
//   golden_tool gaussians DIR                          -> reads DIR/ndc_*.bin, DIR/camera.bin
//       (float64 f_px, width, height), writes DIR/cpp_{mean_vectors,singular_values,quaternions}.bin,
//       DIR/cpp.ply, DIR/cpp_plain.ply and DIR/cpp.splat
// Exit status 0 on success, 1 with a message on any error.
#include <cstdio>
#include <exception>
#include <string>

#include "sharp_rt/sharp_rt.hpp"
#include "test_io.hpp"

using sharp_rt_test::load_ndc;
using sharp_rt_test::NdcFiles;
using sharp_rt_test::write_array;

static int run_preprocess(const std::string& image_path, int size, const std::string& out_path) {
    const sharp_rt::RgbImage image = sharp_rt::read_ppm(image_path);
    write_array(out_path, sharp_rt::preprocess(image.pixels.data(), image.width, image.height, size));
    return 0;
}

static int run_gaussians(const std::string& dir) {
    const NdcFiles ndc = load_ndc(dir);
    const sharp_rt::Gaussians g = sharp_rt::unproject(ndc.view(), ndc.f_px, ndc.width, ndc.height);
    write_array(dir + "/cpp_mean_vectors.bin", g.mean_vectors);
    write_array(dir + "/cpp_singular_values.bin", g.singular_values);
    write_array(dir + "/cpp_quaternions.bin", g.quaternions);
    sharp_rt::write_ply_file(g, dir + "/cpp.ply");
    sharp_rt::write_ply_file(g, dir + "/cpp_plain.ply", sharp_rt::PlyLayout::Plain);
    sharp_rt::write_splat_file(g, dir + "/cpp.splat");
    return 0;
}

int main(int argc, char** argv) {
    try {
        const std::string mode = argc > 1 ? argv[1] : "";
        if (mode == "preprocess" && argc == 5) return run_preprocess(argv[2], std::stoi(argv[3]), argv[4]);
        if (mode == "gaussians" && argc == 3) return run_gaussians(argv[2]);
        std::fprintf(stderr, "usage: golden_tool preprocess IMAGE.ppm SIZE OUT.bin | gaussians DIR\n");
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "golden_tool: %s\n", e.what());
        return 1;
    }
}
