// One query head's attention over the KV cache, for one new token. The loops are written once
// (attendBody, always inlined) and compiled three times, with AVX-512, AVX2 + FMA and the
// baseline instruction set, so each copy is vectorised for its CPU; the copy the products use
// (currentPath) is the one that runs. The exponential is a polynomial the compiler vectorises
// (std::exp is a library call it does not).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace cm {
namespace {

// e^x for x <= 0 (softmax arguments after the max is taken off), relative error ~2e-7: 2^n e^r
// with |r| <= ln 2 / 2 and a degree-6 polynomial for e^r (Cephes' expf coefficients).
__attribute__((always_inline)) inline float expNonPositive(float x) {
  x = std::max(x, -87.f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float twoN;
  std::memcpy(&twoN, &bits, sizeof twoN);
  return y * twoN;
}

__attribute__((always_inline)) inline void attendBody(const float* __restrict q, const float* __restrict k, const float* __restrict v,
                                                       int keys, int hd, float scale, float* __restrict p, float* __restrict out) {
  float max = -INFINITY;
  for (int t = 0; t < keys; t++) {
    const float* kt = k + static_cast<size_t>(t) * hd;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < hd; i++) s += q[i] * kt[i];
    p[t] = s * scale;
    max = std::max(max, p[t]);
  }
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int t = 0; t < keys; t++) {
    p[t] = expNonPositive(p[t] - max);
    sum += p[t];
  }
  const float inv = 1.f / sum;
  std::fill(out, out + hd, 0.f);
  for (int t = 0; t < keys; t++) {
    const float w = p[t] * inv;
    const float* vt = v + static_cast<size_t>(t) * hd;
#pragma omp simd
    for (int i = 0; i < hd; i++) out[i] += w * vt[i];
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))) void attendAvx512(const float* q, const float* k, const float* v, int keys, int hd,
                                                                                   float scale, float* p, float* out) {
  attendBody(q, k, v, keys, hd, scale, p, out);
}

__attribute__((target("avx2,fma"))) void attendAvx2(const float* q, const float* k, const float* v, int keys, int hd, float scale, float* p,
                                                    float* out) {
  attendBody(q, k, v, keys, hd, scale, p, out);
}
#endif

void attendPortable(const float* q, const float* k, const float* v, int keys, int hd, float scale, float* p, float* out) {
  attendBody(q, k, v, keys, hd, scale, p, out);
}

void attendHead(const float* q, const float* k, const float* v, int keys, int headDim, float scale, float* p, float* out) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (currentPath() == Path::Avx512Vnni) return attendAvx512(q, k, v, keys, headDim, scale, p, out);
  if (currentPath() == Path::Avx2) return attendAvx2(q, k, v, keys, headDim, scale, p, out);
#endif
  attendPortable(q, k, v, keys, headDim, scale, p, out);
}

}  // namespace

void attend(const float* q, const float* kCache, const float* vCache, int heads, int kvHeads, int capacity, int keys, int headDim, float* context) {
  const int group = heads / kvHeads;
  const float scale = 1.f / std::sqrt(static_cast<float>(headDim));
  std::vector<float> scores(static_cast<size_t>(heads) * keys);
  parallelFor(heads, [&](int head) {
    const size_t cache = static_cast<size_t>(head / group) * capacity * headDim;
    attendHead(q + static_cast<size_t>(head) * headDim, kCache + cache, vCache + cache, keys, headDim, scale, scores.data() + static_cast<size_t>(head) * keys,
               context + static_cast<size_t>(head) * headDim);
  });
}

// attend(q, kCache, vCache, heads, kvHeads, capacity, keys, context): the attention alone, for tests.
napi_value Attend(napi_env env, napi_callback_info info) {
  napi_value args[8];
  Napi n{env};
  if (!callArgs(n, info, args, 8, "attend(q, kCache, vCache, heads, kvHeads, capacity, keys, context)")) return nullptr;
  size_t qLength = 0, kLength = 0, vLength = 0, outLength = 0;
  const float* q = n.typedArray<float>(args[0], napi_float32_array, &qLength, "q");
  const float* k = n.failed ? nullptr : n.typedArray<float>(args[1], napi_float32_array, &kLength, "kCache");
  const float* v = n.failed ? nullptr : n.typedArray<float>(args[2], napi_float32_array, &vLength, "vCache");
  const int heads = n.failed ? 0 : n.integer(args[3], "heads");
  const int kvHeads = n.failed ? 0 : n.integer(args[4], "kvHeads");
  const int capacity = n.failed ? 0 : n.integer(args[5], "capacity");
  const int keys = n.failed ? 0 : n.integer(args[6], "keys");
  float* out = n.failed ? nullptr : n.typedArray<float>(args[7], napi_float32_array, &outLength, "context");
  if (!n.failed && (heads == 0 || kvHeads == 0 || heads % kvHeads != 0)) n.fail("heads must be a positive multiple of kvHeads");
  if (!n.failed && (qLength % heads != 0 || qLength == 0)) n.fail("q must hold heads x headDim numbers");
  const int headDim = n.failed ? 0 : static_cast<int>(qLength / heads);
  if (!n.failed && outLength != qLength) n.fail("context must be as long as q");
  if (!n.failed && (keys == 0 || keys > capacity)) n.fail("keys must be 1 .. capacity");
  const size_t cacheSize = static_cast<size_t>(kvHeads) * capacity * headDim;
  if (!n.failed && (kLength < cacheSize || vLength < cacheSize)) n.fail("the caches must hold kvHeads x capacity x headDim numbers");
  if (n.failed) return nullptr;
  attend(q, k, v, heads, kvHeads, capacity, keys, headDim, out);
  return undefinedValue(env);
}

}  // namespace cm
