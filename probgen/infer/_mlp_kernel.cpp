// The log joint of an MLP BNN (the "fused" kernel of probgen/infer/_flat.py) and its gradient,
// for every chain, in one pass over blocks of data rows.
//
// Rows are the vector lanes: a layer's activations for a block of R rows (kTiles vectors) are
// stored unit by unit, (units, R), so every operation is a whole vector of rows and no unit is
// padded.  The forward pass sums 4 units at a time in registers, then applies the activation in
// one pass over the block; the weight gradient of a block is a small product of the block's
// deltas and inputs, summed in registers over 4 x 4 units at a time and added once per block to
// per-lane accumulators, which are summed across lanes at the end.
//
// It is the operator probgen::fused_mlp, registered with torch's dispatcher, so that compiled
// graphs (the NUTS sampler's loop) call it from C++ without Python.  probgen/infer/_native.py
// builds it once per machine (g++ -O3 -march=native against torch's headers, a few seconds) and
// loads it; benchmarks/fused_mlp.py times it against the compiled "mlp" kernel.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kMaxLayers = 16;

enum Activation : int64_t { kIdentity = 0, kTanh = 1, kSigmoid = 2, kRelu = 3 };
enum Likelihood : int64_t { kGaussian = 0, kBernoulli = 1, kCategorical = 2 };

// The network, its data and its priors, from the operator's arguments (see fused_mlp below).
struct Spec {
    int64_t n;          // data rows
    int64_t chains;     // rows of u
    int64_t dim;        // length of a row of u (and of the gradient)
    int64_t layers;
    int64_t likelihood; // Likelihood
    int64_t noise_off;  // offset of log(noise scale) in a row of u, or -1 (fixed noise)
    double fixed_log_s; // log(noise scale) when noise_off < 0
    int64_t width[kMaxLayers + 1];  // width[0] = inputs, width[l + 1] = outputs of layer l
    int64_t act[kMaxLayers];        // Activation after layer l
    int64_t w_off[kMaxLayers];      // offset of layer l's (out, in) weight in a row of u, or -1 (fixed)
    int64_t b_off[kMaxLayers];      // offset of its bias, or -1 (fixed or absent)
    const void* fixed_w[kMaxLayers];  // the fixed (out, in) weight when w_off < 0
    const void* fixed_b[kMaxLayers];  // the fixed bias when b_off < 0, or null (no bias)
    const void* x_t;         // (width[0], n): the inputs, transposed
    const void* target_t;    // (width[layers], n): the targets, transposed (one-hot for Categorical)
    const void* prior_loc;   // (dim,): Gaussian prior means of u (zero off the weights)
    const void* prior_prec;  // (dim,): their precisions (zero off the weights)
    double prior_const;      // the priors' normalising constants
    double noise_prior_scale;  // s0 of the noise scale's HalfNormal(s0) prior, when noise_off >= 0
};

constexpr double kHalfLog2Pi = 0.91893853320467274178;

template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);  // one 512-bit vector (two 256-bit ones without AVX-512)

constexpr int64_t kTiles = 8;  // vectors of rows per block

// exp for float with a branch-free, vectorisable body: 2^k p(r), r = x - k ln 2 in
// [-ln2/2, ln2/2], p the Taylor polynomial of degree 6 (relative error below 2e-7 there).
inline float exp_approx(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);
    const float k = std::floor(x * 1.44269504088896341f + 0.5f);
    const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;  // ln 2 in two parts
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

inline double exp_approx(double x) { return std::exp(x); }

// tanh for float: x P(x^2) / Q(x^2) on |x| <= 9 (tanh(9) is 1 in float32), degrees 4 and 4 in
// x^2, our own fit (iteratively reweighted least squares towards the minimax of the absolute
// error); the error evaluated in float32 is below 4e-7 everywhere.  13 operations and no exp.
inline float tanh_approx(float x) {
    x = std::min(std::max(x, -9.0f), 9.0f);
    const float s = x * x;
    float p = 1.318183784e-08f;
    p = p * s + 2.046995178e-05f;
    p = p * s + 3.486460773e-03f;
    p = p * s + 1.337309331e-01f;
    p = p * s + 9.999998808e-01f;
    float q = 7.701640925e-07f;
    q = q * s + 3.271192254e-04f;
    q = q * s + 2.584151179e-02f;
    q = q * s + 4.670639038e-01f;
    q = q * s + 1.0f;
    return x * p / q;
}

inline double tanh_approx(double x) { return std::tanh(x); }

template <int64_t Act, typename T>
inline T activate(T z) {
    if constexpr (Act == kTanh) return tanh_approx(z);
    else if constexpr (Act == kSigmoid) return T(1) / (T(1) + exp_approx(-z));
    else if constexpr (Act == kRelu) return z > T(0) ? z : T(0);
    else return z;
}

// calls body(A) with the activation code A as a compile-time constant
template <typename F>
inline void with_activation(int64_t act, F&& body) {
    switch (act) {
        case kTanh: body(std::integral_constant<int64_t, kTanh>{}); break;
        case kSigmoid: body(std::integral_constant<int64_t, kSigmoid>{}); break;
        case kRelu: body(std::integral_constant<int64_t, kRelu>{}); break;
        default: body(std::integral_constant<int64_t, kIdentity>{}); break;
    }
}

// d act / d z, written in the activation's output a
template <int64_t Act, typename T>
inline T activate_grad(T a) {
    if constexpr (Act == kTanh) return T(1) - a * a;
    else if constexpr (Act == kSigmoid) return a * (T(1) - a);
    else if constexpr (Act == kRelu) return a > T(0) ? T(1) : T(0);
    else return T(1);
}

// calls body(G, j) for j = 0, 4, 8, ... with G = min(4, m - j) as a compile-time constant
template <typename F>
inline void by_fours(int64_t m, F&& body) {
    for (int64_t j = 0; j < m; j += 4) {
        switch (std::min<int64_t>(4, m - j)) {
            case 4: body(std::integral_constant<int64_t, 4>{}, j); break;
            case 3: body(std::integral_constant<int64_t, 3>{}, j); break;
            case 2: body(std::integral_constant<int64_t, 2>{}, j); break;
            default: body(std::integral_constant<int64_t, 1>{}, j); break;
        }
    }
}

// One 64-byte vector of T (GCC/Clang vector extensions: one AVX-512 register, or two AVX2 ones).
template <typename T>
struct VecOf {
    typedef T type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
inline Vec<T> load(const T* p) {
    Vec<T> v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <typename T>
inline void store(T* p, Vec<T> v) {
    std::memcpy(p, &v, sizeof v);
}

// dst[j, :] = b[j] + sum_k w[j, k] src[k, :] for units j0 <= j < j0 + G over the block's R rows
// (the activation comes after, in one pass over the block); w[j, k] is w[j * w_stride + k * w_col],
// so that w^T can be passed; src is (in, R) with row stride src_stride, dst (out, R).
template <int64_t G, typename T>
inline void affine(const T* w, int64_t w_stride, int64_t w_col, const T* b, int64_t j0, int64_t in,
                   const T* src, int64_t src_stride, T* dst, int64_t R) {
    constexpr int64_t V = kLanes<T>;
    for (int64_t t = 0; t < R; t += V) {
        Vec<T> acc[G];
        for (int64_t g = 0; g < G; ++g) acc[g] = Vec<T>{} + (b ? b[j0 + g] : T(0));
        for (int64_t k = 0; k < in; ++k) {
            const Vec<T> v = load(src + k * src_stride + t);
            for (int64_t g = 0; g < G; ++g) acc[g] += w[(j0 + g) * w_stride + k * w_col] * v;
        }
        for (int64_t g = 0; g < G; ++g) store(dst + (j0 + g) * R + t, acc[g]);
    }
}

// lanes[j, k, :] += sum over the block's vectors of d[j, rows] * a[k, rows], for G x H units
template <int64_t G, int64_t H, typename T>
inline void outer(const T* d, int64_t j0, const T* a, int64_t a_stride, int64_t k0, int64_t in, T* lanes, int64_t R) {
    constexpr int64_t V = kLanes<T>;
    Vec<T> acc[G][H];
    for (int64_t g = 0; g < G; ++g)
        for (int64_t h = 0; h < H; ++h) acc[g][h] = Vec<T>{};
    for (int64_t t = 0; t < R; t += V) {
        Vec<T> dv[G], av[H];
        for (int64_t g = 0; g < G; ++g) dv[g] = load(d + (j0 + g) * R + t);
        for (int64_t h = 0; h < H; ++h) av[h] = load(a + (k0 + h) * a_stride + t);
        for (int64_t g = 0; g < G; ++g)
            for (int64_t h = 0; h < H; ++h) acc[g][h] += dv[g] * av[h];
    }
    for (int64_t g = 0; g < G; ++g)
        for (int64_t h = 0; h < H; ++h) {
            T* lane = lanes + ((j0 + g) * in + k0 + h) * V;
            store(lane, load(lane) + acc[g][h]);
        }
}

template <typename T>
struct Layer {
    int64_t in, out, act;
    bool learn_w, learn_b;
    const T* w;          // (out, in), this chain's
    const T* b;          // (out,) or null
    std::vector<T> a;    // (out, R): the block's activations
    std::vector<T> gw;   // (out, in, V): per-lane sums of the weight gradient
    std::vector<T> gb;   // (out, V)
};

template <typename T>
T lane_sum(const T* v) {
    T s = 0;
    for (int64_t l = 0; l < kLanes<T>; ++l) s += v[l];
    return s;
}

template <typename T>
void run(const Spec& s, const T* u, T* grad, T* out) {
    constexpr int64_t V = kLanes<T>;
    constexpr int64_t R = kTiles * V;  // rows per block
    const int64_t L = s.layers, K = s.width[L], in0 = s.width[0], n = s.n;
    const T* x_t = static_cast<const T*>(s.x_t);
    const T* target_t = static_cast<const T*>(s.target_t);
    std::vector<Layer<T>> layers(L);
    int64_t widest = 0;
    for (int64_t l = 0; l <= L; ++l) widest = std::max(widest, s.width[l]);
    std::vector<T> delta(widest * R), next(widest * R), tail(in0 * R);
    for (int64_t l = 0; l < L; ++l) {
        Layer<T>& ly = layers[l];
        ly.in = s.width[l];
        ly.out = s.width[l + 1];
        ly.act = s.act[l];
        ly.learn_w = s.w_off[l] >= 0;
        ly.learn_b = s.b_off[l] >= 0;
        ly.a.assign(ly.out * R, T(0));
        ly.gw.assign(ly.learn_w ? ly.out * ly.in * V : 0, T(0));
        ly.gb.assign(ly.learn_b ? ly.out * V : 0, T(0));
    }
    std::memset(grad, 0, sizeof(T) * s.chains * s.dim);
    for (int64_t c = 0; c < s.chains; ++c) {
        const T* uc = u + c * s.dim;
        for (int64_t l = 0; l < L; ++l) {
            Layer<T>& ly = layers[l];
            ly.w = ly.learn_w ? uc + s.w_off[l] : static_cast<const T*>(s.fixed_w[l]);
            ly.b = ly.learn_b ? uc + s.b_off[l] : static_cast<const T*>(s.fixed_b[l]);
            std::fill(ly.gw.begin(), ly.gw.end(), T(0));
            std::fill(ly.gb.begin(), ly.gb.end(), T(0));
        }
        const T log_s = s.noise_off >= 0 ? uc[s.noise_off] : T(s.fixed_log_s);
        const T inv_var = std::exp(T(-2) * log_s);
        T total = 0;
        for (int64_t i = 0; i < n; i += R) {
            const int64_t rows = std::min(R, n - i);
            // 1. forward; the last, partial block reads a zero-padded copy of its inputs
            const T* src = x_t + i;
            int64_t src_stride = n;
            if (rows < R) {
                std::fill(tail.begin(), tail.end(), T(0));
                for (int64_t k = 0; k < in0; ++k) std::copy(x_t + k * n + i, x_t + k * n + n, tail.begin() + k * R);
                src = tail.data();
                src_stride = R;
            }
            for (int64_t l = 0; l < L; ++l) {
                Layer<T>& ly = layers[l];
                const T* in = l > 0 ? layers[l - 1].a.data() : src;
                const int64_t stride = l > 0 ? R : src_stride;
                T* a = ly.a.data();
                by_fours(ly.out, [&](auto G, int64_t j) { affine<G()>(ly.w, ly.in, int64_t(1), ly.b, j, ly.in, in, stride, a, R); });
                with_activation(ly.act, [&](auto A) {
                    if constexpr (A() != kIdentity)
                        for (int64_t e = 0; e < ly.out * R; ++e) a[e] = activate<A()>(a[e]);
                });
            }
            // 2. the rows' likelihood terms and their derivatives in the output f; zero past row n
            const T* f = layers[L - 1].a.data();
            std::fill(delta.begin(), delta.begin() + K * R, T(0));
            for (int64_t r = 0; r < rows; ++r) {
                if (s.likelihood == kGaussian) {
                    for (int64_t j = 0; j < K; ++j) {
                        const T res = target_t[j * n + i + r] - f[j * R + r];
                        total += res * res;
                        delta[j * R + r] = res * inv_var;
                    }
                } else if (s.likelihood == kBernoulli) {
                    for (int64_t j = 0; j < K; ++j) {
                        const T z = f[j * R + r], y = target_t[j * n + i + r];
                        total += y * z - (std::max(z, T(0)) + std::log1p(std::exp(-std::abs(z))));
                        delta[j * R + r] = y - T(1) / (T(1) + std::exp(-z));
                    }
                } else {
                    T m = f[r];
                    for (int64_t j = 1; j < K; ++j) m = std::max(m, f[j * R + r]);
                    T sum = 0;
                    for (int64_t j = 0; j < K; ++j) sum += std::exp(f[j * R + r] - m);
                    const T lse = m + std::log(sum);
                    for (int64_t j = 0; j < K; ++j) {
                        const T y = target_t[j * n + i + r];
                        total += y * (f[j * R + r] - lse);
                        delta[j * R + r] = y - std::exp(f[j * R + r] - lse);
                    }
                }
            }
            // 3. backward: delta is d log p / d (output of layer l), (out, R)
            for (int64_t l = L - 1; l >= 0; --l) {
                Layer<T>& ly = layers[l];
                T* d = delta.data();
                const T* a = ly.a.data();
                with_activation(ly.act, [&](auto A) {
                    if constexpr (A() != kIdentity)
                        for (int64_t e = 0; e < ly.out * R; ++e) d[e] *= activate_grad<A()>(a[e]);
                });
                if (ly.learn_b) {
                    for (int64_t j = 0; j < ly.out; ++j) {
                        Vec<T> acc = load(ly.gb.data() + j * V);
                        for (int64_t t = 0; t < R; t += V) acc += load(d + j * R + t);
                        store(ly.gb.data() + j * V, acc);
                    }
                }
                const T* prev = l > 0 ? layers[l - 1].a.data() : src;
                const int64_t prev_stride = l > 0 ? R : src_stride;
                if (ly.learn_w) {
                    by_fours(ly.out, [&](auto G, int64_t j) {
                        by_fours(ly.in, [&](auto H, int64_t k) {
                            outer<G(), H()>(d, j, prev, prev_stride, k, ly.in, ly.gw.data(), R);
                        });
                    });
                }
                if (l > 0) {  // next[k, r] = sum_j w[j, k] d[j, r]: the affine map with w^T, no bias
                    by_fours(ly.in, [&](auto H, int64_t k) {
                        affine<H()>(ly.w, int64_t(1), ly.in, static_cast<const T*>(nullptr), k, ly.out, d, R, next.data(), R);
                    });
                    std::swap(delta, next);
                }
            }
        }
        // 4. the log joint: the likelihood with its noise scale, then the Gaussian weight priors
        T* gc = grad + c * s.dim;
        T value = total;
        if (s.likelihood == kGaussian) {
            const T nk = T(n * K);
            value = T(-0.5) * total * inv_var - nk * (log_s + T(kHalfLog2Pi));
            if (s.noise_off >= 0) {  // s = exp(u_s) ~ HalfNormal(s0), with log|ds/du_s| = u_s
                const T s0 = T(s.noise_prior_scale);
                const T ratio = std::exp(T(2) * log_s) / (s0 * s0);
                value += (T(std::log(2.0) - kHalfLog2Pi) - std::log(s0)) - T(0.5) * ratio + log_s;
                gc[s.noise_off] = total * inv_var - nk - ratio + T(1);
            }
        }
        for (int64_t l = 0; l < L; ++l) {
            const Layer<T>& ly = layers[l];
            if (ly.learn_w)
                for (int64_t e = 0; e < ly.out * ly.in; ++e) gc[s.w_off[l] + e] = lane_sum(ly.gw.data() + e * V);
            if (ly.learn_b)
                for (int64_t j = 0; j < ly.out; ++j) gc[s.b_off[l] + j] = lane_sum(ly.gb.data() + j * V);
        }
        const T* loc = static_cast<const T*>(s.prior_loc);
        const T* prec = static_cast<const T*>(s.prior_prec);
        T quad = 0;
        for (int64_t e = 0; e < s.dim; ++e) {
            const T diff = uc[e] - loc[e], scaled = diff * prec[e];
            quad += diff * scaled;
            gc[e] -= scaled;
        }
        out[c] = value - T(0.5) * quad + T(s.prior_const);
    }
}

// The operator.  spec = [likelihood, noise_off, layers, *widths, *activations, *weight offsets,
// *bias offsets, *fixed weight indices, *fixed bias indices] (offsets into a row of u, -1 where a
// part is not latent; indices into fixed, -1 for none); scalars = [log of a fixed noise scale,
// the priors' constant, the noise prior's scale].  Returns log p(u[c]) per chain and its gradient.
std::tuple<at::Tensor, at::Tensor> fused_mlp(const at::Tensor& u_in, const at::Tensor& x_t, const at::Tensor& target_t,
                                             const at::Tensor& prior_loc, const at::Tensor& prior_prec, at::TensorList fixed,
                                             c10::IntArrayRef spec, c10::ArrayRef<double> scalars) {
    TORCH_CHECK(u_in.dim() == 2, "fused_mlp: u must be (chains, dim)");
    TORCH_CHECK(u_in.scalar_type() == at::kFloat || u_in.scalar_type() == at::kDouble, "fused_mlp: u must be float32 or float64");
    TORCH_CHECK(spec.size() >= 4 && scalars.size() == 3, "fused_mlp: malformed spec or scalars");
    const at::Tensor u = u_in.contiguous();
    const auto dtype = u.scalar_type();
    const int64_t layers = spec[2];
    TORCH_CHECK(layers >= 1 && layers <= kMaxLayers && int64_t(spec.size()) == 4 + 6 * layers, "fused_mlp: malformed spec");
    for (const at::Tensor* t : {&x_t, &target_t, &prior_loc, &prior_prec})
        TORCH_CHECK(t->scalar_type() == dtype && t->is_contiguous() && t->device().is_cpu(), "fused_mlp: every tensor must be contiguous, on the CPU, of u's dtype");
    Spec s{};
    s.n = x_t.size(1);
    s.chains = u.size(0);
    s.dim = u.size(1);
    s.likelihood = spec[0];
    s.noise_off = spec[1];
    s.layers = layers;
    s.fixed_log_s = scalars[0];
    s.prior_const = scalars[1];
    s.noise_prior_scale = scalars[2];
    int64_t pos = 3;
    for (int64_t l = 0; l <= layers; ++l) s.width[l] = spec[pos++];
    for (int64_t l = 0; l < layers; ++l) s.act[l] = spec[pos++];
    for (int64_t l = 0; l < layers; ++l) s.w_off[l] = spec[pos++];
    for (int64_t l = 0; l < layers; ++l) s.b_off[l] = spec[pos++];
    for (int64_t part = 0; part < 2; ++part) {
        for (int64_t l = 0; l < layers; ++l) {
            const int64_t index = spec[pos++];
            if (index < 0) continue;
            TORCH_CHECK(index < int64_t(fixed.size()), "fused_mlp: spec indexes a fixed parameter that is not given");
            const at::Tensor& t = fixed[index];
            TORCH_CHECK(t.scalar_type() == dtype && t.is_contiguous(), "fused_mlp: fixed parameters must be contiguous, of u's dtype");
            (part == 0 ? s.fixed_w : s.fixed_b)[l] = t.data_ptr();
        }
    }
    s.x_t = x_t.data_ptr();
    s.target_t = target_t.data_ptr();
    s.prior_loc = prior_loc.data_ptr();
    s.prior_prec = prior_prec.data_ptr();
    at::Tensor value = at::empty({s.chains}, u.options());
    at::Tensor grad = at::empty_like(u);
    if (dtype == at::kFloat)
        run<float>(s, u.data_ptr<float>(), grad.data_ptr<float>(), value.data_ptr<float>());
    else
        run<double>(s, u.data_ptr<double>(), grad.data_ptr<double>(), value.data_ptr<double>());
    return {value, grad};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(probgen, m) {
    m.def("fused_mlp(Tensor u, Tensor x_t, Tensor target_t, Tensor prior_loc, Tensor prior_prec, Tensor[] fixed, "
          "int[] spec, float[] scalars) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(probgen, CPU, m) { m.impl("fused_mlp", &fused_mlp); }
