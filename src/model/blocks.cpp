#include "kto/model/blocks.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include "kto/model/fused_cpu.h"
#include "kto/util/check.h"

namespace kto::model {
namespace {

// Masked scores get this added: exp() of it underflows to exactly 0 in every dtype we compute
// softmax in, and two of them added stay finite (a fully masked row gives no NaN).
constexpr double kMaskedScore = -1e9;

bool is_low_precision(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }
at::ScalarType stats_dtype(at::ScalarType t) { return is_low_precision(t) ? at::kFloat : t; }

// Views of one flat weight buffer, made by a single split rather than one narrow each. Both
// read the same memory; they differ in backward: a narrow's gradient is a zero-filled buffer of
// the whole flat size with the view's part copied in, one per view, all summed — for a block,
// six full-size fills and five full-size additions — while a split's gradient is one
// concatenation of its pieces' gradients (zeros only for gaps and unused pieces). Same values.
class FlatViews {
 public:
  explicit FlatViews(const at::Tensor& flat) : flat_(flat) {}

  // A view of [offset, offset + numel) with `shape` (empty: 1-D); returns its index in views().
  size_t add(int64_t offset, int64_t numel, std::vector<int64_t> shape) {
    spans_.push_back({offset, numel, std::move(shape)});
    return spans_.size() - 1;
  }
  size_t add(const ParamSpec& p) { return add(p.offset, p.numel, p.shape); }
  // [first .. last] of a layout that placed them back to back, as rows of `row_width`
  // (0: 1-D), e.g. q, k and v as one [H*D + 2*Hkv*D, C] matrix.
  size_t add_adjacent(const UnitLayout& unit, Role first, Role last, int64_t row_width) {
    const ParamSpec& a = unit.at(first);
    const ParamSpec& b = unit.at(last);
    KTO_CHECK(b.offset >= a.offset, unit.name, ": layout order broken");
    const int64_t numel = b.offset + b.numel - a.offset;
    return add(a.offset, numel,
               row_width > 0 ? std::vector<int64_t>{numel / row_width, row_width} : std::vector<int64_t>{});
  }

  // The views, in the order they were added.
  std::vector<at::Tensor> views() const {
    std::vector<size_t> order(spans_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [this](size_t a, size_t b) { return spans_[a].offset < spans_[b].offset; });
    std::vector<int64_t> sizes;  // pieces covering the whole flat: gaps and spans, in order
    std::vector<size_t> piece_of(spans_.size());
    int64_t at = 0;
    for (size_t i : order) {
      const Span& s = spans_[i];
      KTO_CHECK(s.offset >= at, "weight views overlap at element ", s.offset);
      if (s.offset > at) sizes.push_back(s.offset - at);
      piece_of[i] = sizes.size();
      sizes.push_back(s.numel);
      at = s.offset + s.numel;
    }
    KTO_CHECK(at <= flat_.numel(), "weight view ends at ", at, " past the buffer's ", flat_.numel());
    if (at < flat_.numel()) sizes.push_back(flat_.numel() - at);
    const std::vector<at::Tensor> pieces = flat_.split_with_sizes(sizes);
    std::vector<at::Tensor> out;
    for (size_t i = 0; i < spans_.size(); ++i) {
      const at::Tensor& p = pieces[piece_of[i]];
      out.push_back(spans_[i].shape.empty() ? p : p.view(spans_[i].shape));
    }
    return out;
  }

 private:
  struct Span {
    int64_t offset, numel;
    std::vector<int64_t> shape;
  };
  at::Tensor flat_;
  std::vector<Span> spans_;
};

constexpr size_t kNoView = static_cast<size_t>(-1);

size_t add_optional(FlatViews& v, const UnitLayout& unit, Role role) {
  const ParamSpec* p = unit.find(role);
  return p ? v.add(*p) : kNoView;
}

at::Tensor pick(const std::vector<at::Tensor>& views, size_t i) {
  return i == kNoView ? at::Tensor() : views[i];
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  // Hugging Face LlamaRMSNorm: statistics in fp32 (or the run dtype), scale in the run dtype.
  if (fused::elementwise_supported(x) && w.scalar_type() == x.scalar_type())
    return fused::rms_norm(x, w, eps);
  const at::Tensor xs = x.to(stats_dtype(x.scalar_type()));
  const at::Tensor normed = xs * at::rsqrt(xs.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return w * normed.to(x.scalar_type());
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  const at::ScalarType s = stats_dtype(x.scalar_type());
  return at::layer_norm(x.to(s), {x.size(-1)}, w.to(s), b.to(s), eps).to(x.scalar_type());
}

at::Tensor norm(const ModelConfig& c, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return c.uses_layer_norm() ? layer_norm(x, w, b, c.norm_eps) : rms_norm(x, w, c.norm_eps);
}

at::Tensor activation(Activation a, const at::Tensor& x) {
  switch (a) {
    case Activation::silu: return at::silu(x);
    case Activation::gelu: return at::gelu(x);
    case Activation::gelu_new:
    case Activation::gelu_pytorch_tanh: return at::gelu(x, "tanh");
    case Activation::relu: return at::relu(x);
  }
  KTO_CHECK(false, "unsupported activation");
}

at::Tensor rotate_half(const at::Tensor& x) {
  const std::vector<at::Tensor> halves = x.chunk(2, -1);
  return at::cat({-halves[1], halves[0]}, -1);
}

// x: [B, H, T, D]; the first R = cos.size(-1) dims of each head are rotated.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rot = cos.size(-1);
  const int64_t dim = x.size(-1);
  if (rot == dim) return x * cos + rotate_half(x) * sin;
  const std::vector<at::Tensor> p = x.split_with_sizes({rot, dim - rot}, -1);
  return at::cat({p[0] * cos + rotate_half(p[0]) * sin, p[1]}, -1);
}

// [B, Hkv, T, D] -> [B, Hkv * rep, T, D]; query head h uses kv head h / rep (HF repeat_kv).
at::Tensor repeat_kv(const at::Tensor& x, int64_t rep) {
  if (rep == 1) return x;
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  return x.unsqueeze(2).expand({B, H, rep, T, D}).reshape({B, H * rep, T, D});
}

// softmax(q k^T / sqrt(D) + mask (+ key_mask)) v for q [B, H, Tq, D] and k, v [B, H / rep, Tk, D]
// (query head h uses kv head h / rep); mask [Tq, Tk] additive. `causal`: the mask is plain
// causal (Tq == Tk), for which LibTorch 2.x has fused kernels.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t rep,
                  const at::Tensor& mask, const at::Tensor& key_mask, bool causal) {
#if TORCH_VERSION_MAJOR >= 2
  const at::Tensor kr = repeat_kv(k, rep), vr = repeat_kv(v, rep);
  if (causal && !key_mask.defined())
    return at::scaled_dot_product_attention(q, kr, vr, {}, 0.0, /*is_causal=*/true);
  at::Tensor m = mask.to(q.scalar_type()).contiguous();  // a slice of a longer table
  if (key_mask.defined()) m = m + key_mask.to(q.scalar_type());
  return at::scaled_dot_product_attention(q, kr, vr, m);
#else
  const at::ScalarType sdt = stats_dtype(q.scalar_type());
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
  // The `rep` query heads of one kv head as one [rep * Tq, D] operand (a free view of a
  // contiguous q): every product reads each kv head once, and K/V are never repeated. Each score
  // is the same dot product either way; only the batching of the GEMMs differs.
  const bool grouped = rep > 1 && q.is_contiguous();
  const at::Tensor qg = grouped ? q.view({B, H / rep, rep * Tq, D}) : q;
  const at::Tensor kg = grouped ? k : repeat_kv(k, rep), vg = grouped ? v : repeat_kv(v, rep);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  // Without autograd (the reference, the KL pass) one score matrix at a time, kept in cache.
  if (!at::GradMode::is_enabled() && !key_mask.defined() && fused::attention_no_grad_supported(qg, kg, vg))
    return fused::attention_no_grad(qg, kg, vg, scale, mask, causal).view({B, H, Tq, D});
  const at::Tensor raw = at::matmul(qg, kg.transpose(-2, -1));  // [B, H / rep, rep * Tq, Tk] grouped
  at::Tensor probs;
  if (fused::masked_softmax_supported(raw) && !key_mask.defined()) {
    probs = fused::masked_softmax(raw, scale, mask, causal);
  } else {
    at::Tensor scores = raw.to(sdt);
    scores.mul_(scale);
    // Row r of a grouped matrix is query position r % Tq: the mask repeated per query head (not
    // added through a 5-D view, which autograd would record as an in-place op on a view).
    scores.add_(grouped ? mask.repeat({rep, 1}) : mask);
    if (key_mask.defined()) scores.add_(key_mask);
    probs = at::softmax(scores, -1).to(q.scalar_type());
  }
  return at::matmul(probs, vg).view({B, H, Tq, D});
#endif
}

// A packed batch's attention (packing.h): each group attends its own keys (after its
// provider's, for a continuation) under its own mask. q [1, H, N, D]; k, v [1, Hkv, N, D].
at::Tensor packed_attention(const AttentionInputs& attn, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, int64_t rep, const BlockKV* prefix) {
  std::vector<int64_t> lengths;
  for (const PackedGroup& g : attn.packed) lengths.push_back(g.length());
  // Split, not narrowed, for the gradient's sake (see FlatViews).
  const std::vector<at::Tensor> qs = q.split_with_sizes(lengths, 2);
  const std::vector<at::Tensor> ks = k.split_with_sizes(lengths, 2);
  const std::vector<at::Tensor> vs = v.split_with_sizes(lengths, 2);
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const PackedGroup& g = attn.packed[i];
    at::Tensor kg = ks[i], vg = vs[i];
    if (g.prefix_length > 0) {
      KTO_CHECK(prefix && prefix->k.defined(), "a continuation group runs without its provider's keys");
      kg = at::cat({prefix->k.narrow(2, g.prefix_start, g.prefix_length), kg}, 2);
      vg = at::cat({prefix->v.narrow(2, g.prefix_start, g.prefix_length), vg}, 2);
    }
    out.push_back(attend(qs[i], kg, vg, rep, attn.group_masks[i], {}, attn.group_causal[i]));
  }
  return out.size() == 1 ? out[0] : at::cat(out, 2);
}

at::Tensor attention(const ModelConfig& c, const BlockWeights& w, const at::Tensor& h_BTC,
                     const AttentionInputs& attn, const BlockKV* prefix, BlockKV* kv_out) {
  const int64_t B = h_BTC.size(0), T = h_BTC.size(1);
  const int64_t H = c.num_attention_heads, Hkv = c.kv_heads(), D = c.head_size();
  const at::Tensor qkv = at::linear(h_BTC, w.qkv_w, w.qkv_b);
  at::Tensor q, k, v;
  if (fused::rope_heads_supported(qkv)) {  // one pass each way instead of the chain below
    const auto heads =
        fused::rope_heads(qkv, attn.cos, attn.sin, H, Hkv, D,
                          c.arch == Arch::gpt_neox ? fused::QkvLayout::neox : fused::QkvLayout::llama);
    q = heads[0];
    k = heads[1];
    v = heads[2];
  } else {
    // Split, not narrowed: in backward the pieces' gradients are concatenated once instead of
    // each zero-padded to the full width and summed (see FlatViews).
    if (c.arch == Arch::gpt_neox) {
      const std::vector<at::Tensor> p =
          qkv.view({B, T, H, 3 * D}).split_with_sizes({D, D, D}, -1);  // per head [q k v]
      q = p[0];
      k = p[1];
      v = p[2];
    } else {
      const std::vector<at::Tensor> p = qkv.split_with_sizes({H * D, Hkv * D, Hkv * D}, -1);
      q = p[0].view({B, T, H, D});
      k = p[1].view({B, T, Hkv, D});
      v = p[2].view({B, T, Hkv, D});
    }
    q = apply_rope(q.transpose(1, 2), attn.cos, attn.sin);  // [B, H, T, D]
    k = apply_rope(k.transpose(1, 2), attn.cos, attn.sin);  // [B, Hkv, T, D]
    v = v.transpose(1, 2);
  }
  if (kv_out) *kv_out = {k.detach(), v.detach()};

  const at::Tensor out =  // [B, H, T, D]
      attn.packed.empty() ? attend(q, k, v, H / Hkv, attn.causal_TT, attn.keys_B11T, attn.causal_only)
                          : packed_attention(attn, q, k, v, H / Hkv, prefix);
  return at::linear(out.transpose(1, 2).reshape({B, T, H * D}), w.o_w, w.o_b);
}

at::Tensor mlp(const ModelConfig& c, const BlockWeights& w, const at::Tensor& h_BTC) {
  const at::Tensor up = at::linear(h_BTC, w.up_w, w.up_b);
  at::Tensor act;
  if (c.gated_mlp()) {
    if (c.hidden_act == Activation::silu && fused::elementwise_supported(up)) {
      act = fused::swiglu(up);  // one pass each way, no concatenation of the halves' gradients
    } else {
      const std::vector<at::Tensor> gate_up = up.chunk(2, -1);  // split, as qkv above
      act = activation(c.hidden_act, gate_up[0]) * gate_up[1];
    }
  } else {
    act = activation(c.hidden_act, up);
  }
  return at::linear(act, w.down_w, w.down_b);
}

}  // namespace

EmbedWeights bind_embed(const UnitLayout& unit, const at::Tensor& flat) {
  FlatViews v(flat);
  const size_t table = v.add(unit.at(Role::embed));
  return {v.views()[table]};
}

BlockWeights bind_block(const UnitLayout& unit, const at::Tensor& flat) {
  const int64_t C = unit.at(Role::ln1_w).shape[0];
  FlatViews v(flat);
  const size_t ln1_w = v.add(unit.at(Role::ln1_w));
  const size_t ln1_b = add_optional(v, unit, Role::ln1_b);
  const size_t ln2_w = v.add(unit.at(Role::ln2_w));
  const size_t ln2_b = add_optional(v, unit, Role::ln2_b);
  size_t qkv_w = kNoView, qkv_b = kNoView;
  if (unit.find(Role::qkv_w)) {
    qkv_w = v.add(unit.at(Role::qkv_w));
    qkv_b = add_optional(v, unit, Role::qkv_b);
  } else {
    qkv_w = v.add_adjacent(unit, Role::q_w, Role::v_w, C);
    if (unit.find(Role::q_b)) qkv_b = v.add_adjacent(unit, Role::q_b, Role::v_b, 0);
  }
  const size_t o_w = v.add(unit.at(Role::o_w));
  const size_t o_b = add_optional(v, unit, Role::o_b);
  size_t up_w = kNoView, up_b = kNoView;
  if (unit.find(Role::gate_w)) {
    up_w = v.add_adjacent(unit, Role::gate_w, Role::up_w, C);
    if (unit.find(Role::gate_b)) up_b = v.add_adjacent(unit, Role::gate_b, Role::up_b, 0);
  } else {
    up_w = v.add(unit.at(Role::up_w));
    up_b = add_optional(v, unit, Role::up_b);
  }
  const size_t down_w = v.add(unit.at(Role::down_w));
  const size_t down_b = add_optional(v, unit, Role::down_b);

  const std::vector<at::Tensor> views = v.views();
  BlockWeights w;
  w.ln1_w = pick(views, ln1_w);
  w.ln1_b = pick(views, ln1_b);
  w.ln2_w = pick(views, ln2_w);
  w.ln2_b = pick(views, ln2_b);
  w.qkv_w = pick(views, qkv_w);
  w.qkv_b = pick(views, qkv_b);
  w.o_w = pick(views, o_w);
  w.o_b = pick(views, o_b);
  w.up_w = pick(views, up_w);
  w.up_b = pick(views, up_b);
  w.down_w = pick(views, down_w);
  w.down_b = pick(views, down_b);
  return w;
}

HeadWeights bind_head(const ModelLayout& layout, const std::vector<at::Tensor>& flats) {
  const UnitLayout& unit = layout.head();
  KTO_CHECK(flats.size() == (layout.tied_head() ? 2u : 1u), "head: ", flats.size(), " weight buffers");
  FlatViews v(flats[0]);
  const size_t norm_w = v.add(unit.at(Role::norm_w));
  const size_t norm_b = add_optional(v, unit, Role::norm_b);
  const size_t lm_head = layout.tied_head() ? kNoView : v.add(unit.at(Role::lm_head));
  const std::vector<at::Tensor> views = v.views();
  HeadWeights w;
  w.norm_w = pick(views, norm_w);
  w.norm_b = pick(views, norm_b);
  w.lm_head = layout.tied_head() ? bind_embed(layout.embed(), flats[1]).table : pick(views, lm_head);
  return w;
}

at::Tensor rope_inv_freq(const ModelConfig& c) {
  const int64_t dim = c.rotary_dim();
  const at::Tensor inv =
      1.0 / at::pow(c.rope_theta, at::arange(0, dim, 2, at::kDouble) / static_cast<double>(dim));
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeType::linear) return inv / rs.factor;
  if (rs.type == RopeType::llama3) {
    // Llama 3.1: long wavelengths are scaled by 1/factor, short ones kept, and the band between
    // interpolated smoothly in 1/wavelength.
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    const at::Tensor wavelen = 2.0 * M_PI / inv;
    const at::Tensor scaled = at::where(wavelen > low_wavelen, inv / rs.factor, inv);
    const at::Tensor smooth =
        (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    const at::Tensor smoothed = (1.0 - smooth) * scaled / rs.factor + smooth * scaled;
    const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    return at::where(medium, smoothed, scaled);
  }
  return inv;
}

namespace {

// RoPE tables and the causal (windowed) mask depend on the model's RoPE and window settings,
// the length, dtype and device only, and position p's row is the same in a table of any length:
// kept per settings at the longest length asked so far and handed out as leading slices. They
// are never written to. Grown to twice the old length (at least the new one, at most the
// model's max_position_embeddings unless asked for more) so that lengths rising batch by batch
// rebuild them O(log T) times.
struct StaticTables {
  int64_t length = 0;
  at::Tensor cos, sin;  // [length, R]
  at::Tensor causal;    // [length, length], in the dtype scores are computed in
};

StaticTables build_tables(const ModelConfig& c, int64_t T, at::ScalarType dtype, at::Device device) {
  StaticTables t;
  t.length = T;
  const at::Tensor pos = at::arange(T, at::kDouble);
  const at::Tensor freqs = at::outer(pos, rope_inv_freq(c));
  const at::Tensor angles = at::cat({freqs, freqs}, -1);  // [T, R]
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  t.cos = angles.cos().to(opts);
  t.sin = angles.sin().to(opts);
  // Query i sees key j iff j <= i (and i - j < window).
  const at::Tensor i = at::arange(T, at::kLong).unsqueeze(1);
  const at::Tensor j = at::arange(T, at::kLong).unsqueeze(0);
  at::Tensor visible = j <= i;
  if (c.sliding_window > 0) visible = visible.logical_and(i - j < c.sliding_window);
  t.causal =
      at::where(visible, 0.0, kMaskedScore).to(at::TensorOptions().dtype(stats_dtype(dtype)).device(device));
  return t;
}

StaticTables static_tables(const ModelConfig& c, int64_t T, at::ScalarType dtype, at::Device device) {
  const RopeScaling& rs = c.rope_scaling;
  std::ostringstream key;
  key.precision(17);
  key << c.rope_theta << '/' << c.rotary_dim() << '/' << static_cast<int>(rs.type) << '/' << rs.factor << '/'
      << rs.low_freq_factor << '/' << rs.high_freq_factor << '/' << rs.original_max_position_embeddings << '/'
      << c.sliding_window << '/' << static_cast<int>(dtype) << '/' << device.str();
  static std::mutex mutex;
  static std::map<std::string, StaticTables> cache;
  std::lock_guard<std::mutex> lock(mutex);
  StaticTables& t = cache[key.str()];
  if (t.length < T)
    t = build_tables(c, std::max(T, std::min(2 * t.length, c.max_position_embeddings)), dtype, device);
  if (t.length == T) return t;
  return {T, t.cos.narrow(0, 0, T), t.sin.narrow(0, 0, T), t.causal.narrow(0, 0, T).narrow(1, 0, T)};
}

}  // namespace

AttentionInputs make_attention_inputs(const ModelConfig& c, const at::Tensor& attention_mask_BT, int64_t T,
                                      at::ScalarType dtype, at::Device device, bool mask_padded_keys) {
  AttentionInputs out;
  const StaticTables tables = static_tables(c, T, dtype, device);
  out.cos = tables.cos;
  out.sin = tables.sin;
  out.causal_TT = tables.causal;
  const at::ScalarType sdt = stats_dtype(dtype);

  if (attention_mask_BT.defined()) {
    KTO_CHECK(attention_mask_BT.device().is_cpu(), "attention_mask must be a CPU tensor");
    KTO_CHECK(attention_mask_BT.dim() == 2 && attention_mask_BT.size(1) == T, "attention_mask must be [B, ",
              T, "], got ", attention_mask_BT.sizes());
    const at::Tensor real = attention_mask_BT.ne(0);
    // With right padding a real query never reaches a padded key (those come after it), so the
    // causal mask alone is exact for every real position; only other layouts need key masking.
    const at::Tensor padded_before_real = real.logical_not().to(at::kInt).cumsum(1).gt(0).logical_and(real);
    const bool any_padding = !real.all().item<bool>();
    if (padded_before_real.any().item<bool>() || (mask_padded_keys && any_padding)) {
      out.keys_B11T = at::where(real, 0.0, kMaskedScore)
                          .view({real.size(0), 1, 1, T})
                          .to(at::TensorOptions().dtype(sdt).device(device));
    }
  }
  out.causal_only = c.sliding_window == 0 && !out.keys_B11T.defined();
  return out;
}

at::Tensor PackedLayout::positions() const {
  at::Tensor out = at::empty({tokens}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (const PackedGroup& g : groups) {
    int64_t n = g.start;
    for (int64_t t = 0; t < g.trunk; ++t) p[n++] = g.prefix_length + t;
    for (int64_t b : g.branches)
      for (int64_t t = 0; t < b; ++t) p[n++] = g.prefix_length + g.trunk + t;
  }
  return out;
}

void PackedLayout::check() const {
  int64_t n = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    const PackedGroup& g = groups[i];
    KTO_CHECK(g.start == n && g.length() > 0 && g.trunk >= 0 && g.prefix_length >= 0 && g.prefix_start >= 0,
              "packed group ", i, " (start ", g.start, ", length ", g.length(), ") does not follow token ",
              n);
    for (int64_t b : g.branches) KTO_CHECK(b > 0, "packed group ", i, " has an empty branch");
    n += g.length();
  }
  KTO_CHECK(n == tokens, "packed groups cover ", n, " of ", tokens, " tokens");
}

AttentionInputs make_packed_attention_inputs(const ModelConfig& c, const PackedLayout& layout,
                                             at::ScalarType dtype, at::Device device) {
  layout.check();
  int64_t longest = 1;  // positions 0 .. longest - 1 occur
  for (const PackedGroup& g : layout.groups) {
    int64_t branch = 0;
    for (int64_t b : g.branches) branch = std::max(branch, b);
    longest = std::max(longest, g.prefix_length + g.trunk + branch);
  }
  const StaticTables tables = static_tables(c, longest, dtype, device);
  AttentionInputs out;
  const at::Tensor positions = layout.positions().to(device);
  out.cos = tables.cos.index_select(0, positions);
  out.sin = tables.sin.index_select(0, positions);
  out.causal_only = false;
  out.packed = layout.groups;
  for (const PackedGroup& g : layout.groups) {
    const int64_t L = g.length(), P = g.prefix_length;
    out.group_causal.push_back(c.sliding_window == 0 && P == 0 && g.branches.empty());
    if (g.branches.empty()) {  // one sequence at positions P .. P + L - 1 after P prefix keys
      out.group_masks.push_back(tables.causal.narrow(0, P, L).narrow(1, 0, P + L));
      continue;
    }
    // Keys: the prefix, then the group's own tokens; a branch's token sees the prefix, the
    // trunk and the earlier tokens of its own branch.
    at::Tensor kpos = at::empty({P + L}, at::kLong), kpart = at::zeros({P + L}, at::kLong);
    int64_t* pos = kpos.data_ptr<int64_t>();
    int64_t* part = kpart.data_ptr<int64_t>();
    int64_t n = 0;
    for (int64_t t = 0; t < P + g.trunk; ++t) pos[n++] = t;
    for (size_t b = 0; b < g.branches.size(); ++b)
      for (int64_t t = 0; t < g.branches[b]; ++t) {
        part[n] = static_cast<int64_t>(b) + 1;
        pos[n++] = P + g.trunk + t;
      }
    const at::Tensor qpos = kpos.narrow(0, P, L), qpart = kpart.narrow(0, P, L);
    const at::Tensor visible = kpart.unsqueeze(0).eq(0).logical_or(kpart.unsqueeze(0).eq(qpart.unsqueeze(1)));
    const at::Tensor causal = tables.causal.index_select(0, qpos.to(device)).index_select(1, kpos.to(device));
    out.group_masks.push_back(
        at::where(visible.to(device), causal, at::full({}, kMaskedScore, causal.options())));
  }
  return out;
}

at::Tensor embed_forward(const EmbedWeights& w, const at::Tensor& ids_BT) {
  return at::embedding(w.table, ids_BT);
}

at::Tensor block_forward(const ModelConfig& c, const BlockWeights& w, const at::Tensor& x,
                         const AttentionInputs& attn, const BlockKV* prefix, BlockKV* kv_out) {
  if (c.parallel_residual) {
    const at::Tensor a = attention(c, w, norm(c, x, w.ln1_w, w.ln1_b), attn, prefix, kv_out);
    const at::Tensor m = mlp(c, w, norm(c, x, w.ln2_w, w.ln2_b));
    return m + a + x;
  }
  const at::Tensor h = x + attention(c, w, norm(c, x, w.ln1_w, w.ln1_b), attn, prefix, kv_out);
  return h + mlp(c, w, norm(c, h, w.ln2_w, w.ln2_b));
}

at::Tensor head_norm_forward(const ModelConfig& c, const HeadWeights& w, const at::Tensor& x) {
  return norm(c, x, w.norm_w, w.norm_b);
}

}  // namespace kto::model
