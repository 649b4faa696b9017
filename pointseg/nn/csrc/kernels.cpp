// Native CPU kernels of pointseg.nn (loaded by pointseg/nn/native.py through ctypes).
//
// Plain C ABI, no torch headers: it compiles in about a second. Work is split over OpenMP threads
// (std::threads when built without -fopenmp); every thread owns disjoint output rows / channel
// planes, so there are no atomics.
//
// 1. Exact multi-rank selection for dilated kNN. For every row of a (rows x n) distance matrix,
// return the column indices of the elements at the given ascending ranks (ties broken by the
// lower column index, i.e. the order a stable sort would give). A threshold from a small sample
// keeps a few hundred candidates in one branch-free pass; only those are radix-sorted. No sort
// of the row.
//
// 1b. The opt-in symmetric-tile kNN; 1c. the selection fused with the Gram matrix products
// (AVX-512 or AVX2 + FMA builds; see below).
//
// 2. The EdgeConv edge pass (see pointseg/nn/edge_reduce.py). Node terms a, b are (B, N, C)
// channel-last rows; edge (j -> i) has z = a_i + b_j. Forward: per node and channel the neighbour j with the
// largest s_c * b_j (s_c = +-1) and, optionally, per-plane sums of h and h^2 over all edges
// (h = z, or act(z) with act(z) = z for z > 0 else slope * z). Backward: the gradient of a
// per-channel function of those sums, dL/dh_e = p_c + q_c (h_e - mu_c), pushed to a and b. The
// centred form matters in float32: with a large mean, p + q h (p ~ -q mu) cancels to a few bits.
//
// 3. The backward of the maximum over the points (pointseg/nn/global_max.py).
//
// 4. Inference only: the folded edge MLP of a multi-layer EdgeConv stage fused with its max over
// the neighbours (pointseg/nn/folded.py; AVX-512 or AVX2 + FMA builds).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

// Order-preserving map of an IEEE float to an unsigned integer, packed with the column index
// in the low 32 bits so that one integer comparison orders by (value, index).
inline uint64_t pack(float v, uint32_t j, uint32_t* key_out = nullptr) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u = (u >> 31) ? ~u : (u | 0x80000000u);
    if (key_out) *key_out = u;
    return (uint64_t(u) << 32) | j;
}
inline unsigned __int128 pack(double v, uint32_t j, uint64_t* key_out = nullptr) {
    uint64_t u;
    std::memcpy(&u, &v, 8);
    u = (u >> 63) ? ~u : (u | 0x8000000000000000ull);
    if (key_out) *key_out = u;
    return ((unsigned __int128)u << 32) | j;
}
template <typename T> struct Traits;
template <> struct Traits<float> { using Packed = uint64_t; using Key = uint32_t; };
template <> struct Traits<double> { using Packed = unsigned __int128; using Key = uint64_t; };

// Split [0, count) into contiguous ranges, one per thread. With OpenMP the threads are those of
// the OpenMP runtime torch already loaded (same soname, so the loader shares it): torch's workers
// keep spinning for a while after each parallel op, and freshly spawned std::threads would compete
// with them for the cores instead of reusing them.
template <typename F>
void parallel_for(int64_t count, int nthreads, F fn) {
    nthreads = (int)std::max<int64_t>(1, std::min<int64_t>(nthreads, count));
    if (nthreads == 1) { fn(0, count); return; }
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t per = (count + nt - 1) / nt;
        const int64_t b = t * per, e = std::min(count, b + per);
        if (b < e) fn(b, e);
    }
#else
    std::vector<std::thread> pool;
    const int64_t per = (count + nthreads - 1) / nthreads;
    for (int t = 0; t < nthreads; ++t) {
        int64_t b = t * per, e = std::min(count, b + per);
        if (b >= e) break;
        pool.emplace_back(fn, b, e);
    }
    for (auto& th : pool) th.join();
#endif
}

// Row r holds the values v_j = dist[r, j] (plain), or v_j = sq[j] - 2 dot[r, j] with the row's own
// point (column self0 + r % rows_per_batch) set to -inf (kNN: |x_j|^2 - 2 q.x_j ranks like
// |q - x_j|^2); sq has one row of n per batch of rows_per_batch rows.
template <typename T>
struct RowValues {
    const T* base;
    int64_t stride;
    const T* sq;          // null: plain rows
    int64_t rows_per_batch, self0;
    const T* row(int64_t r) const { return base + r * stride; }
    const T* sq_row(int64_t r) const { return sq + (r / rows_per_batch) * stride_sq; }
    int64_t self_of(int64_t r) const { return self0 < 0 ? -1 : self0 + r % rows_per_batch; }
    int64_t stride_sq;
};

// Value j of a row: d[j] (plain rows), or v_j = sq_j - 2 dot_j with q = sq (kNN rows).
template <typename T>
inline T row_value(const T* d, const T* q, int64_t j) { return q ? q[j] - T(2) * d[j] : d[j]; }

// Stable LSD radix sort of packed (key, index) values by key, one byte per pass; a pass whose
// byte is the same for every element is skipped (distances of one row share their top bytes).
// Branch-free, unlike comparison selection, whose mispredictions dominated on a few hundred
// candidates.
template <typename P, int KEY_BYTES>
void radix_sort(P* a, P* tmp, int64_t m) {
    int64_t count[256];
    for (int pass = 0; pass < KEY_BYTES; ++pass) {
        const int shift = 32 + 8 * pass;
        std::memset(count, 0, sizeof(count));
        for (int64_t i = 0; i < m; ++i) ++count[(unsigned)(a[i] >> shift) & 255u];
        if (count[(unsigned)(a[0] >> shift) & 255u] == m) continue;
        int64_t sum = 0;
        for (int u = 0; u < 256; ++u) { const int64_t c = count[u]; count[u] = sum; sum += c; }
        for (int64_t i = 0; i < m; ++i) tmp[count[(unsigned)(a[i] >> shift) & 255u]++] = a[i];
        std::memcpy(a, tmp, sizeof(P) * m);
    }
}

// The filter pass of a kNN row: v_j = sq_j - 2 dot_j, packed (v_j, j) appended to buf for every
// v_j <= thr, in column order; returns the new count. The point itself is handled by the caller.
template <typename T, typename P>
int64_t keep_below(const T* sq, const T* dot, int64_t j0, int64_t j1, T thr, P* buf, int64_t cnt) {
    for (int64_t j = j0; j < j1; ++j) {
        const T v = sq[j] - T(2) * dot[j];
        buf[cnt] = pack(v, (uint32_t)j);                      // branch-free compaction
        cnt += (v <= thr);
    }
    return cnt;
}

// The selection of one thread: the kept ranks of rows of n values. A threshold guessed from a
// strided sample of S values keeps a few hundred candidates in one branch-free pass; only those
// are sorted. Exact whatever the sample: the candidates are every value at or below the
// threshold, and a row with fewer than needed is redone from all its values. The row's own point
// (kNN rows) is rank 0 by definition and never a candidate.
template <typename T>
struct RowSelector {
    using P = typename Traits<T>::Packed;
    static constexpr int KEY_BYTES = sizeof(typename Traits<T>::Key);
    const int64_t n, nranks, kmax, S, t;
    const int64_t* ranks;
    const bool filtered;
    std::vector<P> buf, tmp;                                 // n + 32: the vector filter stores 16 lanes past its count
    std::vector<T> sample;

    static int64_t sample_size(int64_t n) { return std::min<int64_t>(n, 256) & ~int64_t(15); }
    // About 3 standard deviations above the sample rank expected for kmax.
    static int64_t sample_rank(int64_t kmax, int64_t S, int64_t n) {
        const double t0 = double(kmax) * S / n;
        return std::min<int64_t>(S - 1, int64_t(t0 + 3.0 * std::sqrt(t0) + 3.0));
    }
    RowSelector(int64_t n_, const int64_t* ranks_, int64_t nranks_)
        : n(n_), nranks(nranks_), kmax(ranks_[nranks_ - 1] + 1), S(sample_size(n_)),
          t(S > 0 ? sample_rank(kmax, S, n_) : 0), ranks(ranks_), filtered(kmax * 4 < n_ && S >= 32),
          buf(n_ + 32), tmp(n_ + 32), sample(S) {}

    // Sorts the cnt candidates a (in column order, so ties go to the lower column) far enough
    // and writes the kept ranks of the row.
    void finish(P* a, int64_t cnt, int64_t self, int64_t* o) {
        const bool has_self = self >= 0;
        const int64_t need = kmax - has_self;
        if (need > 0 && cnt > 4 * need + 64) {               // sort only what can matter
            std::nth_element(a, a + (need - 1), a + cnt);
            std::sort(a, a + need);
        } else if (need > 0) {
            radix_sort<P, KEY_BYTES>(a, tmp.data(), cnt);
        }
        emit(a, self, o);
    }
    void emit(const P* sorted, int64_t self, int64_t* o) const {
        const int64_t off = self >= 0;
        for (int64_t u = 0; u < nranks; ++u)
            o[u] = (off && ranks[u] == 0) ? self : (int64_t)(uint32_t)sorted[ranks[u] - off];
    }
    // Every value of the row is a candidate.
    void full_row(const T* d, const T* q, int64_t self, int64_t* o) {
        int64_t cnt = 0;
        for (int64_t j = 0; j < n; ++j)
            if (j != self) buf[cnt++] = pack(row_value(d, q, j), (uint32_t)j);
        finish(buf.data(), cnt, self, o);
    }
    // Row r of rv: values d[j], or for kNN rows v_j = sq_j - 2 dot_j (ranks like |q - x_j|^2).
    void row(const RowValues<T>& rv, int64_t r, int64_t* o);
    void row_generic(const T* d, const T* q, int64_t self, int64_t* o) {
        int64_t cnt = 0;
        if (filtered) {
            const int64_t step = n / S;
            for (int64_t s = 0; s < S; ++s) sample[s] = row_value(d, q, s * step);
            std::nth_element(sample.begin(), sample.begin() + t, sample.end());
            const T thr = sample[t];
            if (!q) {
                for (int64_t j = 0; j < n; ++j) {
                    buf[cnt] = pack(d[j], (uint32_t)j);      // branch-free compaction
                    cnt += (d[j] <= thr);
                }
            } else if (self >= 0) {
                cnt = keep_below(q, d, 0, self, thr, buf.data(), cnt);
                cnt = keep_below(q, d, self + 1, n, thr, buf.data(), cnt);
            } else {
                cnt = keep_below(q, d, 0, n, thr, buf.data(), cnt);
            }
        }
        if (cnt < kmax - (self >= 0)) return full_row(d, q, self, o);
        finish(buf.data(), cnt, self, o);
    }
};

template <typename T>
inline void row_inputs(const RowValues<T>& rv, int64_t r, int64_t n, const T*& d, const T*& q, int64_t& self) {
    d = rv.row(r);
    q = rv.sq ? rv.sq_row(r) : nullptr;
    self = q ? rv.self_of(r) : -1;
    if (self >= n) self = -1;
}

template <typename T>
void RowSelector<T>::row(const RowValues<T>& rv, int64_t r, int64_t* o) {
    const T* d; const T* q; int64_t self;
    row_inputs(rv, r, n, d, q, self);
    row_generic(d, q, self, o);
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// The float32 row with vector instructions, in the order-preserving key space of pack()
// throughout: the sample's threshold key by bisection with vector counts, the filter as
// compress-and-store of every 16 (AVX-512) or 8 (AVX2) columns with no branch on the survivors,
// a second bisection for the key of the last rank needed, and the radix sort over the key range
// the survivors actually span. Under the branchy versions (nth_element on the sample, a pack
// loop per group of columns that kept anything) the selection took 1.8x the time of the Gram
// products. The primitives per instruction set:
//   kth_key(s, m, t, lo, hi)   the t-th smallest (from 0) of the m keys s, all in [lo, hi]: the
//                              least K with more than t keys <= K, by bisection (<= 32 counts);
//   keep_keys_below<KNN>(...)  appends pack(v_j, j) to buf and key(v_j) to kb for every column
//                              j != self with key(v_j) <= K, in column order (both with room for
//                              16 entries past the count); returns the count and the least
//                              and greatest of those keys;
//   keep_packed_below(a, m, K) keeps, in order and in place, the packed entries of a[0, m) whose
//                              key is <= K; returns their number.
// The least and greatest of the m keys s.
inline void key_range(const uint32_t* s, int64_t m, uint32_t& lo, uint32_t& hi) {
    lo = 0xFFFFFFFFu;
    hi = 0;
    for (int64_t i = 0; i < m; ++i) {
        lo = std::min(lo, s[i]);
        hi = std::max(hi, s[i]);
    }
}

#ifdef __AVX512F__
inline __m512i order_keys(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    return _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31), _mm512_set1_epi32(int(0x80000000u))));
}

inline uint32_t kth_key(const uint32_t* s, int64_t m, int64_t t, uint32_t lo, uint32_t hi) {
    const int64_t full = m / 16;
    const __mmask16 tail = (__mmask16)((1u << (m % 16)) - 1);
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        const __m512i mv = _mm512_set1_epi32((int)mid);
        int64_t c = __builtin_popcount((unsigned)_mm512_mask_cmple_epu32_mask(
            tail, _mm512_maskz_loadu_epi32(tail, s + 16 * full), mv));
        for (int64_t v = 0; v < full; ++v)
            c += __builtin_popcount((unsigned)_mm512_cmple_epu32_mask(_mm512_loadu_si512((const void*)(s + 16 * v)), mv));
        if (c > t) hi = mid; else lo = mid + 1;
    }
    return lo;
}

template <bool KNN>
int64_t keep_keys_below(const float* d, const float* q, int64_t n, int64_t self, uint32_t K, uint64_t* buf,
                        uint32_t* kb, uint32_t& kmin, uint32_t& kmax) {
    const __m512 two = _mm512_set1_ps(2.0f);
    const __m512i kk = _mm512_set1_epi32((int)K);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // dwords (index, key) of survivors 0-7 and 8-15: the packed uint64 (key << 32 | index)
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    __m512i mn = _mm512_set1_epi32(-1), mx = _mm512_setzero_si512();
    int64_t cnt = 0;
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 valid = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        const __m512 dv = _mm512_maskz_loadu_ps(valid, d + j);
        const __m512 v = KNN ? _mm512_fnmadd_ps(two, dv, _mm512_maskz_loadu_ps(valid, q + j)) : dv;
        const __m512i key = order_keys(v);
        __mmask16 m = _mm512_mask_cmple_epu32_mask(valid, key, kk);
        if ((uint64_t)(self - j) < 16) m &= (__mmask16)~(1u << (self - j));
        mn = _mm512_mask_min_epu32(mn, m, mn, key);
        mx = _mm512_mask_max_epu32(mx, m, mx, key);
        const __m512i ck = _mm512_maskz_compress_epi32(m, key);
        const __m512i cj = _mm512_maskz_compress_epi32(m, _mm512_add_epi32(_mm512_set1_epi32((int)j), lane));
        _mm512_storeu_si512((void*)(buf + cnt), _mm512_permutex2var_epi32(cj, lo, ck));
        _mm512_storeu_si512((void*)(buf + cnt + 8), _mm512_permutex2var_epi32(cj, hi, ck));
        _mm512_storeu_si512((void*)(kb + cnt), ck);
        cnt += __builtin_popcount((unsigned)m);
    }
    kmin = _mm512_reduce_min_epu32(mn);
    kmax = _mm512_reduce_max_epu32(mx);
    return cnt;
}

inline int64_t keep_packed_below(uint64_t* a, int64_t m, uint32_t K) {
    const __m512i lim = _mm512_set1_epi64((long long)(((uint64_t)K << 32) | 0xFFFFFFFFull));
    int64_t w = 0;
    for (int64_t i = 0; i < m; i += 8) {                    // writes stay at or behind the reads
        const __mmask8 valid = m - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (m - i)) - 1);
        const __m512i x = _mm512_maskz_loadu_epi64(valid, a + i);
        const __mmask8 keep = _mm512_mask_cmple_epu64_mask(valid, x, lim);
        _mm512_storeu_si512((void*)(a + w), _mm512_maskz_compress_epi64(keep, x));
        w += __builtin_popcount((unsigned)keep);
    }
    return w;
}
#else
// AVX2 has no unsigned compare: keys are compared as signed integers after flipping the top bit.
// No compress either: the survivors of 8 columns are moved to the front by a permutation looked
// up from their 8-bit mask.
inline __m256i order_keys(__m256 v) {
    const __m256i u = _mm256_castps_si256(v);
    return _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), _mm256_set1_epi32(int(0x80000000u))));
}
inline __m256i signed_keys(__m256i k) { return _mm256_xor_si256(k, _mm256_set1_epi32(int(0x80000000u))); }

inline uint32_t kth_key(const uint32_t* s, int64_t m, int64_t t, uint32_t lo, uint32_t hi) {
    const int64_t full = m / 8;
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        const __m256i mv = _mm256_set1_epi32(int(mid ^ 0x80000000u));
        int64_t above = 0;
        for (int64_t v = 0; v < full; ++v) {
            const __m256i x = signed_keys(_mm256_loadu_si256((const __m256i*)(s + 8 * v)));
            above += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(x, mv))));
        }
        for (int64_t i = 8 * full; i < m; ++i) above += s[i] > mid;
        if (m - above > t) hi = mid; else lo = mid + 1;
    }
    return lo;
}

struct CompressTable {                                       // lanes of the set bits of a mask, first
    alignas(32) int32_t perm[256][8];
    CompressTable() {
        for (int m = 0; m < 256; ++m) {
            int c = 0;
            for (int u = 0; u < 8; ++u) if (m >> u & 1) perm[m][c++] = u;
            while (c < 8) perm[m][c++] = 0;
        }
    }
};
static const CompressTable compress_table;

template <bool KNN>
int64_t keep_keys_below(const float* d, const float* q, int64_t n, int64_t self, uint32_t K, uint64_t* buf,
                        uint32_t* kb, uint32_t& kmin, uint32_t& kmax) {
    const __m256 two = _mm256_set1_ps(2.0f);
    const __m256i kk = _mm256_set1_epi32(int(K ^ 0x80000000u));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t cnt = 0, j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 dv = _mm256_loadu_ps(d + j);
        const __m256 v = KNN ? _mm256_fnmadd_ps(two, dv, _mm256_loadu_ps(q + j)) : dv;
        const __m256i key = order_keys(v);
        unsigned m = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(signed_keys(key), kk))) & 0xFFu;
        if ((uint64_t)(self - j) < 8) m &= ~(1u << (self - j));
        const __m256i p = _mm256_load_si256((const __m256i*)compress_table.perm[m]);
        const __m256i ck = _mm256_permutevar8x32_epi32(key, p);
        const __m256i cj = _mm256_permutevar8x32_epi32(_mm256_add_epi32(_mm256_set1_epi32((int)j), lane), p);
        const __m256i lo = _mm256_unpacklo_epi32(cj, ck), hi = _mm256_unpackhi_epi32(cj, ck);
        _mm256_storeu_si256((__m256i*)(buf + cnt), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i*)(buf + cnt + 4), _mm256_permute2x128_si256(lo, hi, 0x31));
        _mm256_storeu_si256((__m256i*)(kb + cnt), ck);
        cnt += __builtin_popcount(m);
    }
    for (; j < n; ++j) {
        uint32_t key;
        const uint64_t e = pack(row_value(d, KNN ? q : nullptr, j), (uint32_t)j, &key);
        buf[cnt] = e;
        kb[cnt] = key;
        cnt += (j != self && key <= K);
    }
    key_range(kb, cnt, kmin, kmax);
    return cnt;
}

inline int64_t keep_packed_below(uint64_t* a, int64_t m, uint32_t K) {
    int64_t w = 0;
    for (int64_t i = 0; i < m; ++i) {                        // branch-free compaction
        a[w] = a[i];
        w += (uint32_t)(a[i] >> 32) <= K;
    }
    return w;
}
#endif

// Stable LSD radix sort of packed (key, index) by key - kmin, which is below 2^bits(range): one
// byte per pass, as few passes as the range needs. Returns a or tmp, whichever holds the result.
inline uint64_t* radix_sort_range(uint64_t* a, uint64_t* tmp, int64_t m, uint32_t kmin, uint32_t range) {
    uint32_t count[256];
    for (int shift = 0; shift < 32 && (range >> shift); shift += 8) {
        std::memset(count, 0, sizeof(count));
        for (int64_t i = 0; i < m; ++i) ++count[(((uint32_t)(a[i] >> 32) - kmin) >> shift) & 255u];
        uint32_t sum = 0;
        for (int u = 0; u < 256; ++u) { const uint32_t c = count[u]; count[u] = sum; sum += c; }
        for (int64_t i = 0; i < m; ++i) tmp[count[(((uint32_t)(a[i] >> 32) - kmin) >> shift) & 255u]++] = a[i];
        std::swap(a, tmp);
    }
    return a;
}

template <>
void RowSelector<float>::row(const RowValues<float>& rv, int64_t r, int64_t* o) {
    const float* d; const float* q; int64_t self;
    row_inputs(rv, r, n, d, q, self);
    if (!filtered) return row_generic(d, q, self, o);
    // the threshold: a key at about 3 standard deviations above the sample rank expected for kmax
    alignas(64) uint32_t keys[256];
    const int64_t step = n / S;
    for (int64_t s = 0; s < S; ++s) pack(row_value(d, q, s * step), 0, &keys[s]);
    uint32_t lo, hi;
    key_range(keys, S, lo, hi);
    const uint32_t K = kth_key(keys, S, t, lo, hi);
    uint32_t* kb = reinterpret_cast<uint32_t*>(tmp.data());
    uint32_t kmin, kmx;
    int64_t cnt = q ? keep_keys_below<true>(d, q, n, self, K, buf.data(), kb, kmin, kmx)
                    : keep_keys_below<false>(d, nullptr, n, -1, K, buf.data(), kb, kmin, kmx);
    const int64_t need = kmax - (self >= 0);
    if (cnt < need) return full_row(d, q, self, o);
    if (need == 0) return emit(buf.data(), self, o);
    if (cnt > need) {
        // the survivors past the need-th smallest key cannot matter: bisect for that key and
        // sort only what is at or below it (ties included, still in column order)
        kmx = kth_key(kb, cnt, need - 1, kmin, kmx);
        cnt = keep_packed_below(buf.data(), cnt, kmx);
    }
    emit(radix_sort_range(buf.data(), tmp.data(), cnt, kmin, kmx - kmin), self, o);
}
#endif

template <typename T>
void select_rows(const RowValues<T>& rv, int64_t row_begin, int64_t row_end, int64_t n,
                 const int64_t* ranks, int64_t nranks, int64_t* out) {
    RowSelector<T> sel(n, ranks, nranks);
    for (int64_t r = row_begin; r < row_end; ++r) sel.row(rv, r, out + r * nranks);
}

// 0 when ranks (nranks > 0) select from rows of n values (column indices fit 32 bits): within
// [0, n) -> else 1; strictly ascending -> else 2.
inline int check_ranks(const int64_t* ranks, int64_t nranks, int64_t n) {
    if (n <= 0 || n > 0xFFFFFFFFll || ranks[nranks - 1] >= n || ranks[0] < 0) return 1;
    for (int64_t t = 1; t < nranks; ++t)
        if (ranks[t] <= ranks[t - 1]) return 2;
    return 0;
}

template <typename T>
int run(const RowValues<T>& rv, int64_t rows, int64_t n, const int64_t* ranks, int64_t nranks,
        int64_t* out, int nthreads) {
    if (rows <= 0 || nranks <= 0) return 0;
    if (const int bad = check_ranks(ranks, nranks, n)) return bad;
    parallel_for(rows, nthreads, [&](int64_t b, int64_t e) {
        select_rows<T>(rv, b, e, n, ranks, nranks, out);
    });
    return 0;
}

// 1b. Symmetric-tile kNN. Within one cloud the Gram matrix G = X^T X is symmetric, so the caller
// computes only the tiles G[I, J] with I <= J and each tile feeds the selection of its row block
// (v = sq_j - 2 G_ij for rows i, columns j) and of its column block (v = sq_i - 2 G_ij for rows j,
// columns i). The selection needs per-row state across tiles, so it is split in three calls:
//   knn_thresholds: per row, a threshold from S sampled columns (as in select_rows);
//   knn_tile:       the survivors v <= thr of one tile appended to per-row candidate lists
//                   (capacity cap; the count keeps growing past it, which marks an overflow);
//   knn_finish:     radix sort of each row's candidates and the kept ranks; a row with fewer than
//                   kmax or more than cap candidates is marked (out = -1) and recomputed by the
//                   caller from its full row, so the result is exact whatever the threshold.
// Candidates reach a row in increasing column order (tiles are visited row block by row block,
// column blocks ascending), so the stable sort breaks ties by the lower column index.
template <typename T>
void knn_thresholds(const T* sdot, const T* sq, int64_t B, int64_t n, int64_t S, int64_t step,
                    int64_t t, T* thr, int nthreads) {
    constexpr T NEG_INF = -std::numeric_limits<T>::infinity();
    parallel_for(B * n, nthreads, [&](int64_t r0, int64_t r1) {
        std::vector<T> v(S);
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t b = r / n, i = r % n;
            const T* d = sdot + r * S;
            const T* q = sq + b * n;
            for (int64_t s = 0; s < S; ++s) v[s] = s * step == i ? NEG_INF : q[s * step] - T(2) * d[s];
            std::nth_element(v.begin(), v.begin() + t, v.end());
            thr[r] = v[t];
        }
    });
}

template <typename P, typename T>
inline void append_candidate(P* cand, int64_t* cnt, int64_t row, int64_t cap, T v, uint32_t j) {
    const int64_t c = cnt[row];
    if (c < cap) cand[row * cap + c] = pack(v, j);
    cnt[row] = c + 1;
}

// Row side of a tile: rows gi = I0 + i (i < mi), columns J0 + j (j < mj), tile row stride mj.
template <typename T, typename P>
void tile_rows_scalar(const T* g, const T* sq, const T* thr, int64_t i, int64_t mj, int64_t J0,
                      int64_t row, int64_t j_lo, int64_t j_hi, P* cand, int64_t* cnt, int64_t cap) {
    const T th = thr[row];
    const T* gi = g + i * mj;
    for (int64_t j = j_lo; j < j_hi; ++j) {
        const T v = sq[J0 + j] - T(2) * gi[j];
        if (v <= th) append_candidate(cand, cnt, row, cap, v, (uint32_t)(J0 + j));
    }
}
template <typename T, typename P>
void tile_rows(const T* g, const T* sq, const T* thr, int64_t i, int64_t mj, int64_t J0,
               int64_t row, int64_t j_lo, int64_t j_hi, P* cand, int64_t* cnt, int64_t cap) {
    tile_rows_scalar(g, sq, thr, i, mj, J0, row, j_lo, j_hi, cand, cnt, cap);
}
#if defined(__AVX2__) && defined(__FMA__)
template <>
void tile_rows<float, uint64_t>(const float* g, const float* sq, const float* thr, int64_t i, int64_t mj,
                                int64_t J0, int64_t row, int64_t j_lo, int64_t j_hi, uint64_t* cand,
                                int64_t* cnt, int64_t cap) {
    const __m256 t = _mm256_set1_ps(thr[row]), two = _mm256_set1_ps(2.0f);
    const float* gi = g + i * mj;
    const float* q = sq + J0;
    alignas(32) float vv[8];
    int64_t j = j_lo;
    for (; j + 8 <= j_hi; j += 8) {
        const __m256 v = _mm256_fnmadd_ps(two, _mm256_loadu_ps(gi + j), _mm256_loadu_ps(q + j));
        unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_LE_OQ));
        if (!m) continue;
        _mm256_store_ps(vv, v);
        for (; m; m &= m - 1) {
            const int u = __builtin_ctz(m);
            append_candidate(cand, cnt, row, cap, vv[u], (uint32_t)(J0 + j + u));
        }
    }
    tile_rows_scalar(g, sq, thr, i, mj, J0, row, j, j_hi, cand, cnt, cap);
}
#endif

// Column side: rows J0 + j (j in [j_lo, j_hi)), columns I0 + i (i < mi): v = sq_i - 2 g[i, j].
template <typename T, typename P>
void tile_cols_scalar(const T* g, const T* sq, const T* thr, int64_t mi, int64_t mj, int64_t I0,
                      int64_t J0, int64_t rbase, int64_t j_lo, int64_t j_hi, P* cand, int64_t* cnt,
                      int64_t cap) {
    for (int64_t i = 0; i < mi; ++i) {
        const T qi = sq[I0 + i];
        const T* gi = g + i * mj;
        for (int64_t j = j_lo; j < j_hi; ++j) {
            const T v = qi - T(2) * gi[j];
            if (v <= thr[rbase + J0 + j]) append_candidate(cand, cnt, rbase + J0 + j, cap, v, (uint32_t)(I0 + i));
        }
    }
}
template <typename T, typename P>
void tile_cols(const T* g, const T* sq, const T* thr, int64_t mi, int64_t mj, int64_t I0, int64_t J0,
               int64_t rbase, int64_t j_lo, int64_t j_hi, P* cand, int64_t* cnt, int64_t cap) {
    tile_cols_scalar(g, sq, thr, mi, mj, I0, J0, rbase, j_lo, j_hi, cand, cnt, cap);
}
#if defined(__AVX2__) && defined(__FMA__)
// 8 rows (tile columns) at once, each lane with its own threshold.
template <>
void tile_cols<float, uint64_t>(const float* g, const float* sq, const float* thr, int64_t mi, int64_t mj,
                                int64_t I0, int64_t J0, int64_t rbase, int64_t j_lo, int64_t j_hi,
                                uint64_t* cand, int64_t* cnt, int64_t cap) {
    const __m256 two = _mm256_set1_ps(2.0f);
    alignas(32) float vv[8];
    int64_t j = j_lo;
    for (; j + 8 <= j_hi; j += 8) {
        const __m256 t = _mm256_loadu_ps(thr + rbase + J0 + j);
        for (int64_t i = 0; i < mi; ++i) {
            const __m256 v = _mm256_fnmadd_ps(two, _mm256_loadu_ps(g + i * mj + j), _mm256_set1_ps(sq[I0 + i]));
            unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_LE_OQ));
            if (!m) continue;
            _mm256_store_ps(vv, v);
            for (; m; m &= m - 1) {
                const int u = __builtin_ctz(m);
                append_candidate(cand, cnt, rbase + J0 + j + u, cap, vv[u], (uint32_t)(I0 + i));
            }
        }
    }
    tile_cols_scalar(g, sq, thr, mi, mj, I0, J0, rbase, j, j_hi, cand, cnt, cap);
}
#endif

// One tile per cloud: g (B, mi, mj) = X[:, I0:I0+mi]^T X[:, J0:J0+mj]; I0 == J0 is a diagonal tile
// (rows side only, the point itself counted as -inf), else I0 + mi <= J0 (both sides).
template <typename T>
int knn_tile(const T* g, const T* sq, const T* thr, int64_t B, int64_t n, int64_t mi, int64_t mj,
             int64_t I0, int64_t J0, typename Traits<T>::Packed* cand, int64_t* cnt, int64_t cap,
             int nthreads) {
    constexpr T NEG_INF = -std::numeric_limits<T>::infinity();
    const bool diag = I0 == J0;
    if (diag ? mi != mj : I0 + mi > J0) return 3;
    if (J0 + mj > n || I0 < 0) return 4;
    parallel_for(B * mi, nthreads, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t b = r / mi, i = r % mi, row = b * n + I0 + i;
            const T* gb = g + b * mi * mj;
            const T* qb = sq + b * n;
            if (diag) {
                tile_rows(gb, qb, thr, i, mj, J0, row, 0, i, cand, cnt, cap);
                append_candidate(cand, cnt, row, cap, NEG_INF, (uint32_t)(I0 + i));
                tile_rows(gb, qb, thr, i, mj, J0, row, i + 1, mj, cand, cnt, cap);
            } else {
                tile_rows(gb, qb, thr, i, mj, J0, row, 0, mj, cand, cnt, cap);
            }
        }
    });
    if (diag) return 0;
    const int64_t groups = (mj + 7) / 8;
    parallel_for(B * groups, nthreads, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t b = u / groups, j_lo = (u % groups) * 8, j_hi = std::min(mj, j_lo + 8);
            tile_cols(g + b * mi * mj, sq + b * n, thr, mi, mj, I0, J0, b * n, j_lo, j_hi, cand, cnt, cap);
        }
    });
    return 0;
}

template <typename T>
int knn_finish(typename Traits<T>::Packed* cand, const int64_t* cnt, int64_t rows, int64_t cap,
               const int64_t* ranks, int64_t nranks, int64_t* out, int nthreads) {
    using P = typename Traits<T>::Packed;
    constexpr int KEY_BYTES = sizeof(typename Traits<T>::Key);
    if (rows <= 0 || nranks <= 0) return 0;
    if (const int bad = check_ranks(ranks, nranks, 0xFFFFFFFFll)) return bad;   // rows: candidate lists
    const int64_t kmax = ranks[nranks - 1] + 1;
    parallel_for(rows, nthreads, [&](int64_t r0, int64_t r1) {
        std::vector<P> tmp(cap);
        for (int64_t r = r0; r < r1; ++r) {
            int64_t* o = out + r * nranks;
            const int64_t c = cnt[r];
            if (c < kmax || c > cap) { o[0] = -1; continue; }   // recomputed by the caller
            P* a = cand + r * cap;
            if (c > 4 * kmax + 64) {
                std::nth_element(a, a + (kmax - 1), a + c);
                std::sort(a, a + kmax);
            } else {
                radix_sort<P, KEY_BYTES>(a, tmp.data(), c);
            }
            for (int64_t t = 0; t < nranks; ++t) o[t] = (int64_t)(uint32_t)a[ranks[t]];
        }
    });
    return 0;
}

// 1c. Fused dilated kNN (float32, AVX-512 or AVX2 + FMA): the Gram rows of a block of R query
// points are computed into a per-thread R x N buffer that stays in L2 and are selected from there
// at once, instead of a large chunk of the Gram matrix being written by a GEMM and read back by
// the selection. The features of a cloud are first packed into panels Xp[p][c][0..PANEL) of
// PANEL columns, so the micro-kernel (R rows x PANEL columns of accumulators, one FMA per channel
// and register) reads one contiguous stream; a block of R rows lies within one panel. The values
// v_j = sq_j - 2 dot_j are those of select_rows, so the selection (and its tie rule) is the same;
// only the dot products are summed in another order than the GEMM's (channel by channel, fused
// multiply-add: the same order in both instruction sets, so their results are identical).
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#ifdef __AVX512F__
using FVec = __m512;                                         // 8 rows x 32 columns: 16 accumulators
constexpr int64_t PANEL = 32;
constexpr int FUSED_ROWS = 8;
inline FVec fv_zero() { return _mm512_setzero_ps(); }
inline FVec fv_load(const float* p) { return _mm512_loadu_ps(p); }
inline FVec fv_set1(float v) { return _mm512_set1_ps(v); }
inline FVec fv_fma(FVec a, FVec b, FVec c) { return _mm512_fmadd_ps(a, b, c); }
inline void fv_store(float* p, FVec v) { _mm512_storeu_ps(p, v); }
#else
using FVec = __m256;                                         // 4 rows x 16 columns: 8 accumulators
constexpr int64_t PANEL = 16;
constexpr int FUSED_ROWS = 4;
inline FVec fv_zero() { return _mm256_setzero_ps(); }
inline FVec fv_load(const float* p) { return _mm256_loadu_ps(p); }
inline FVec fv_set1(float v) { return _mm256_set1_ps(v); }
inline FVec fv_fma(FVec a, FVec b, FVec c) { return _mm256_fmadd_ps(a, b, c); }
inline void fv_store(float* p, FVec v) { _mm256_storeu_ps(p, v); }
#endif
constexpr int64_t HALF = PANEL / 2;                          // floats per vector

template <int R>
inline void gram_rows(const float* xp, int64_t C, int64_t n, int64_t i0, float* D) {
    const int64_t panels = (n + PANEL - 1) / PANEL;
    const float* ap = xp + (i0 / PANEL) * C * PANEL + (i0 % PANEL);   // x[c][i0 + r] = ap[c * PANEL + r]
    for (int64_t p = 0; p < panels; ++p) {
        const float* bp = xp + p * C * PANEL;
        FVec acc[R][2];
        for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = fv_zero();
        for (int64_t c = 0; c < C; ++c) {
            const FVec b0 = fv_load(bp + c * PANEL), b1 = fv_load(bp + c * PANEL + HALF);
            const float* a = ap + c * PANEL;
            for (int r = 0; r < R; ++r) {
                const FVec av = fv_set1(a[r]);
                acc[r][0] = fv_fma(av, b0, acc[r][0]);
                acc[r][1] = fv_fma(av, b1, acc[r][1]);
            }
        }
        const int64_t j = p * PANEL, w = std::min<int64_t>(PANEL, n - j);
        for (int r = 0; r < R; ++r) {
            if (w == PANEL) {
                fv_store(D + r * n + j, acc[r][0]);
                fv_store(D + r * n + j + HALF, acc[r][1]);
            } else {
                alignas(64) float last[PANEL];
                fv_store(last, acc[r][0]);
                fv_store(last + HALF, acc[r][1]);
                std::memcpy(D + r * n + j, last, sizeof(float) * w);
            }
        }
    }
}

// x (B, C, n) contiguous, sq (B, n): out (B, n, nranks) as ps_knn_select over the whole Gram.
int knn_fused(const float* x, const float* sq, int64_t B, int64_t C, int64_t n, const int64_t* ranks,
              int64_t nranks, int64_t* out, int nthreads) {
    if (C <= 0) return 1;
    if (const int bad = check_ranks(ranks, nranks, n)) return bad;
    const int64_t panels = (n + PANEL - 1) / PANEL, cloud = panels * C * PANEL;
    std::vector<float> xp(B * cloud, 0.0f);                    // zero past n: the last panel's tail
    parallel_for(B * C, nthreads, [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
            const int64_t b = q / C, c = q % C;
            const float* src = x + q * n;
            float* dst = xp.data() + b * cloud + c * PANEL;
            for (int64_t j = 0; j < n; ++j) dst[(j / PANEL) * C * PANEL + j % PANEL] = src[j];
        }
    });
    const int64_t blocks = (n + FUSED_ROWS - 1) / FUSED_ROWS;
    parallel_for(B * blocks, nthreads, [&](int64_t q0, int64_t q1) {
        std::vector<float> D(FUSED_ROWS * n);
        RowSelector<float> sel(n, ranks, nranks);
        for (int64_t q = q0; q < q1; ++q) {
            const int64_t b = q / blocks, i0 = (q % blocks) * FUSED_ROWS;
            const int64_t rows = std::min<int64_t>(FUSED_ROWS, n - i0);
            const float* cx = xp.data() + b * cloud;
            if (rows == FUSED_ROWS) gram_rows<FUSED_ROWS>(cx, C, n, i0, D.data());
            else for (int64_t r = 0; r < rows; ++r) gram_rows<1>(cx, C, n, i0 + r, D.data() + r * n);
            RowValues<float> rv{D.data(), n, sq + b * n, FUSED_ROWS, i0, n};
            for (int64_t r = 0; r < rows; ++r) sel.row(rv, r, out + (b * n + i0 + r) * nranks);
        }
    });
    return 0;
}

// 4. Inference: the folded multi-layer edge MLP of an EdgeConv stage with its max over the
// neighbours (pointseg/nn/folded.py), one query point at a time so that every edge row stays in
// L1. Edge (j -> i) of point i: h0 = act1(a_i + b_j) (channel-last rows of the node terms),
// h_l = act_l(h_{l-1} W_l + t_l) for the middle layers, and out_i = act_L(max_j (h_{L-1} W_L)_j + t_L)
// (the activations are monotone non-decreasing, so the shift and activation follow the max).
// Widths must be multiples of the vector width; the caller takes the torch path otherwise.
inline FVec fv_act(FVec z, float slope) {
    // max(z, 0) + slope * min(z, 0): branch-free, exact for ReLU (0), LeakyReLU and none (1)
    const FVec zero = fv_zero();
#ifdef __AVX512F__
    return _mm512_fmadd_ps(_mm512_min_ps(z, zero), fv_set1(slope), _mm512_max_ps(z, zero));
#else
    return _mm256_fmadd_ps(_mm256_min_ps(z, zero), fv_set1(slope), _mm256_max_ps(z, zero));
#endif
}
inline FVec fv_add(FVec a, FVec b) {
#ifdef __AVX512F__
    return _mm512_add_ps(a, b);
#else
    return _mm256_add_ps(a, b);
#endif
}
inline FVec fv_max(FVec a, FVec b) {
#ifdef __AVX512F__
    return _mm512_max_ps(a, b);
#else
    return _mm256_max_ps(a, b);
#endif
}
#ifdef __AVX512F__
constexpr int MLP_NV = 4;                                    // 4 rows x 4 vectors: 16 accumulators
#else
constexpr int MLP_NV = 2;                                    // 4 rows x 2 vectors: 8 accumulators
#endif
constexpr int MLP_R = 4;

// Rows [0, R) of H (cin wide) times W (cin x cout, columns c0 .. c0 + NV*HALF), the sum over the
// input channels in order, one fused multiply-add each; then either the next layer's rows
// act(z + t) into Hn, or the running max over the rows into best. The accumulators are locals of
// fully unrolled loops, so they live in registers (an array passed by reference went to the stack).
template <int R, int NV>
inline void mlp_rows(const float* H, int64_t cin, const float* W, int64_t cout, int64_t c0, const float* shift,
                     float slope, bool last, float* Hn, FVec* best) {
    FVec acc[R][NV];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[r][v] = fv_zero();
    const float* w = W + c0;
    for (int64_t q = 0; q < cin; ++q, w += cout) {
        FVec wv[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) wv[v] = fv_load(w + v * HALF);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            const FVec h = fv_set1(H[r * cin + q]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) acc[r][v] = fv_fma(h, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
            if (last) best[v] = fv_max(best[v], acc[r][v]);
            else fv_store(Hn + r * cout + c0 + v * HALF,
                          fv_act(fv_add(acc[r][v], fv_load(shift + c0 + v * HALF)), slope));
        }
}

template <int NV>
inline void mlp_block(const float* H, int64_t rows, int64_t cin, const float* W, int64_t cout, int64_t c0,
                      const float* shift, float slope, bool last, float* Hn, FVec* best) {
    int64_t r = 0;
    for (; r + MLP_R <= rows; r += MLP_R)
        mlp_rows<MLP_R, NV>(H + r * cin, cin, W, cout, c0, shift, slope, last, Hn + r * cout, best);
    for (; r < rows; ++r)
        mlp_rows<1, NV>(H + r * cin, cin, W, cout, c0, shift, slope, last, Hn + r * cout, best);
}

int edge_mlp_max(const float* a, int64_t lda, const float* b, int64_t ldb, const int64_t* idx, int64_t B,
                 int64_t N, int64_t k, float slope1, int64_t L, const float* const* ws,
                 const float* const* shifts, const float* slopes, const int64_t* widths, float* out,
                 int64_t ldo, int nthreads) {
    int64_t wmax = 0;
    for (int64_t l = 0; l <= L; ++l) {
        if (widths[l] <= 0 || widths[l] % HALF) return 2;
        wmax = std::max(wmax, widths[l]);
    }
    if (L < 1 || k < 1) return 3;
    for (int64_t p = 0; p < B * N * k; ++p)
        if (idx[p] < 0 || idx[p] >= N) return 4;
    const int64_t c1 = widths[0];
    parallel_for(B * N, nthreads, [&](int64_t p0, int64_t p1) {
        std::vector<float> buf0(k * wmax), buf1(k * wmax);
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t base = (p / N) * N;
            const int64_t* nb = idx + p * k;
            const float* ai = a + p * lda;
            float* H = buf0.data();
            for (int64_t t = 0; t < k; ++t) {
                const float* bj = b + (base + nb[t]) * ldb;
                for (int64_t c = 0; c < c1; c += HALF)
                    fv_store(H + t * c1 + c, fv_act(fv_add(fv_load(ai + c), fv_load(bj + c)), slope1));
            }
            float* Hn = buf1.data();
            for (int64_t l = 0; l < L; ++l) {
                const int64_t cin = widths[l], cout = widths[l + 1];
                const bool last = l == L - 1;
                for (int64_t c0 = 0; c0 < cout; c0 += MLP_NV * HALF) {
                    FVec best[MLP_NV];
                    for (int v = 0; v < MLP_NV; ++v) best[v] = fv_set1(-std::numeric_limits<float>::infinity());
                    const int64_t nv = std::min<int64_t>(MLP_NV, (cout - c0) / HALF);
                    if (nv == MLP_NV) mlp_block<MLP_NV>(H, k, cin, ws[l], cout, c0, shifts[l], slopes[l], last, Hn, best);
                    else if (nv == 1) mlp_block<1>(H, k, cin, ws[l], cout, c0, shifts[l], slopes[l], last, Hn, best);
                    else if (nv == 2) mlp_block<2>(H, k, cin, ws[l], cout, c0, shifts[l], slopes[l], last, Hn, best);
                    else mlp_block<3>(H, k, cin, ws[l], cout, c0, shifts[l], slopes[l], last, Hn, best);
                    if (last)
                        for (int64_t v = 0; v < nv; ++v)
                            fv_store(out + p * ldo + c0 + v * HALF,
                                     fv_act(fv_add(best[v], fv_load(shifts[l] + c0 + v * HALF)), slopes[l]));
                }
                std::swap(H, Hn);
            }
        }
    });
    return 0;
}

#endif

// Edge passes. a, b are channel-last (B, N, C) so that one neighbour row b[j, c0:c0+W] is
// contiguous and every per-edge operation is a vector operation over W channels. Work units are
// (batch, block of W channels): a unit owns its slice of every output, so no atomics, and the
// backward's scatter to b[j] never races. W is a compile-time width (a last, narrower block of
// C % W channels takes the same code with a run-time width).
constexpr int64_t EW = 16;

// The scalar forward of one block of cw channels: the last, narrower block of C % EW channels
// (full blocks take edge_forward_block below).
template <typename T>
void edge_forward_unit(const T* a, const T* b, const int64_t* idx, int64_t C, int64_t N, int64_t k,
                       int64_t c0, int64_t cw, const T* sgn, int act_stats, T slope,
                       int want_stats, int64_t* src, double* s1, double* s2) {
    T sg[EW], best[EW];
    int64_t arg[EW];
    double acc1[EW] = {0}, acc2[EW] = {0};
    for (int64_t c = 0; c < cw; ++c) sg[c] = sgn ? sgn[c0 + c] : T(1);
    const T slope_s = act_stats ? slope : T(1);     // h = z when the norm sees z
    for (int64_t i = 0; i < N; ++i) {
        const int64_t* nb = idx + i * k;
        const T* b0 = b + nb[0] * C + c0;
        for (int64_t c = 0; c < cw; ++c) { best[c] = sg[c] * b0[c]; arg[c] = nb[0]; }
        for (int64_t t = 1; t < k; ++t) {
            const int64_t j = nb[t];
            const T* bj = b + j * C + c0;
            for (int64_t c = 0; c < cw; ++c) {
                const T v = sg[c] * bj[c];
                const bool m = v > best[c];
                best[c] = m ? v : best[c];
                arg[c] = m ? j : arg[c];
            }
        }
        for (int64_t c = 0; c < cw; ++c) src[(c0 + c) * N + i] = arg[c];   // (C, N) planes
        if (!want_stats) continue;
        const T* ai = a + i * C + c0;
        for (int64_t t = 0; t < k; ++t) {
            const T* bj = b + nb[t] * C + c0;
            for (int64_t c = 0; c < cw; ++c) {
                const T z = ai[c] + bj[c];
                const T h = std::max(z, T(0)) + slope_s * std::min(z, T(0));   // branch-free
                acc1[c] += double(h);            // every edge in double: E[h^2] - E[h]^2
                acc2[c] += double(h) * double(h);  // must not cancel
            }
        }
    }
    if (want_stats)
        for (int64_t c = 0; c < cw; ++c) { s1[c0 + c] = acc1[c]; s2[c0 + c] = acc2[c]; }
}

// W lanes of T as one GCC vector (the compiler splits it into the machine's vector registers):
// the loop vectoriser gave up on the blend in the backward's per-channel loop.
template <typename T> struct VecOf { typedef T type __attribute__((vector_size(EW * sizeof(T)))); };
template <typename T> using Vec = typename VecOf<T>::type;

// m ? x : y lane by lane with bit operations: GCC lowers the vector ?: lane by lane without SSE4.
template <typename V, typename M>
inline V blend(M m, V x, V y) { return (V)((m & (M)x) | (~m & (M)y)); }

template <typename T, int64_t W>
inline Vec<T> vload(const T* p, int64_t cw) {
    Vec<T> v{};
    std::memcpy(&v, p, (W > 0 ? W : cw) * sizeof(T));
    return v;
}
template <typename T, int64_t W>
inline void vstore(T* p, const Vec<T>& v, int64_t cw) {
    std::memcpy(p, &v, (W > 0 ? W : cw) * sizeof(T));
}

template <typename T, int64_t W>
void edge_backward_unit(const T* a, const T* b, const int64_t* idx, int64_t C, int64_t N, int64_t k,
                        int64_t c0, int64_t cw, int act_stats, T slope, const double* pc,
                        const double* qc, const double* mc, T* grad_a, T* grad_b) {
    using V = Vec<T>;
    // mu as an unevaluated sum hi + lo of two T: h - hi is exact for h near mu (Sterbenz), so
    // h - mu keeps the precision of h itself instead of losing ulp(mu) to the rounding of mu.
    T tp[EW] = {}, tq[EW] = {}, th[EW] = {}, tl[EW] = {};
    for (int64_t c = 0; c < cw; ++c) {
        tp[c] = T(pc[c0 + c]);
        tq[c] = T(qc[c0 + c]);
        th[c] = T(mc[c0 + c]);
        tl[c] = T(mc[c0 + c] - double(th[c]));
    }
    const V P = vload<T, EW>(tp, EW), Q = vload<T, EW>(tq, EW);
    const V MH = vload<T, EW>(th, EW), ML = vload<T, EW>(tl, EW);
    const V zero{}, one = zero + T(1), s = zero + (act_stats ? slope : T(1));   // s = 1: h = z
    for (int64_t i = 0; i < N; ++i) {
        const int64_t* nb = idx + i * k;
        const V ai = vload<T, W>(a + i * C + c0, cw);
        V acc{};
        for (int64_t t = 0; t < k; ++t) {
            const int64_t off = nb[t] * C + c0;
            const V z = ai + vload<T, W>(b + off, cw);
            const auto pos = z > zero;
            const V h = blend(pos, z, s * z);                   // act(z)
            const V g = blend(pos, one, s) * (P + Q * ((h - MH) - ML));   // dh/dz (p + q (h - mu))
            acc += g;
            vstore<T, W>(grad_b + off, vload<T, W>(grad_b + off, cw) + g, cw);
        }
        T* ga = grad_a + i * C + c0;
        vstore<T, W>(ga, vload<T, W>(ga, cw) + acc, cw);
    }
}

// The forward of a full block of EW channels with explicit vectors (the loop vectoriser left the
// scalar unit's argmax with its 64-bit indices and the double accumulation mostly scalar). One
// sweep over the neighbours does both the argmax and the statistics, in the scalar unit's order
// (node by node, neighbour by neighbour), so the sums are the same.
template <typename T>
void edge_forward_block(const T* a, const T* b, const int64_t* idx, int64_t C, int64_t N, int64_t k,
                        int64_t c0, const T* sgn, int act_stats, T slope, int want_stats, int64_t* src,
                        double* s1, double* s2) {
    using V = Vec<T>;
    using M = decltype(V{} > V{});                           // lane masks; also the argmax indices
    using D = Vec<double>;
    T sg[EW];
    for (int64_t c = 0; c < EW; ++c) sg[c] = sgn ? sgn[c0 + c] : T(1);
    const V S = vload<T, EW>(sg, EW), zero{};
    const V slope_v = zero + (act_stats ? slope : T(1));     // h = z when the norm sees z
    D acc1{}, acc2{};
    for (int64_t i = 0; i < N; ++i) {
        const int64_t* nb = idx + i * k;
        const V ai = want_stats ? vload<T, EW>(a + i * C + c0, EW) : zero;
        V best{};
        M arg{};
        for (int64_t t = 0; t < k; ++t) {
            const int64_t j = nb[t];
            const V bj = vload<T, EW>(b + j * C + c0, EW);
            const V v = S * bj;
            const M m = t == 0 ? ~M{} : (M)(v > best);        // the first of equal maxima
            best = blend(m, v, best);
            arg = blend(m, M{} + (typename std::remove_reference<decltype(arg[0])>::type)j, arg);
            if (want_stats) {
                const V z = ai + bj;
                const V h = blend(z > zero, z, slope_v * z);
                const D hd = __builtin_convertvector(h, D);
                acc1 += hd;
                acc2 += hd * hd;
            }
        }
        for (int64_t c = 0; c < EW; ++c) src[(c0 + c) * N + i] = (int64_t)arg[c];   // (C, N) planes
    }
    if (want_stats)
        for (int64_t c = 0; c < EW; ++c) { s1[c0 + c] = acc1[c]; s2[c0 + c] = acc2[c]; }
}

// Units: (batch bb, channel block); pointers are offset to batch bb.
template <typename F>
void for_units(int64_t B, int64_t C, int nthreads, F fn) {
    const int64_t nblk = (C + EW - 1) / EW;
    parallel_for(B * nblk, nthreads, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) fn(u / nblk, (u % nblk) * EW, std::min(EW, C - (u % nblk) * EW));
    });
}

template <typename T>
void edge_forward(const T* a, const T* b, const int64_t* idx, int64_t B, int64_t C, int64_t N,
                  int64_t k, const T* sgn, int act_stats, double slope, int want_stats,
                  int64_t* src, double* s1, double* s2, int nthreads) {
    for_units(B, C, nthreads, [&](int64_t bb, int64_t c0, int64_t cw) {
        const T* ab = a ? a + bb * N * C : nullptr;
        if (cw == EW)
            edge_forward_block<T>(ab, b + bb * N * C, idx + bb * N * k, C, N, k, c0, sgn, act_stats, T(slope),
                                  want_stats, src + bb * C * N, s1 ? s1 + bb * C : nullptr, s2 ? s2 + bb * C : nullptr);
        else
            edge_forward_unit<T>(ab, b + bb * N * C, idx + bb * N * k, C, N, k, c0, cw, sgn, act_stats,
                                 T(slope), want_stats, src + bb * C * N, s1 ? s1 + bb * C : nullptr,
                                 s2 ? s2 + bb * C : nullptr);
    });
}

template <typename T>
void edge_backward(const T* a, const T* b, const int64_t* idx, int64_t B, int64_t C, int64_t N,
                   int64_t k, int act_stats, double slope, const double* pc, const double* qc,
                   const double* mc, T* grad_a, T* grad_b, int nthreads) {
    for_units(B, C, nthreads, [&](int64_t bb, int64_t c0, int64_t cw) {
        auto f = cw == EW ? edge_backward_unit<T, EW> : edge_backward_unit<T, 0>;
        f(a + bb * N * C, b + bb * N * C, idx + bb * N * k, C, N, k, c0, cw, act_stats, T(slope), pc, qc, mc,
          grad_a + bb * N * C, grad_b + bb * N * C);
    });
}

// 3. Backward of the maximum over the last axis as autograd of torch.amax defines it: the
// gradient of each row split evenly over the positions equal to the row's maximum,
// (g / count) * (y == v), bit for bit, in one sweep per row (autograd of amax forms the mask,
// converts it, sums it and multiplies: four passes over freshly allocated full-size tensors).
template <typename T>
void max_backward(const T* y, const T* v, const T* g, int64_t rows, int64_t n, T* out, int nthreads) {
    parallel_for(rows, nthreads, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* yr = y + r * n;
            const T vr = v[r];
            int64_t c = 0;
            for (int64_t j = 0; j < n; ++j) c += (yr[j] == vr);
            const T s = g[r] / T(c);                         // no maximum found (NaN): NaN, as torch
            T* o = out + r * n;
            for (int64_t j = 0; j < n; ++j) o[j] = s * T(yr[j] == vr);
        }
    });
}

}  // namespace

extern "C" {
#define PS_SELECT(NAME, T)                                                                        \
int ps_rank_select_##NAME(const T* dist, int64_t rows, int64_t n, int64_t stride,                   \
                          const int64_t* ranks, int64_t nranks, int64_t* out, int nthreads) {       \
    RowValues<T> rv{dist, stride, nullptr, 1, -1, 0};                                              \
    return run<T>(rv, rows, n, ranks, nranks, out, nthreads);                                      \
}                                                                                                   \
int ps_knn_select_##NAME(const T* dot, const T* sq, int64_t batches, int64_t m, int64_t n,         \
                         int64_t self0, const int64_t* ranks, int64_t nranks, int64_t* out,        \
                         int nthreads) {                                                            \
    RowValues<T> rv{dot, n, sq, m, self0, n};                                                      \
    return run<T>(rv, batches * m, n, ranks, nranks, out, nthreads);                               \
}
PS_SELECT(f32, float)
PS_SELECT(f64, double)

#define PS_SYM(NAME, T)                                                                           \
int ps_knn_thresholds_##NAME(const T* sdot, const T* sq, int64_t B, int64_t n, int64_t S,          \
                             int64_t step, int64_t t, T* thr, int nthreads) {                      \
    if (S <= 0 || t < 0 || t >= S || step <= 0 || (S - 1) * step >= n) return 1;                   \
    knn_thresholds<T>(sdot, sq, B, n, S, step, t, thr, nthreads);                                  \
    return 0;                                                                                      \
}                                                                                                  \
int ps_knn_tile_##NAME(const T* g, const T* sq, const T* thr, int64_t B, int64_t n, int64_t mi,    \
                       int64_t mj, int64_t I0, int64_t J0, void* cand, int64_t* cnt, int64_t cap,  \
                       int nthreads) {                                                             \
    if (n > 0xFFFFFFFFll) return 5;                                                                \
    return knn_tile<T>(g, sq, thr, B, n, mi, mj, I0, J0,                                           \
                       static_cast<typename Traits<T>::Packed*>(cand), cnt, cap, nthreads);        \
}                                                                                                  \
int ps_knn_finish_##NAME(void* cand, const int64_t* cnt, int64_t rows, int64_t cap,                \
                         const int64_t* ranks, int64_t nranks, int64_t* out, int nthreads) {       \
    return knn_finish<T>(static_cast<typename Traits<T>::Packed*>(cand), cnt, rows, cap, ranks,    \
                         nranks, out, nthreads);                                                   \
}
PS_SYM(f32, float)
PS_SYM(f64, double)

#define PS_EDGE(NAME, T)                                                                          \
int ps_edge_forward_##NAME(const T* a, const T* b, const int64_t* idx, int64_t B, int64_t C,      \
                           int64_t N, int64_t k, const T* sgn, int act_stats, double slope,       \
                           int want_stats, int64_t* src, double* s1, double* s2, int nthreads) {  \
    edge_forward<T>(a, b, idx, B, C, N, k, sgn, act_stats, slope, want_stats, src, s1, s2,        \
                    nthreads);                                                                    \
    return 0;                                                                                     \
}                                                                                                 \
int ps_edge_backward_##NAME(const T* a, const T* b, const int64_t* idx, int64_t B, int64_t C,     \
                            int64_t N, int64_t k, int act_stats, double slope, const double* pc,  \
                            const double* qc, const double* mc, T* grad_a, T* grad_b,            \
                            int nthreads) {                                                       \
    edge_backward<T>(a, b, idx, B, C, N, k, act_stats, slope, pc, qc, mc, grad_a, grad_b,         \
                     nthreads);                                                                   \
    return 0;                                                                                     \
}
PS_EDGE(f32, float)
PS_EDGE(f64, double)

#define PS_MAX(NAME, T)                                                                           \
int ps_max_backward_##NAME(const T* y, const T* v, const T* g, int64_t rows, int64_t n, T* out,    \
                           int nthreads) {                                                        \
    max_backward<T>(y, v, g, rows, n, out, nthreads);                                              \
    return 0;                                                                                      \
}
PS_MAX(f32, float)
PS_MAX(f64, double)
// 1 when this build has the fused kNN (AVX-512 or AVX2 + FMA); ps_knn_fused_f32 returns 9 otherwise.
int ps_has_knn_fused() {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    return 1;
#else
    return 0;
#endif
}
int ps_knn_fused_f32(const float* x, const float* sq, int64_t B, int64_t C, int64_t n,
                     const int64_t* ranks, int64_t nranks, int64_t* out, int nthreads) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    if (nranks <= 0) return 0;
    return knn_fused(x, sq, B, C, n, ranks, nranks, out, nthreads);
#else
    (void)x; (void)sq; (void)B; (void)C; (void)n; (void)ranks; (void)nranks; (void)out; (void)nthreads;
    return 9;
#endif
}
int ps_edge_mlp_max_f32(const float* a, int64_t lda, const float* b, int64_t ldb, const int64_t* idx,
                        int64_t B, int64_t N, int64_t k, double slope1, int64_t L, const float* const* ws,
                        const float* const* shifts, const float* slopes, const int64_t* widths, float* out,
                        int64_t ldo, int nthreads) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    return edge_mlp_max(a, lda, b, ldb, idx, B, N, k, float(slope1), L, ws, shifts, slopes, widths, out, ldo,
                        nthreads);
#else
    (void)a; (void)lda; (void)b; (void)ldb; (void)idx; (void)B; (void)N; (void)k; (void)slope1; (void)L;
    (void)ws; (void)shifts; (void)slopes; (void)widths; (void)out; (void)ldo; (void)nthreads;
    return 9;
#endif
}
int ps_abi_version() { return 8; }
}
