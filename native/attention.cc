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

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// p[t] = e^(p[t] - max) for each key; returns their sum (the softmax's denominator).
__attribute__((always_inline)) inline float exponentiate(float* __restrict p, int keys, float max) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int t = 0; t < keys; t++) {
    p[t] = expNonPositive(p[t] - max);
    sum += p[t];
  }
  return sum;
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
  const float sum = exponentiate(p, keys, max);
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
// The AVX-512 copy for head sizes of 16 x C values (64 and 128 cover the models people run): q and
// the output kept in registers, each key's score one reduction, the weighted sum of values in two
// interleaved accumulators so consecutive keys do not wait on each other's additions.
template <int C>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))) void attendRegisters(const float* q, const float* k, const float* v, int keys, float scale,
                                                                                      float* p, float* out) {
  constexpr int hd = 16 * C;
  __m512 qv[C];
  for (int c = 0; c < C; c++) qv[c] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * c), _mm512_set1_ps(scale));
  float max = -INFINITY;
  for (int t = 0; t < keys; t++) {
    const float* kt = k + static_cast<size_t>(t) * hd;
    __m512 a = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kt));
    for (int c = 1; c < C; c++) a = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kt + 16 * c), a);
    p[t] = _mm512_reduce_add_ps(a);
    max = std::max(max, p[t]);
  }
  const float sum = exponentiate(p, keys, max);
  __m512 even[C], odd[C];
  for (int c = 0; c < C; c++) even[c] = odd[c] = _mm512_setzero_ps();
  int t = 0;
  for (; t + 1 < keys; t += 2) {
    const float* v0 = v + static_cast<size_t>(t) * hd;
    const __m512 w0 = _mm512_set1_ps(p[t]), w1 = _mm512_set1_ps(p[t + 1]);
    for (int c = 0; c < C; c++) {
      even[c] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(v0 + 16 * c), even[c]);
      odd[c] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(v0 + hd + 16 * c), odd[c]);
    }
  }
  if (t < keys) {
    const __m512 w0 = _mm512_set1_ps(p[t]);
    for (int c = 0; c < C; c++) even[c] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(v + static_cast<size_t>(t) * hd + 16 * c), even[c]);
  }
  const __m512 inv = _mm512_set1_ps(1.f / sum);
  for (int c = 0; c < C; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(_mm512_add_ps(even[c], odd[c]), inv));
}
#endif

void attendPortable(const float* q, const float* k, const float* v, int keys, int hd, float scale, float* p, float* out) {
  attendBody(q, k, v, keys, hd, scale, p, out);
}

void attendHead(const float* q, const float* k, const float* v, int keys, int headDim, float scale, float* p, float* out) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (currentPath() == Path::Avx512Vnni && headDim == 64) return attendRegisters<4>(q, k, v, keys, scale, p, out);
  if (currentPath() == Path::Avx512Vnni && headDim == 128) return attendRegisters<8>(q, k, v, keys, scale, p, out);
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
