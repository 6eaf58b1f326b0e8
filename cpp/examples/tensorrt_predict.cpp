// tensorrt_predict: photo (binary PPM) -> 3DGS .ply with a sharp-rt TensorRT engine.
//
//   tensorrt_predict engines/sharp-fp16/model.plan photo.ppm out.ply [f_mm=30] [out.splat]
//
// Steps: read the image, deserialize the .plan (built by `sharp-rt export --target tensorrt`),
// check that its I/O tensors are those of docs/engine-contract.md (names, float32), resize the
// image with sharp_rt::preprocess_into straight into a pinned host buffer, bind the device
// buffers, enqueueV3 on a CUDA stream, copy the five outputs back into pinned buffers, then
// unproject and write with the header-only core.  Uses only API present in TensorRT 10.x and
// 11.x (name-based I/O, enqueueV3) and the CUDA runtime.
// Build: see docs/cpp.md ("TensorRT").  Exit status 0 ok, 1 runtime error, 2 usage error.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
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

// A pinned (page-locked) host buffer of floats: cudaMemcpyAsync from and to it is truly
// asynchronous and runs at full PCIe/NVLink speed.  Freed on scope exit.
struct PinnedFloats {
    float* ptr = nullptr;
    std::size_t count = 0;
    explicit PinnedFloats(std::size_t n) : count(n) {
        void* p = nullptr;
        cuda_check(cudaMallocHost(&p, n * sizeof(float)), "cudaMallocHost");
        ptr = static_cast<float*>(p);
    }
    ~PinnedFloats() { cudaFreeHost(ptr); }
    PinnedFloats(const PinnedFloats&) = delete;
    PinnedFloats& operator=(const PinnedFloats&) = delete;
    std::size_t bytes() const { return count * sizeof(float); }
};

const char* const kInputs[] = {"image", "disparity_factor"};
const char* const kOutputs[] = {"mean_vectors", "singular_values", "quaternions", "colors", "opacities"};

// The plan's I/O tensors must be exactly the engine contract's, all float32.
void check_contract(const nvinfer1::ICudaEngine& engine) {
    std::vector<std::string> inputs, outputs;
    for (int32_t i = 0; i < engine.getNbIOTensors(); ++i) {
        const char* name = engine.getIOTensorName(i);
        if (engine.getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
            throw std::runtime_error(std::string("engine tensor '") + name + "' is not float32: re-export the plan");
        (engine.getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs : outputs).emplace_back(name);
    }
    std::vector<std::string> want_inputs(std::begin(kInputs), std::end(kInputs));
    std::vector<std::string> want_outputs(std::begin(kOutputs), std::end(kOutputs));
    for (auto* list : {&inputs, &outputs, &want_inputs, &want_outputs}) std::sort(list->begin(), list->end());
    if (inputs != want_inputs || outputs != want_outputs)
        throw std::runtime_error("the plan's tensors are not the sharp-rt engine contract (docs/engine-contract.md)");
}

void bind(nvinfer1::IExecutionContext& context, const char* name, void* device) {
    if (!context.setTensorAddress(name, device))
        throw std::runtime_error(std::string("setTensorAddress failed for '") + name + "'");
}

// The GPU this process runs on, for messages: "NVIDIA H100 80GB HBM3 (compute 9.0)".
std::string describe_gpu() {
    int device = 0;
    cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    return std::string(prop.name) + " (compute " + std::to_string(prop.major) + "." + std::to_string(prop.minor) + ")";
}

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
    const std::string gpu = describe_gpu();
    const std::vector<char> plan = read_file(plan_path);
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    if (!runtime) throw std::runtime_error("createInferRuntime failed");
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine)
        throw std::runtime_error("cannot deserialize " + plan_path + " on " + gpu +
                                 ": a plan runs only on the GPU model and TensorRT version it was built with "
                                 "(see its manifest.json); re-export it on this machine");
    check_contract(*engine);
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());
    if (!context) throw std::runtime_error("createExecutionContext failed");

    // Input shapes: batch 1 (also for --dynamic-batch engines, whose profile starts at 1); S is static.
    const nvinfer1::Dims image_dims = engine->getTensorShape("image");
    if (image_dims.nbDims != 4 || image_dims.d[1] != 3 || image_dims.d[2] <= 0 || image_dims.d[2] != image_dims.d[3])
        throw std::runtime_error("engine input 'image' is not [B, 3, S, S]");
    const int size = static_cast<int>(image_dims.d[2]);
    nvinfer1::Dims4 image_shape(1, 3, size, size);
    nvinfer1::Dims factor_shape;
    factor_shape.nbDims = 1;
    factor_shape.d[0] = 1;
    if (!context->setInputShape("image", image_shape) || !context->setInputShape("disparity_factor", factor_shape))
        throw std::runtime_error("the plan does not accept batch 1 (its optimization profile)");

    PinnedFloats input(3 * static_cast<std::size_t>(size) * size);
    PinnedFloats factor(1);
    sharp_rt::preprocess_into(image.pixels.data(), image.width, image.height, size, input.ptr);
    factor.ptr[0] = sharp_rt::disparity_factor(f_px, image.width);

    DeviceBuffer input_device(input.bytes());
    DeviceBuffer factor_device(factor.bytes());
    bind(*context, "image", input_device.ptr);
    bind(*context, "disparity_factor", factor_device.ptr);
    std::vector<std::unique_ptr<PinnedFloats>> host;
    std::vector<std::unique_ptr<DeviceBuffer>> device;
    for (const char* name : kOutputs) {
        const std::size_t count = volume(context->getTensorShape(name));
        host.emplace_back(new PinnedFloats(count));
        device.emplace_back(new DeviceBuffer(host.back()->bytes()));
        bind(*context, name, device.back()->ptr);
    }

    cudaStream_t stream;
    cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
    std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> stream_guard(stream, [](cudaStream_t s) { cudaStreamDestroy(s); });
    cuda_check(cudaMemcpyAsync(input_device.ptr, input.ptr, input.bytes(), cudaMemcpyHostToDevice, stream), "copy image");
    cuda_check(cudaMemcpyAsync(factor_device.ptr, factor.ptr, factor.bytes(), cudaMemcpyHostToDevice, stream),
               "copy factor");
    if (!context->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
    for (std::size_t k = 0; k < host.size(); ++k)
        cuda_check(cudaMemcpyAsync(host[k]->ptr, device[k]->ptr, host[k]->bytes(), cudaMemcpyDeviceToHost, stream),
                   "copy outputs");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    sharp_rt::NdcGaussiansView view;
    view.mean_vectors = host[0]->ptr;
    view.singular_values = host[1]->ptr;
    view.quaternions = host[2]->ptr;
    view.colors = host[3]->ptr;
    view.opacities = host[4]->ptr;
    view.count = host[4]->count;
    const sharp_rt::Gaussians gaussians = sharp_rt::unproject(view, f_px, image.width, image.height);
    sharp_rt::write_ply_file(gaussians, ply_path);
    if (!splat_path.empty()) sharp_rt::write_splat_file(gaussians, splat_path);
    std::printf("%s: %zu Gaussians, f_px %.1f, on %s\n", ply_path.c_str(), gaussians.size(), f_px, gpu.c_str());
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
