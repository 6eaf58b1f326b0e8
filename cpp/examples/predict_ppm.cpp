// predict_ppm: photo (binary PPM) -> 3DGS .ply (and .splat) on the CPU with LibTorch/AOTInductor,
// no Python at run time.
//
//   predict_ppm MODEL.pt2 IMAGE.ppm OUT.ply [F_MM=30] [OUT.splat]
//
// MODEL.pt2 is the model.pt2 of `sharp-rt export --target aoti --device cpu` (AOTInductor package of
// the SHARP predictor, inputs/outputs as in docs/engine-contract.md, metadata "internal_size",
// "device").  The image must be a
// binary PPM (P6, 8-bit; no EXIF, so the focal length is F_MM, 35 mm equivalent, default 30).
// Steps: read_ppm -> preprocess_into (directly into the input tensor) -> AOTIModelPackageLoader::run
// -> unproject -> write_ply_file / write_splat_file.
// Exit status: 0 ok, 1 runtime error (message on stderr), 2 usage error.
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "sharp_rt/sharp_rt.hpp"

namespace {

// Check that `t` is a float32 CPU tensor of shape [1, n, components] (or [1, n] for components 0)
// and return it contiguous.
at::Tensor checked_output(const at::Tensor& t, const char* name, int64_t n, int64_t components) {
    const bool shape_ok = components > 0 ? (t.dim() == 3 && t.size(0) == 1 && t.size(1) == n && t.size(2) == components)
                                         : (t.dim() == 2 && t.size(0) == 1 && t.size(1) == n);
    if (!shape_ok || t.scalar_type() != at::kFloat || !t.device().is_cpu())
        throw std::runtime_error(std::string("engine output '") + name + "' is not float32 [1, N, ...] on the CPU");
    return t.contiguous();
}

int run(const std::string& model_path, const std::string& image_path, const std::string& ply_path, double f_mm,
        const std::string& splat_path) {
    const sharp_rt::RgbImage image = sharp_rt::read_ppm(image_path);
    const double f_px = sharp_rt::focal_length_px(image.width, image.height, f_mm);

    torch::inductor::AOTIModelPackageLoader loader(model_path);
    const std::unordered_map<std::string, std::string> metadata = loader.get_metadata();
    const auto found = metadata.find("internal_size");
    if (found == metadata.end())
        throw std::runtime_error(model_path + " has no 'internal_size' metadata (export it with "
                                 "`sharp-rt export --target aoti --device cpu`)");
    const int size = std::stoi(found->second);
    const auto device = metadata.find("device");
    if (device != metadata.end() && device->second != "cpu")
        throw std::runtime_error(model_path + " was compiled for " + device->second +
                                 "; this example runs CPU packages (export with --device cpu)");

    at::Tensor input = at::empty({1, 3, size, size}, at::kFloat);  // [1, 3, S, S]
    sharp_rt::preprocess_into(image.pixels.data(), image.width, image.height, size, input.data_ptr<float>());
    const at::Tensor factor = at::full({1}, sharp_rt::disparity_factor(f_px, image.width), at::kFloat);  // [1]

    const std::vector<at::Tensor> outputs = loader.run({input, factor});
    if (outputs.size() != 5) throw std::runtime_error("the model returned " + std::to_string(outputs.size()) + " outputs, expected 5");
    const int64_t n = outputs[4].dim() == 2 ? outputs[4].size(1) : -1;
    const at::Tensor means = checked_output(outputs[0], "mean_vectors", n, 3);
    const at::Tensor scales = checked_output(outputs[1], "singular_values", n, 3);
    const at::Tensor quaternions = checked_output(outputs[2], "quaternions", n, 4);
    const at::Tensor colors = checked_output(outputs[3], "colors", n, 3);
    const at::Tensor opacities = checked_output(outputs[4], "opacities", n, 0);

    sharp_rt::NdcGaussiansView view;
    view.mean_vectors = means.data_ptr<float>();
    view.singular_values = scales.data_ptr<float>();
    view.quaternions = quaternions.data_ptr<float>();
    view.colors = colors.data_ptr<float>();
    view.opacities = opacities.data_ptr<float>();
    view.count = static_cast<std::size_t>(n);
    const sharp_rt::Gaussians gaussians = sharp_rt::unproject(view, f_px, image.width, image.height);
    sharp_rt::write_ply_file(gaussians, ply_path);
    if (!splat_path.empty()) sharp_rt::write_splat_file(gaussians, splat_path);
    std::printf("%s: %zu Gaussians, %dx%d, f_px %.1f\n", ply_path.c_str(), gaussians.size(), image.width,
                image.height, f_px);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4 || argc > 6) {
        std::fprintf(stderr, "usage: %s MODEL.pt2 IMAGE.ppm OUT.ply [F_MM=30] [OUT.splat]\n", argv[0]);
        return 2;
    }
    try {
        const double f_mm = argc > 4 ? std::stod(argv[4]) : sharp_rt::kDefaultFocalLengthMm;
        return run(argv[1], argv[2], argv[3], f_mm, argc > 5 ? argv[5] : "");
    } catch (const std::exception& e) {  // c10::Error derives from std::exception
        std::fprintf(stderr, "predict_ppm: %s\n", e.what());
        return 1;
    }
}
