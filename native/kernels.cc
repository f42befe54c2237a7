// The decode kernels: int8 and int4 matrix-vector products over weights packed for them, for
// every row or a given subset of rows, on a persistent pool of worker threads. Activations are
// quantized to int8 in blocks of 32 on the fly (as llama.cpp's q8_0). One build runs on any
// x86-64 CPU: the AVX-512 VNNI and AVX2 paths are compiled with target attributes and chosen at
// run time; a portable path serves every other CPU.
//
// Packed layouts (made by pack*): int8 rows [rows, cols] of u8 = w + 64 (w in -63..63, so the
// product with an s8 activation fits VNNI's u8 x s8; the +64 is taken off with the block sums of
// the activations), one fp32 scale per row, K padded to a multiple of 64 with w = 0. int4 weights
// need no packing: MatMulNBits' layout [rows, blocks, 16] (two values a byte, the even index in the
// low nibble, q in 0..15 for w = q - 8) with one fp32 scale per block is read as it is, the
// nibbles split in registers and the activations of each block ordered evens first to match.
#include "kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CM_X86 1
#endif

namespace cm {

// Each block's values reordered as its int4 bytes hold them: the 16 even positions, then the 16 odd.
void evensFirst(QuantizedX& x) {
  std::vector<int8_t> reordered(x.q.size());
  for (size_t b = 0; b < x.q.size() / kBlock; b++) {
    for (int j = 0; j < kBlock / 2; j++) {
      reordered[b * kBlock + j] = x.q[b * kBlock + 2 * j];
      reordered[b * kBlock + kBlock / 2 + j] = x.q[b * kBlock + 2 * j + 1];
    }
  }
  x.q.swap(reordered);
}

void quantizeX(const float* x, int k, QuantizedX& out) {
  const int kp = padded(k);
  const int blocks = kp / kBlock;
  out.q.assign(kp, 0);
  out.scale.assign(blocks, 0.f);
  out.sum.assign(blocks, 0);
  for (int b = 0; b < blocks; b++) {
    float max = 0.f;
    for (int i = b * kBlock; i < std::min(k, (b + 1) * kBlock); i++) max = std::max(max, std::fabs(x[i]));
    const float scale = max / 127.f;
    const float inv = scale > 0.f ? 1.f / scale : 0.f;
    int32_t sum = 0;
    for (int i = b * kBlock; i < std::min(k, (b + 1) * kBlock); i++) {
      const int v = static_cast<int>(std::nearbyint(x[i] * inv));
      out.q[i] = static_cast<int8_t>(v);
      sum += v;
    }
    out.scale[b] = scale;
    out.sum[b] = sum;
  }
}

// ---- row dot products: sum over blocks of xscale[b] * (dot(w_b, xq_b) - offset * xsum[b]) ----

float dotInt8Portable(const uint8_t* w, const QuantizedX& x, int kp) {
  float acc = 0.f;
  for (int b = 0; b < kp / kBlock; b++) {
    int32_t s = 0;
    for (int i = 0; i < kBlock; i++) s += static_cast<int32_t>(w[b * kBlock + i]) * x.q[b * kBlock + i];
    acc += x.scale[b] * static_cast<float>(s - 64 * x.sum[b]);
  }
  return acc;
}

// w: blocks of 16 bytes; xq: the activations evensFirst, from the same block on.
float int4Blocks(const uint8_t* w, const float* wscale, const int8_t* xq, const float* xscale, const int32_t* xsum, int blocks) {
  float acc = 0.f;
  for (int b = 0; b < blocks; b++) {
    int32_t s = 0;
    for (int j = 0; j < kBlock / 2; j++) s += (w[b * 16 + j] & 0x0f) * xq[b * kBlock + j] + (w[b * 16 + j] >> 4) * xq[b * kBlock + kBlock / 2 + j];
    acc += wscale[b] * xscale[b] * static_cast<float>(s - 8 * xsum[b]);
  }
  return acc;
}

float dotInt4Portable(const uint8_t* w, const float* wscale, const QuantizedX& x, int blocks) {
  return int4Blocks(w, wscale, x.q.data(), x.scale.data(), x.sum.data(), blocks);
}

#ifdef CM_X86
// Four rows at once against one activation vector: each 64-value step's activations and block
// scales (`pairs`: lanes 0-7 the scale of block 2j, lanes 8-15 of block 2j + 1) are loaded once
// for the four rows, and the +64 offset (`offset`, the same for every row) is taken off at the end.
// `next`: the rows to prefetch.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dotInt8x4Vnni(const uint8_t* const* w, const uint8_t* const* next, const int8_t* xq, const float* pairs, float offset, int kp, float* out) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  for (int i = 0; i < kp; i += 64) {
    for (int j = 0; j < 4; j++) _mm_prefetch(reinterpret_cast<const char*>(next[j] + i), _MM_HINT_T0);
    const __m512i x = _mm512_loadu_si512(xq + i);
    const __m512 s = _mm512_loadu_ps(pairs + i / 4);
    a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(w[0] + i), x)), s, a0);
    a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(w[1] + i), x)), s, a1);
    a2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(w[2] + i), x)), s, a2);
    a3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(w[3] + i), x)), s, a3);
  }
  out[0] = _mm512_reduce_add_ps(a0) - offset;
  out[1] = _mm512_reduce_add_ps(a1) - offset;
  out[2] = _mm512_reduce_add_ps(a2) - offset;
  out[3] = _mm512_reduce_add_ps(a3) - offset;
}

// Four int4 rows at once, four blocks (128 values, 64 bytes a row) a step: the low nibbles of the
// 64 bytes are the four blocks' even positions, the high nibbles their odd ones, so two products
// against the activations ordered to match (`xg`: per group of four blocks their evens, then
// their odds) need no shuffle. Lanes 4j .. 4j + 3 hold block j: each takes 2 x its block's sum
// off in integers (the +8 offset over 4 lanes, `off`), then scales by weight x activation scale
// (`xs`, spread likewise). Blocks past the last group of four go through int4Blocks.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dotInt4x4Vnni(const uint8_t* const* w, const uint8_t* const* next, const float* const* ws, const int8_t* xg,
                                                                            const float* xs, const int32_t* off, const QuantizedX& x, int blocks, float* out) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const int groups = blocks / 4;
  for (int g = 0; g < groups; g++) {
    const __m512i evens = _mm512_loadu_si512(xg + g * 128);
    const __m512i odds = _mm512_loadu_si512(xg + g * 128 + 64);
    const __m512 sv = _mm512_loadu_ps(xs + g * 16);
    const __m512i offset = _mm512_loadu_si512(off + g * 16);
    for (int r = 0; r < 4; r++) {
      _mm_prefetch(reinterpret_cast<const char*>(next[r] + g * 64), _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(w[r] + g * 64);
      __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v, low), evens);
      p = _mm512_dpbusd_epi32(p, _mm512_and_si512(_mm512_srli_epi16(v, 4), low), odds);
      const __m512 wsv = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_loadu_ps(ws[r] + g * 4)));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(p, offset)), _mm512_mul_ps(wsv, sv), acc[r]);
    }
  }
  const int b = groups * 4;
  for (int r = 0; r < 4; r++) {
    const float tail = b < blocks ? int4Blocks(w[r] + b * 16, ws[r] + b, x.q.data() + b * kBlock, x.scale.data() + b, x.sum.data() + b, blocks - b) : 0.f;
    out[r] = _mm512_reduce_add_ps(acc[r]) + tail;
  }
}

__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// 32 u8 x s8 products summed in fours into 8 int32 lanes; u8 (<= 127 for int8, <= 15 for int4)
// x s8 pairs fit maddubs' saturating int16.
__attribute__((target("avx2,fma"))) inline __m256i dot32Avx2(__m256i u, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}

// dotInt8x4Vnni's AVX2 twin: a block of 32 a step.
__attribute__((target("avx2,fma"))) void dotInt8x4Avx2(const uint8_t* const* w, const uint8_t* const* next, const QuantizedX& x, float offset, int kp, float* out) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int b = 0; b < kp / kBlock; b++) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q.data() + b * kBlock));
    const __m256 s = _mm256_broadcast_ss(x.scale.data() + b);
    for (int r = 0; r < 4; r++) {
      if (b % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(next[r] + b * kBlock), _MM_HINT_T0);
      const __m256i p = dot32Avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + b * kBlock)), xv);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[r]);
    }
  }
  for (int r = 0; r < 4; r++) out[r] = hsum256(acc[r]) - offset;
}

// dotInt4x4Vnni's AVX2 twin: a block a step; each lane takes its block's sum off in integers (the
// +8 offset over the block's 8 lanes), then scales by weight x activation scale.
__attribute__((target("avx2,fma"))) void dotInt4x4Avx2(const uint8_t* const* w, const uint8_t* const* next, const float* const* ws, const QuantizedX& x, int blocks, float* out) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m128i low = _mm_set1_epi8(0x0f);
  for (int b = 0; b < blocks; b++) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q.data() + b * kBlock));
    const __m256 xs = _mm256_broadcast_ss(x.scale.data() + b);
    const __m256i offset = _mm256_set1_epi32(x.sum[b]);
    for (int r = 0; r < 4; r++) {
      if (b % 4 == 0) _mm_prefetch(reinterpret_cast<const char*>(next[r] + b * 16), _MM_HINT_T0);
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + b * 16));
      const __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), low), _mm_and_si128(v, low));
      const __m256i p = _mm256_sub_epi32(dot32Avx2(u, xv), offset);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(_mm256_broadcast_ss(ws[r] + b), xs), acc[r]);
    }
  }
  for (int r = 0; r < 4; r++) out[r] = hsum256(acc[r]);
}

#endif

#if defined(CM_X86) && defined(__unix__)
sigjmp_buf gProbeJump;

void onProbeFault(int) { siglongjmp(gProbeJump, 1); }

// Whether `probe` runs and returns true: CPUID may list extensions that a virtual machine does not
// let a process execute (some of these hosts list AMX and refuse it).
bool executes(bool (*probe)()) {
  struct sigaction fault {}, old {};
  fault.sa_handler = onProbeFault;
  sigemptyset(&fault.sa_mask);
  sigaction(SIGILL, &fault, &old);
  volatile bool ok = false;
  if (sigsetjmp(gProbeJump, 1) == 0) ok = probe();
  sigaction(SIGILL, &old, nullptr);
  return ok;
}
#elif defined(CM_X86)
// Without POSIX signals the probe runs unguarded (CPUID alone vouches for it).
bool executes(bool (*probe)()) { return probe(); }
#endif

#ifdef CM_X86
template <Path path>
bool productComputes() {
  QuantizedX x;
  x.q.assign(64, 1);
  x.scale.assign(2, 1.f);
  x.sum.assign(2, 32);
  const std::vector<uint8_t> w(64, 65);  // weights of 1: each product is 64
  const uint8_t* rows[4] = {w.data(), w.data(), w.data(), w.data()};
  const std::vector<float> pairs(16, 1.f);
  float dots[4] = {0, 0, 0, 0};
  if (path == Path::Avx512Vnni) dotInt8x4Vnni(rows, rows, x.q.data(), pairs.data(), 64.f * 64.f, 64, dots);
  else dotInt8x4Avx2(rows, rows, x, 64.f * 64.f, 64, dots);
  return dots[0] == 64.f && dots[3] == 64.f;
}

// Columns 1, 3, 5, ... of 0 .. 63 kept by a byte compress: 1, 3, 5, ...
__attribute__((target("avx512f,avx512bw,avx512vbmi2"))) bool compressComputes() {
  uint8_t in[64], out[64] = {0};
  for (int i = 0; i < 64; i++) in[i] = static_cast<uint8_t>(i);
  _mm512_storeu_si512(out, _mm512_maskz_compress_epi8(0xAAAAAAAAAAAAAAAAull, _mm512_loadu_si512(in)));
  return out[0] == 1 && out[31] == 63 && out[32] == 0;
}
#endif

// The best path the CPU lists and the process can run.
Path detectPath() {
#ifdef CM_X86
  __builtin_cpu_init();
  const bool vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
  if (vnni && executes(productComputes<Path::Avx512Vnni>)) return Path::Avx512Vnni;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && executes(productComputes<Path::Avx2>)) return Path::Avx2;
#endif
  return Path::Portable;
}

Path gPath = detectPath();

// Whether the AVX-512 path may also compress bytes (VBMI2: Ice Lake, Zen 4 and later).
bool detectCompress() {
#ifdef CM_X86
  return gPath == Path::Avx512Vnni && __builtin_cpu_supports("avx512vbmi2") && executes(compressComputes);
#else
  return false;
#endif
}

const bool gCompress = detectCompress();

Path currentPath() { return gPath; }

const char* pathName(Path p) {
  switch (p) {
    case Path::Avx512Vnni: return "avx512-vnni";
    case Path::Avx2: return "avx2";
    default: return "portable";
  }
}

// ---- a persistent pool: workers wait for a generation number, take chunks of rows, report done ----

class Pool {
 public:
  explicit Pool(int threads) { resize(threads); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    stop();
    quit_ = false;
    for (int i = 1; i < threads; i++) workers_.emplace_back([this] { work(); });
  }

  // Runs fn(chunk) for chunk in 0 .. chunks - 1 across the pool and this thread.
  void run(int chunks, const std::function<void(int)>& fn) {
    if (workers_.empty() || chunks <= 1) {
      for (int c = 0; c < chunks; c++) fn(c);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      chunks_ = chunks;
      next_.store(0);
      done_.store(0);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    take();
    while (done_.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;
  }

 private:
  void take() {
    for (int c; (c = next_.fetch_add(1)) < chunks_;) {
      (*job_)(c);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  void work() {
    uint64_t seen = generation_.load();
    for (;;) {
      // Spin briefly: a decode step issues its products back to back.
      for (int i = 0; i < 20000 && generation_.load(std::memory_order_acquire) == seen && !quit_.load(); i++) _mm_pause_portable();
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_.load() || generation_.load() != seen; });
      }
      if (quit_.load()) return;
      seen = generation_.load();
      const std::function<void(int)>* job;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        job = job_;
      }
      if (job != nullptr) take();
    }
  }

  static void _mm_pause_portable() {
#ifdef CM_X86
    _mm_pause();
#endif
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> quit_{false};
  const std::function<void(int)>* job_ = nullptr;
  int chunks_ = 0;
};

Pool* gPool = nullptr;

void parallelFor(int chunks, const std::function<void(int)>& fn) { gPool->run(chunks, fn); }

// Rows per chunk handed to a thread: enough to amortise the hand-off, few enough to balance.
constexpr int kRowsPerChunk = 32;

// Rows taken four at a time by the 4-row kernels: for each quad, its rows' indices (a short last
// quad repeats its first row), and the four rows after it (the current ones where there are no
// more), which the kernel prefetches while it computes, since a row of a few hundred bytes is
// over before the hardware's prefetchers pick up its stream.
struct Quad {
  size_t i, end;
  size_t r[4];
  size_t next[4];
};

template <typename Fn>
void forQuads(const int32_t* subset, size_t count, Fn fn) {
  const int chunks = static_cast<int>((count + kRowsPerChunk - 1) / kRowsPerChunk);
  const auto row = [&](size_t index) { return subset != nullptr ? static_cast<size_t>(subset[index]) : index; };
  parallelFor(chunks, [&](int chunk) {
    const size_t begin = static_cast<size_t>(chunk) * kRowsPerChunk, end = std::min(count, begin + kRowsPerChunk);
    for (size_t i = begin; i < end; i += 4) {
      Quad quad{i, end, {}, {}};
      for (int j = 0; j < 4; j++) {
        quad.r[j] = row(i + j < end ? i + j : i);
        quad.next[j] = row(i + 4 + j < count ? i + 4 + j : i);
      }
      fn(quad);
    }
  });
}

#ifdef CM_X86
// The int8 product on the 4-row kernels of the AVX-512 or AVX2 path.
void gemvInt8Quads(const Matrix& m, const QuantizedX& q, int kp, float* out, const int32_t* subset, size_t count) {
  float offset = 0.f;
  for (int b = 0; b < kp / kBlock; b++) offset += q.scale[b] * static_cast<float>(64 * q.sum[b]);
  std::vector<float> pairs;  // AVX-512: each 64-value step's block scales, lanes 0-7 and 8-15
  if (gPath == Path::Avx512Vnni) {
    pairs.resize(kp / 4);
    for (int j = 0; j < kp / 64; j++) {
      for (int lane = 0; lane < 16; lane++) pairs[j * 16 + lane] = q.scale[2 * j + lane / 8];
    }
  }
  forQuads(subset, count, [&](const Quad& quad) {
    const uint8_t *rows[4], *next[4];
    for (int j = 0; j < 4; j++) {
      rows[j] = m.data + quad.r[j] * kp;
      next[j] = m.data + quad.next[j] * kp;
    }
    float dots[4];
    if (gPath == Path::Avx512Vnni) dotInt8x4Vnni(rows, next, q.q.data(), pairs.data(), offset, kp, dots);
    else dotInt8x4Avx2(rows, next, q, offset, kp, dots);
    for (size_t j = 0; j < 4 && quad.i + j < quad.end; j++) out[quad.i + j] = m.scales[quad.r[j]] * dots[j];
  });
}

// The int4 product on the 4-row kernels (q: the activations evensFirst).
void gemvInt4Quads(const Matrix& m, const QuantizedX& q, int blocks, float* out, const int32_t* subset, size_t count) {
  // AVX-512: the activations of each group of four blocks as dotInt4x4Vnni reads them, and
  // per-lane copies of their blocks' scales and offsets.
  const int groups = gPath == Path::Avx512Vnni ? blocks / 4 : 0;
  std::vector<int8_t> xg(static_cast<size_t>(groups) * 128);
  std::vector<float> xs(static_cast<size_t>(groups) * 16);
  std::vector<int32_t> off(static_cast<size_t>(groups) * 16);
  for (int g = 0; g < groups; g++) {
    for (int j = 0; j < 4; j++) {
      const int8_t* block = q.q.data() + (g * 4 + j) * kBlock;  // evensFirst: 16 evens, then 16 odds
      std::copy(block, block + 16, xg.begin() + g * 128 + j * 16);
      std::copy(block + 16, block + 32, xg.begin() + g * 128 + 64 + j * 16);
      std::fill(xs.begin() + g * 16 + j * 4, xs.begin() + g * 16 + j * 4 + 4, q.scale[g * 4 + j]);
      std::fill(off.begin() + g * 16 + j * 4, off.begin() + g * 16 + j * 4 + 4, 2 * q.sum[g * 4 + j]);
    }
  }
  const size_t bytes = static_cast<size_t>(blocks) * (kBlock / 2);
  forQuads(subset, count, [&](const Quad& quad) {
    const uint8_t *rows[4], *next[4];
    const float* scales[4];
    for (int j = 0; j < 4; j++) {
      rows[j] = m.data + quad.r[j] * bytes;
      next[j] = m.data + quad.next[j] * bytes;
      scales[j] = m.scales + quad.r[j] * blocks;
    }
    float dots[4];
    if (gPath == Path::Avx512Vnni) dotInt4x4Vnni(rows, next, scales, xg.data(), xs.data(), off.data(), q, blocks, dots);
    else dotInt4x4Avx2(rows, next, scales, q, blocks, dots);
    for (size_t j = 0; j < 4 && quad.i + j < quad.end; j++) out[quad.i + j] = dots[j];
  });
}
#endif

void gemv(const Matrix& m, const float* x, float* out, const int32_t* subset, size_t count) {
  const int kp = padded(m.cols);
  const int blocks = (m.cols + kBlock - 1) / kBlock;
  const size_t rowBytes = m.bits == 8 ? static_cast<size_t>(kp) : static_cast<size_t>(blocks) * (kBlock / 2);
  QuantizedX q;
  quantizeX(x, m.cols, q);
  if (m.bits == 4) evensFirst(q);
#ifdef CM_X86
  if (gPath != Path::Portable) {
    if (m.bits == 8) gemvInt8Quads(m, q, kp, out, subset, count);
    else gemvInt4Quads(m, q, blocks, out, subset, count);
    return;
  }
#endif
  const int chunks = static_cast<int>((count + kRowsPerChunk - 1) / kRowsPerChunk);
  parallelFor(chunks, [&](int chunk) {
    const size_t end = std::min(count, static_cast<size_t>(chunk + 1) * kRowsPerChunk);
    for (size_t i = static_cast<size_t>(chunk) * kRowsPerChunk; i < end; i++) {
      const size_t r = subset != nullptr ? static_cast<size_t>(subset[i]) : i;
      out[i] = m.bits == 8 ? m.scales[r] * dotInt8Portable(m.data + r * rowBytes, q, kp) : dotInt4Portable(m.data + r * rowBytes, m.scales + r * blocks, q, blocks);
    }
  });
}

size_t rowBytes(int bits, int cols) { return bits == 8 ? static_cast<size_t>(padded(cols)) : static_cast<size_t>((cols + kBlock - 1) / kBlock) * (kBlock / 2); }

// ---- N-API glue ----

napi_value undefinedValue(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

bool callArgs(Napi& n, napi_callback_info info, napi_value* args, size_t count, const char* usage) {
  size_t argc = count;
  napi_get_cb_info(n.env, info, &argc, args, nullptr, nullptr);
  if (argc != count) n.fail(usage);
  return !n.failed;
}

// packInt8(values: Int8Array [cols, rows] (B = W^T), rows, cols) -> Uint8Array [rows, padded(cols)] of w + 64
napi_value PackInt8(napi_env env, napi_callback_info info) {
  napi_value args[3];
  Napi n{env};
  if (!callArgs(n, info, args, 3, "packInt8(values, rows, cols)")) return nullptr;
  size_t length = 0;
  const int8_t* b = n.typedArray<int8_t>(args[0], napi_int8_array, &length, "values");
  const int rows = n.failed ? 0 : n.integer(args[1], "rows");
  const int cols = n.failed ? 0 : n.integer(args[2], "cols");
  if (!n.failed && length != static_cast<size_t>(rows) * cols) n.fail("values must hold rows * cols numbers");
  if (n.failed) return nullptr;
  const int kp = padded(cols);
  void* data = nullptr;
  napi_value buffer, out;
  napi_create_arraybuffer(env, static_cast<size_t>(rows) * kp, &data, &buffer);
  uint8_t* w = static_cast<uint8_t*>(data);
  std::memset(w, 64, static_cast<size_t>(rows) * kp);
  for (int c = 0; c < cols; c++) {
    const int8_t* line = b + static_cast<size_t>(c) * rows;
    for (int r = 0; r < rows; r++) w[static_cast<size_t>(r) * kp + c] = static_cast<uint8_t>(line[r] + 64);
  }
  napi_create_typedarray(env, napi_uint8_array, static_cast<size_t>(rows) * kp, buffer, 0, &out);
  return out;
}

#ifdef CM_X86
// One row of gatherColumns for ascending columns: each 64-byte stretch compressed by the mask of
// its kept columns (masks[s] for stretch s, shared by every row) instead of a load per byte.
__attribute__((target("avx512f,avx512bw,avx512vbmi2"))) void compressRow(const uint8_t* line, const uint64_t* masks, size_t first, size_t last, uint8_t* to) {
  size_t at = 0;
  for (size_t s = first; s < last; s++) {
    const int n = __builtin_popcountll(masks[s]);
    const __m512i kept = _mm512_maskz_compress_epi8(masks[s], _mm512_loadu_si512(line + s * 64));
    _mm512_mask_storeu_epi8(to + at, n == 64 ? ~0ull : (1ull << n) - 1, kept);
    at += n;
  }
}

void gatherAscending(const uint8_t* w, int rows, size_t kp, const int32_t* columns, size_t count, uint8_t* g, size_t outKp) {
  std::vector<uint64_t> masks(kp / 64, 0);
  for (size_t j = 0; j < count; j++) masks[columns[j] / 64] |= 1ull << (columns[j] % 64);
  const size_t first = count == 0 ? 0 : columns[0] / 64, last = count == 0 ? 0 : columns[count - 1] / 64 + 1;
  parallelFor((rows + 15) / 16, [&](int chunk) {
    for (int r = chunk * 16; r < std::min(rows, chunk * 16 + 16); r++) {
      compressRow(w + r * kp, masks.data(), first, last, g + r * outKp);
      std::memset(g + r * outKp + count, 64, outKp - count);
    }
  });
}
#endif

// gatherColumns(packed, rows, cols, columns): packInt8's [rows, cols] weight reduced to the given
// columns, in that order, packed the same way (a core-neuron FFN's down projection from the
// layer's own: no second copy of the layer, no re-quantization).
napi_value GatherColumns(napi_env env, napi_callback_info info) {
  napi_value args[4];
  Napi n{env};
  if (!callArgs(n, info, args, 4, "gatherColumns(packed, rows, cols, columns)")) return nullptr;
  size_t length = 0, count = 0;
  const uint8_t* w = n.typedArray<uint8_t>(args[0], napi_uint8_array, &length, "packed");
  const int rows = n.failed ? 0 : n.integer(args[1], "rows");
  const int cols = n.failed ? 0 : n.integer(args[2], "cols");
  const int32_t* columns = n.failed ? nullptr : n.typedArray<int32_t>(args[3], napi_int32_array, &count, "columns");
  if (!n.failed && length != static_cast<size_t>(rows) * padded(cols)) n.fail("packed must hold rows x cols (padded to 64) bytes");
  for (size_t j = 0; !n.failed && j < count; j++) {
    if (columns[j] < 0 || columns[j] >= cols) n.fail("columns holds an index outside the matrix");
  }
  if (n.failed) return nullptr;
  const size_t kp = padded(cols), outKp = padded(static_cast<int>(count));
  void* data = nullptr;
  napi_value buffer, out;
  napi_create_arraybuffer(env, static_cast<size_t>(rows) * outKp, &data, &buffer);
  uint8_t* g = static_cast<uint8_t*>(data);
  bool ascending = true;
  for (size_t j = 1; j < count; j++) ascending = ascending && columns[j] > columns[j - 1];
#ifdef CM_X86
  if (gCompress && gPath == Path::Avx512Vnni && ascending) {
    gatherAscending(w, rows, kp, columns, count, g, outKp);
  } else
#endif
  {
    parallelFor(rows, [&](int r) {
      const uint8_t* line = w + r * kp;
      uint8_t* to = g + r * outKp;
      for (size_t j = 0; j < count; j++) to[j] = line[columns[j]];
      std::memset(to + count, 64, outKp - count);
    });
  }
  napi_create_typedarray(env, napi_uint8_array, static_cast<size_t>(rows) * outKp, buffer, 0, &out);
  return out;
}

// gemv(bits, out, weight, scales, x, cols, rows | null): out[i] = row (rows ? rows[i] : i) . x
// bits 8: packInt8's rows, scales [rows]; bits 4: MatMulNBits' rows, scales [rows * blocks]
napi_value Gemv(napi_env env, napi_callback_info info) {
  napi_value args[7];
  Napi n{env};
  if (!callArgs(n, info, args, 7, "gemv(bits, out, packed, scales, x, cols, rows)")) return nullptr;
  const int bits = n.integer(args[0], "bits");
  if (!n.failed && bits != 8 && bits != 4) n.fail("bits must be 8 or 4");
  size_t outLength = 0, packedLength = 0, scaleLength = 0, xLength = 0, subsetLength = 0;
  float* out = n.failed ? nullptr : n.typedArray<float>(args[1], napi_float32_array, &outLength, "out");
  const uint8_t* packed = n.failed ? nullptr : n.typedArray<uint8_t>(args[2], napi_uint8_array, &packedLength, "packed");
  const float* scales = n.failed ? nullptr : n.typedArray<float>(args[3], napi_float32_array, &scaleLength, "scales");
  const float* x = n.failed ? nullptr : n.typedArray<float>(args[4], napi_float32_array, &xLength, "x");
  const int cols = n.failed ? 0 : n.integer(args[5], "cols");
  napi_valuetype subsetType = napi_null;
  if (!n.failed) napi_typeof(env, args[6], &subsetType);
  const int32_t* subset = nullptr;
  const bool hasSubset = subsetType != napi_null && subsetType != napi_undefined;
  if (!n.failed && hasSubset) subset = n.typedArray<int32_t>(args[6], napi_int32_array, &subsetLength, "rows");
  if (n.failed) return nullptr;
  const int blocks = (cols + kBlock - 1) / kBlock;
  const size_t bytesPerRow = rowBytes(bits, cols);
  if (cols == 0 || packedLength % bytesPerRow != 0) {
    n.fail("packed does not hold whole rows of cols values");
    return nullptr;
  }
  const size_t rows = packedLength / bytesPerRow;
  if (xLength != static_cast<size_t>(cols)) n.fail("x must hold cols numbers");
  if (!n.failed && scaleLength != (bits == 8 ? rows : rows * blocks)) n.fail("scales must hold one per row (int8) or per block (int4)");
  const size_t count = hasSubset ? subsetLength : rows;
  if (!n.failed && outLength != count) n.fail("out must hold one number per row computed");
  for (size_t i = 0; !n.failed && hasSubset && i < subsetLength; i++) {
    if (subset[i] < 0 || static_cast<size_t>(subset[i]) >= rows) n.fail("rows holds an index outside the matrix");
  }
  if (n.failed) return nullptr;

  gemv(Matrix{bits, static_cast<int>(rows), cols, packed, scales}, x, out, hasSubset ? subset : nullptr, count);
  return undefinedValue(env);
}

#ifdef CM_X86
__attribute__((target("avx512f,avx512bw"))) uint64_t sumBytesAvx512(const uint8_t* p, size_t n) {
  __m512i acc = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_loadu_si512(p + i), _mm512_setzero_si512()));
  uint64_t sum = static_cast<uint64_t>(_mm512_reduce_add_epi64(acc));
  for (; i < n; i++) sum += p[i];
  return sum;
}

__attribute__((target("avx2"))) uint64_t sumBytesAvx2(const uint8_t* p, size_t n) {
  __m256i acc = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)), _mm256_setzero_si256()));
  uint64_t lanes[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes), acc);
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; i++) sum += p[i];
  return sum;
}
#endif

uint64_t sumBytes(const uint8_t* p, size_t n) {
#ifdef CM_X86
  if (gPath == Path::Avx512Vnni) return sumBytesAvx512(p, n);
  if (gPath == Path::Avx2) return sumBytesAvx2(p, n);
#endif
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++) sum += p[i];
  return sum;
}

// sumBytes(data): the sum of an array's bytes, read on the pool in the products' chunks of rows'
// size: what streaming weights costs with no arithmetic, the ceiling the products are held to.
napi_value SumBytes(napi_env env, napi_callback_info info) {
  napi_value args[1];
  Napi n{env};
  if (!callArgs(n, info, args, 1, "sumBytes(data)")) return nullptr;
  size_t length = 0;
  const uint8_t* data = n.typedArray<uint8_t>(args[0], napi_uint8_array, &length, "data");
  if (n.failed) return nullptr;
  constexpr size_t kChunk = 32 * 1024;
  const int chunks = static_cast<int>((length + kChunk - 1) / kChunk);
  std::vector<uint64_t> sums(chunks, 0);
  parallelFor(chunks, [&](int c) { sums[c] = sumBytes(data + c * kChunk, std::min(kChunk, length - c * kChunk)); });
  uint64_t total = 0;
  for (uint64_t v : sums) total += v;
  napi_value out;
  napi_create_double(env, static_cast<double>(total), &out);
  return out;
}

// setThreads(n): the pool's size, this thread included.
napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  napi_get_cb_info(env, info, &argc, &arg, nullptr, nullptr);
  Napi n{env};
  const int threads = argc == 1 ? n.integer(arg, "threads") : 0;
  if (!n.failed && (threads < 1 || threads > 256)) n.fail("threads must be 1 .. 256");
  if (n.failed) return nullptr;
  gPool->resize(threads);
  return undefinedValue(env);
}

// info() -> { path, threads }
napi_value Info(napi_env env, napi_callback_info) {
  napi_value out, path, threads;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, pathName(gPath), NAPI_AUTO_LENGTH, &path);
  napi_create_int32(env, gPool->size(), &threads);
  napi_set_named_property(env, out, "path", path);
  napi_set_named_property(env, out, "threads", threads);
  return out;
}

// forcePath(name): run a slower path this CPU also has (tests compare them).
napi_value ForcePath(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  napi_get_cb_info(env, info, &argc, &arg, nullptr, nullptr);
  char name[32] = {0};
  size_t length = 0;
  if (argc != 1 || napi_get_value_string_utf8(env, arg, name, sizeof name, &length) != napi_ok) {
    napi_throw_type_error(env, nullptr, "forcePath(name)");
    return nullptr;
  }
  const Path best = detectPath();
  const std::string want(name);
  Path chosen;
  if (want == "portable") chosen = Path::Portable;
  else if (want == "avx2" && best != Path::Portable) chosen = Path::Avx2;
  else if (want == "avx512-vnni" && best == Path::Avx512Vnni) chosen = Path::Avx512Vnni;
  else {
    napi_throw_error(env, nullptr, ("this CPU cannot run the " + want + " path").c_str());
    return nullptr;
  }
  gPath = chosen;
  return undefinedValue(env);
}

napi_value Init(napi_env env, napi_value exports) {
  if (gPool == nullptr) gPool = new Pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const napi_property_descriptor props[] = {
      {"packInt8", nullptr, PackInt8, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gatherColumns", nullptr, GatherColumns, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gemv", nullptr, Gemv, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sumBytes", nullptr, SumBytes, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"forcePath", nullptr, ForcePath, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"createLayer", nullptr, CreateLayer, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerStep", nullptr, LayerStep, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attend", nullptr, Attend, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

}  // namespace cm

NAPI_MODULE(NODE_GYP_MODULE_NAME, cm::Init)
