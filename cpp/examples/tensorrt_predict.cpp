// tensorrt_predict: photo (binary PPM) -> 3DGS .ply with a sharp-rt TensorRT engine.
//
//   tensorrt_predict engines/sharp-fp16/model.plan photo.ppm out.ply [f_mm=30] [out.splat]
//
// Steps: read the image, resize it with sharp_rt::preprocess_into, deserialize the .plan
// (built by `sharp-rt export --target tensorrt`), bind the tensors of docs/engine-contract.md,
// enqueueV3 on a CUDA stream, copy the five outputs back, then unproject and write with the
// header-only core.  Needs TensorRT >= 10 (name-based I/O, enqueueV3) and the CUDA runtime.
// Build: see docs/cpp.md ("TensorRT").  Exit status 0 ok, 1 runtime error, 2 usage error.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "sharp_rt/sharp_rt.hpp"

namespace {

class Logger : public nvinfer1::ILogger {
   public:
    void log(Severity severity, const char* message) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", message);
    }
};

void cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// A device buffer freed on scope exit.
struct DeviceBuffer {
    void* ptr = nullptr;
    explicit DeviceBuffer(std::size_t bytes) { cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

std::vector<char> read_file(const std::string& path) {
    std::ifstream is(path, std::ios::binary);
    if (!is) throw std::runtime_error("cannot open " + path);
    return std::vector<char>(std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>());
}

std::size_t volume(const nvinfer1::Dims& dims) {
    std::size_t v = 1;
    for (int i = 0; i < dims.nbDims; ++i) {
        if (dims.d[i] < 0) throw std::runtime_error("unresolved dynamic dimension");
        v *= static_cast<std::size_t>(dims.d[i]);
    }
    return v;
}

int run(const std::string& plan_path, const std::string& image_path, const std::string& ply_path, double f_mm,
        const std::string& splat_path) {
    const sharp_rt::RgbImage image = sharp_rt::read_ppm(image_path);
    const double f_px = sharp_rt::focal_length_px(image.width, image.height, f_mm);

    Logger logger;
    const std::vector<char> plan = read_file(plan_path);
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    if (!runtime) throw std::runtime_error("createInferRuntime failed");
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine) throw std::runtime_error("cannot deserialize " + plan_path + " (TensorRT version or GPU mismatch?)");
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());
    if (!context) throw std::runtime_error("createExecutionContext failed");

    // Input shapes: batch 1 (also for --dynamic-batch engines); S is static.
    const nvinfer1::Dims image_dims = engine->getTensorShape("image");
    if (image_dims.nbDims != 4 || image_dims.d[2] <= 0 || image_dims.d[2] != image_dims.d[3])
        throw std::runtime_error("engine input 'image' is not [B, 3, S, S]");
    const int size = static_cast<int>(image_dims.d[2]);
    nvinfer1::Dims4 image_shape(1, 3, size, size);
    nvinfer1::Dims factor_shape;
    factor_shape.nbDims = 1;
    factor_shape.d[0] = 1;
    if (!context->setInputShape("image", image_shape) || !context->setInputShape("disparity_factor", factor_shape))
        throw std::runtime_error("cannot set the input shapes");

    std::vector<float> input(3 * static_cast<std::size_t>(size) * size);
    sharp_rt::preprocess_into(image.pixels.data(), image.width, image.height, size, input.data());
    const float factor = sharp_rt::disparity_factor(f_px, image.width);

    const char* const outputs[] = {"mean_vectors", "singular_values", "quaternions", "colors", "opacities"};
    std::vector<std::unique_ptr<DeviceBuffer>> device;
    std::vector<std::vector<float>> host;
    device.emplace_back(new DeviceBuffer(input.size() * sizeof(float)));
    device.emplace_back(new DeviceBuffer(sizeof(float)));
    context->setTensorAddress("image", device[0]->ptr);
    context->setTensorAddress("disparity_factor", device[1]->ptr);
    for (const char* name : outputs) {
        const std::size_t count = volume(context->getTensorShape(name));
        host.emplace_back(count);
        device.emplace_back(new DeviceBuffer(count * sizeof(float)));
        context->setTensorAddress(name, device.back()->ptr);
    }

    cudaStream_t stream;
    cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
    std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> stream_guard(stream, [](cudaStream_t s) { cudaStreamDestroy(s); });
    cuda_check(cudaMemcpyAsync(device[0]->ptr, input.data(), input.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
               "copy image");
    cuda_check(cudaMemcpyAsync(device[1]->ptr, &factor, sizeof(float), cudaMemcpyHostToDevice, stream), "copy factor");
    if (!context->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
    for (std::size_t k = 0; k < host.size(); ++k)
        cuda_check(cudaMemcpyAsync(host[k].data(), device[k + 2]->ptr, host[k].size() * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream),
                   "copy outputs");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    sharp_rt::NdcGaussiansView view;
    view.mean_vectors = host[0].data();
    view.singular_values = host[1].data();
    view.quaternions = host[2].data();
    view.colors = host[3].data();
    view.opacities = host[4].data();
    view.count = host[4].size();
    const sharp_rt::Gaussians gaussians = sharp_rt::unproject(view, f_px, image.width, image.height);
    sharp_rt::write_ply_file(gaussians, ply_path);
    if (!splat_path.empty()) sharp_rt::write_splat_file(gaussians, splat_path);
    std::printf("%s: %zu Gaussians, f_px %.1f\n", ply_path.c_str(), gaussians.size(), f_px);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4 || argc > 6) {
        std::fprintf(stderr, "usage: %s MODEL.plan IMAGE.ppm OUT.ply [F_MM=30] [OUT.splat]\n", argv[0]);
        return 2;
    }
    try {
        const double f_mm = argc > 4 ? std::stod(argv[4]) : sharp_rt::kDefaultFocalLengthMm;
        return run(argv[1], argv[2], argv[3], f_mm, argc > 5 ? argv[5] : "");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tensorrt_predict: %s\n", e.what());
        return 1;
    }
}
