// ONNX Runtime's C API. Debian (libonnxruntime-dev) installs it under include/onnxruntime/; Homebrew's
// pkg-config file may point into that folder instead.
#if __has_include(<onnxruntime/onnxruntime_c_api.h>)
#include <onnxruntime/onnxruntime_c_api.h>
#else
#include <onnxruntime_c_api.h>
#endif
