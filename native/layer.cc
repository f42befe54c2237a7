// One LLaMA / Mistral / Qwen2 decoder layer for one new token, as the engine's layer graph computes
// it (models/decoder-graph.ts): RMSNorm, q/k/v from one stacked product, rotate-half RoPE from the
// caller's cos/sin line, grouped-query attention over the KV cache ([kvHeads, capacity, headDim],
// the new token written at slot `length`), the output projection, RMSNorm, SwiGLU from the stacked
// gate/up product, the down projection, both residuals. The FFN may run on core neurons only:
// the gate/up rows of the given neurons and a down projection packed from their columns.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace cm {
namespace {

struct Layer {
  int hidden, heads, kvHeads, headDim, ffn;
  float eps;
  const float* inputNorm;
  const float* postNorm;
  Matrix qkv, o, gateUp, down;
  const float* qkvBias;
  const float* oBias;
  const float* gateUpBias;
  const float* downBias;
  std::vector<napi_ref> refs;  // keeps the JavaScript arrays these point into alive
};

void rmsNorm(const float* x, const float* w, float eps, int n, float* out) {
  double sum = 0;
  for (int i = 0; i < n; i++) sum += static_cast<double>(x[i]) * x[i];
  const float inv = 1.f / std::sqrt(static_cast<float>(sum / n) + eps);
  for (int i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
}

void rope(float* x, int heads, int headDim, const float* cos, const float* sin) {
  const int half = headDim / 2;
  for (int h = 0; h < heads; h++) {
    float* v = x + h * headDim;
    for (int i = 0; i < half; i++) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void addBias(float* x, const float* b, int n) {
  if (b != nullptr) for (int i = 0; i < n; i++) x[i] += b[i];
}

void finalize(napi_env env, void* data, void*) {
  Layer* layer = static_cast<Layer*>(data);
  for (napi_ref ref : layer->refs) napi_delete_reference(env, ref);
  delete layer;
}

// A typed array property of `obj` (null/undefined allowed when `optional`), kept alive by a reference.
template <typename T>
const T* field(Napi& n, napi_value obj, const char* name, napi_typedarray_type type, size_t want, bool optional, Layer& layer) {
  napi_value v;
  napi_valuetype kind;
  if (napi_get_named_property(n.env, obj, name, &v) != napi_ok || napi_typeof(n.env, v, &kind) != napi_ok) {
    n.fail(std::string("cannot read ") + name);
    return nullptr;
  }
  if (optional && (kind == napi_null || kind == napi_undefined)) return nullptr;
  size_t length = 0;
  const T* data = n.typedArray<T>(v, type, &length, name);
  if (data != nullptr && want != 0 && length != want) n.fail(std::string(name) + " has the wrong length");
  if (n.failed) return nullptr;
  napi_ref ref;
  napi_create_reference(n.env, v, 1, &ref);
  layer.refs.push_back(ref);
  return data;
}

int intField(Napi& n, napi_value obj, const char* name) {
  napi_value v;
  if (napi_get_named_property(n.env, obj, name, &v) != napi_ok) {
    n.fail(std::string("cannot read ") + name);
    return 0;
  }
  return n.integer(v, name);
}

// { bits, rows, cols, data, scales } -> a Matrix whose arrays are checked and kept alive.
Matrix matrix(Napi& n, napi_value obj, const char* name, int rows, int cols, Layer& layer) {
  napi_value m;
  if (napi_get_named_property(n.env, obj, name, &m) != napi_ok) {
    n.fail(std::string("cannot read ") + name);
    return {};
  }
  const int bits = intField(n, m, "bits");
  if (!n.failed && (bits != 8 && bits != 4)) n.fail(std::string(name) + ".bits must be 8 or 4");
  if (!n.failed && (intField(n, m, "rows") != rows || intField(n, m, "cols") != cols)) n.fail(std::string(name) + " has the wrong shape");
  if (n.failed) return {};
  const int blocks = (cols + kBlock - 1) / kBlock;
  const uint8_t* data = field<uint8_t>(n, m, "data", napi_uint8_array, rowBytes(bits, cols) * rows, false, layer);
  const float* scales = field<float>(n, m, "scales", napi_float32_array, bits == 8 ? rows : static_cast<size_t>(rows) * blocks, false, layer);
  return Matrix{bits, rows, cols, data, scales};
}

}  // namespace

// createLayer(config { hidden, heads, kvHeads, headDim, ffn, eps }, weights) -> a handle for layerStep
napi_value CreateLayer(napi_env env, napi_callback_info info) {
  napi_value args[2];
  Napi n{env};
  if (!callArgs(n, info, args, 2, "createLayer(config, weights)")) return nullptr;
  Layer* layer = new Layer();
  Layer& l = *layer;
  l.hidden = intField(n, args[0], "hidden");
  l.heads = intField(n, args[0], "heads");
  l.kvHeads = intField(n, args[0], "kvHeads");
  l.headDim = intField(n, args[0], "headDim");
  l.ffn = intField(n, args[0], "ffn");
  napi_value epsValue;
  double eps = 0;
  if (!n.failed && (napi_get_named_property(env, args[0], "eps", &epsValue) != napi_ok || napi_get_value_double(env, epsValue, &eps) != napi_ok)) n.fail("eps must be a number");
  l.eps = static_cast<float>(eps);
  if (!n.failed && (l.heads == 0 || l.kvHeads == 0 || l.heads % l.kvHeads != 0 || l.headDim % 2 != 0)) n.fail("heads must be a multiple of kvHeads, headDim even");
  const int qkvRows = (l.heads + 2 * l.kvHeads) * l.headDim;
  if (!n.failed) {
    l.inputNorm = field<float>(n, args[1], "inputNorm", napi_float32_array, l.hidden, false, l);
    l.postNorm = field<float>(n, args[1], "postNorm", napi_float32_array, l.hidden, false, l);
    l.qkv = matrix(n, args[1], "qkv", qkvRows, l.hidden, l);
    l.o = matrix(n, args[1], "o", l.hidden, l.heads * l.headDim, l);
    l.gateUp = matrix(n, args[1], "gateUp", 2 * l.ffn, l.hidden, l);
    l.down = matrix(n, args[1], "down", l.hidden, l.ffn, l);
    l.qkvBias = field<float>(n, args[1], "qkvBias", napi_float32_array, qkvRows, true, l);
    l.oBias = field<float>(n, args[1], "oBias", napi_float32_array, l.hidden, true, l);
    l.gateUpBias = field<float>(n, args[1], "gateUpBias", napi_float32_array, 2 * l.ffn, true, l);
    l.downBias = field<float>(n, args[1], "downBias", napi_float32_array, l.hidden, true, l);
  }
  if (n.failed) {
    finalize(env, layer, nullptr);
    return nullptr;
  }
  napi_value handle;
  napi_create_external(env, layer, finalize, nullptr, &handle);
  return handle;
}

// layerStep(layer, h, kCache, vCache, capacity, length, cos, sin, neurons | null, compactDown | null)
// h [hidden] is updated in place; the new key and value go to slot `length` of the caches.
napi_value LayerStep(napi_env env, napi_callback_info info) {
  napi_value args[10];
  Napi n{env};
  if (!callArgs(n, info, args, 10, "layerStep(layer, h, kCache, vCache, capacity, length, cos, sin, neurons, compactDown)")) return nullptr;
  Layer* layer = nullptr;
  if (napi_get_value_external(env, args[0], reinterpret_cast<void**>(&layer)) != napi_ok || layer == nullptr) {
    n.fail("layer must come from createLayer");
    return nullptr;
  }
  const Layer& l = *layer;
  size_t hLength = 0, kLength = 0, vLength = 0, cosLength = 0, sinLength = 0, neuronCount = 0;
  float* h = n.typedArray<float>(args[1], napi_float32_array, &hLength, "h");
  float* kCache = n.failed ? nullptr : n.typedArray<float>(args[2], napi_float32_array, &kLength, "kCache");
  float* vCache = n.failed ? nullptr : n.typedArray<float>(args[3], napi_float32_array, &vLength, "vCache");
  const int capacity = n.failed ? 0 : n.integer(args[4], "capacity");
  const int length = n.failed ? 0 : n.integer(args[5], "length");
  const float* cos = n.failed ? nullptr : n.typedArray<float>(args[6], napi_float32_array, &cosLength, "cos");
  const float* sin = n.failed ? nullptr : n.typedArray<float>(args[7], napi_float32_array, &sinLength, "sin");
  napi_valuetype neuronsType = napi_null, downType = napi_null;
  if (!n.failed) napi_typeof(env, args[8], &neuronsType);
  if (!n.failed) napi_typeof(env, args[9], &downType);
  const bool compact = neuronsType != napi_null && neuronsType != napi_undefined;
  const int32_t* neurons = compact && !n.failed ? n.typedArray<int32_t>(args[8], napi_int32_array, &neuronCount, "neurons") : nullptr;
  Layer scratch;  // holds the compact down's references for this call only
  Matrix down = l.down;
  if (compact && !n.failed && downType != napi_object) n.fail("neurons need their compactDown");
  if (compact && !n.failed) {
    napi_value holder;
    napi_create_object(env, &holder);
    napi_set_named_property(env, holder, "down", args[9]);
    down = matrix(n, holder, "down", l.hidden, static_cast<int>(neuronCount), scratch);
  }
  const size_t cacheSize = static_cast<size_t>(l.kvHeads) * capacity * l.headDim;
  if (!n.failed && hLength != static_cast<size_t>(l.hidden)) n.fail("h must hold hidden numbers");
  if (!n.failed && (kLength < cacheSize || vLength < cacheSize)) n.fail("the caches must hold kvHeads x capacity x headDim numbers");
  if (!n.failed && length >= capacity) n.fail("the cache is full");
  if (!n.failed && (cosLength != static_cast<size_t>(l.headDim / 2) || sinLength != cosLength)) n.fail("cos and sin must hold headDim / 2 numbers");
  for (size_t i = 0; !n.failed && i < neuronCount; i++) {
    if (neurons[i] < 0 || neurons[i] >= l.ffn) n.fail("neurons holds an index outside the FFN");
  }
  for (napi_ref ref : scratch.refs) napi_delete_reference(env, ref);
  if (n.failed) return nullptr;

  const int hd = l.headDim, nh = l.heads, kvh = l.kvHeads;
  std::vector<float> xn(l.hidden), qkv((nh + 2 * kvh) * hd), context(nh * hd), attn(l.hidden);
  rmsNorm(h, l.inputNorm, l.eps, l.hidden, xn.data());
  gemv(l.qkv, xn.data(), qkv.data(), nullptr, qkv.size());
  addBias(qkv.data(), l.qkvBias, static_cast<int>(qkv.size()));
  float* q = qkv.data();
  float* k = q + nh * hd;
  float* v = k + kvh * hd;
  rope(q, nh, hd, cos, sin);
  rope(k, kvh, hd, cos, sin);
  for (int j = 0; j < kvh; j++) {
    std::copy(k + j * hd, k + (j + 1) * hd, kCache + (static_cast<size_t>(j) * capacity + length) * hd);
    std::copy(v + j * hd, v + (j + 1) * hd, vCache + (static_cast<size_t>(j) * capacity + length) * hd);
  }
  const int keys = length + 1;
  attend(q, kCache, vCache, nh, kvh, capacity, keys, hd, context.data());
  gemv(l.o, context.data(), attn.data(), nullptr, attn.size());
  addBias(attn.data(), l.oBias, l.hidden);
  for (int i = 0; i < l.hidden; i++) h[i] += attn[i];

  rmsNorm(h, l.postNorm, l.eps, l.hidden, xn.data());
  const int width = compact ? static_cast<int>(neuronCount) : l.ffn;
  std::vector<float> gateUp(2 * width), act(width), out(l.hidden);
  if (compact) {
    std::vector<int32_t> rows(2 * width);
    for (int j = 0; j < width; j++) {
      rows[j] = neurons[j];
      rows[width + j] = l.ffn + neurons[j];
    }
    gemv(l.gateUp, xn.data(), gateUp.data(), rows.data(), rows.size());
    if (l.gateUpBias != nullptr) {
      for (int j = 0; j < width; j++) {
        gateUp[j] += l.gateUpBias[neurons[j]];
        gateUp[width + j] += l.gateUpBias[l.ffn + neurons[j]];
      }
    }
  } else {
    gemv(l.gateUp, xn.data(), gateUp.data(), nullptr, gateUp.size());
    addBias(gateUp.data(), l.gateUpBias, 2 * width);
  }
  for (int j = 0; j < width; j++) {
    const float g = gateUp[j];
    act[j] = g / (1.f + std::exp(-g)) * gateUp[width + j];
  }
  if (width > 0) gemv(down, act.data(), out.data(), nullptr, out.size());
  addBias(out.data(), l.downBias, l.hidden);
  for (int i = 0; i < l.hidden; i++) h[i] += out[i];
  return undefinedValue(env);
}

}  // namespace cm
