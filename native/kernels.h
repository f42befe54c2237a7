// Shared by the kernel module's files: the quantized activations, the products, the pool, and
// the Node-API argument helpers.
#pragma once
#include <node_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cm {

constexpr int kBlock = 32;
constexpr int kPad = 64;

inline int padded(int k) { return (k + kPad - 1) / kPad * kPad; }

// An activation vector quantized in blocks of 32: values, one scale per block, and each block's
// sum of values (for the +64 / +8 offsets of the packed weights).
struct QuantizedX {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> sum;
};

// A weight as the products read it (see kernels.cc): bits 8 or 4, [rows, cols].
struct Matrix {
  int bits;
  int rows;
  int cols;
  const uint8_t* data;
  const float* scales;
};

// The instruction set the products (and the attention) use: the best this CPU has, or one forced by tests.
enum class Path { Portable, Avx2, Avx512Vnni };
Path currentPath();

// Bytes of one row of a weight of `bits` and `cols` columns.
size_t rowBytes(int bits, int cols);

// out[i] = row (subset ? subset[i] : i) of m . x, for i < count, on the pool.
void gemv(const Matrix& m, const float* x, float* out, const int32_t* subset, size_t count);

// Grouped-query attention of one new token: context[heads, headDim] = softmax(q K^T / sqrt(headDim)) V,
// each query head over the first `keys` slots of its KV head in the caches [kvHeads, capacity, headDim].
void attend(const float* q, const float* kCache, const float* vCache, int heads, int kvHeads, int capacity, int keys, int headDim, float* context);

// fn(chunk) for chunk in 0 .. chunks - 1 across the pool and the calling thread.
void parallelFor(int chunks, const std::function<void(int)>& fn);

// Argument checks that throw a TypeError once and let the caller return.
struct Napi {
  napi_env env;
  bool failed = false;

  void fail(const std::string& message) {
    if (!failed) napi_throw_type_error(env, nullptr, message.c_str());
    failed = true;
  }

  template <typename T>
  T* typedArray(napi_value v, napi_typedarray_type want, size_t* length, const char* what) {
    bool is = false;
    napi_is_typedarray(env, v, &is);
    if (!is) {
      fail(std::string(what) + " must be a typed array");
      return nullptr;
    }
    napi_typedarray_type type;
    void* data = nullptr;
    napi_get_typedarray_info(env, v, &type, length, &data, nullptr, nullptr);
    if (type != want) {
      fail(std::string(what) + " has the wrong element type");
      return nullptr;
    }
    return static_cast<T*>(data);
  }

  int integer(napi_value v, const char* what) {
    int32_t out = 0;
    if (napi_get_value_int32(env, v, &out) != napi_ok || out < 0) fail(std::string(what) + " must be a non-negative integer");
    return out;
  }
};


// The call's arguments into args; false (with a TypeError naming `usage`) unless there are exactly `count`.
bool callArgs(Napi& n, napi_callback_info info, napi_value* args, size_t count, const char* usage);

napi_value undefinedValue(napi_env env);

napi_value CreateLayer(napi_env env, napi_callback_info info);
napi_value LayerStep(napi_env env, napi_callback_info info);
napi_value Attend(napi_env env, napi_callback_info info);

}  // namespace cm
