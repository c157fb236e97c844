// CSKV-style channel shrinking ("cskv[:rN][+inner]"): per layer and KV head, K and V are
// projected onto the top-r eigenvectors of their second moments on calibration text (the SVD of
// the calibration K/V), and only the r features are stored, by any inner codec on a geometry
// with head_dim = r ("cskv+int4" = KIVI int4 codes of the features; "cskv" alone = fp16
// features). Attention never reconstructs K or V: the query is projected once per head
// (q' = P_k^T q, so q'.f_k = q^T P_k P_k^T k), the inner kernel attends in r dimensions and the
// r-dim output is lifted back with P_v. The inner codec's recent window (staging) holds features
// too: the whole cache, window included, is r-dimensional.
//
// Uncalibrated (a path that skips CalibrateKvCodec), the projections keep the first r channels
// of each head; the evaluator always calibrates.
//
// Also here: the moments recorder used for calibration (kv_codec.h).
#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/core/logging.h"
#include "engine/kv/codecs.h"

namespace compressd {
namespace {

class MomentsRecorder : public KvCodec {
 public:
  MomentsRecorder(const KvGeometry& g, std::unique_ptr<KvCodec> inner, KvMoments* m)
      : KvCodec(g), inner_(std::move(inner)), m_(m), mu_(g.n_layers) {
    m_->geometry = g;
    const size_t n = static_cast<size_t>(g.n_layers) * g.n_kv_heads * g.head_dim * g.head_dim;
    m_->k.assign(n, 0.0);
    m_->v.assign(n, 0.0);
    m_->tokens = 0;
  }
  std::string name() const override { return "moments-recorder"; }
  size_t LayerBlockBytes() const override { return inner_->LayerBlockBytes(); }
  void Store(int layer, uint8_t* block, int slot, const float* k, const float* v) const override {
    inner_->Store(layer, block, slot, k, v);
    const int hd = geo_.head_dim;
    std::lock_guard<std::mutex> lock(mu_[layer]);
    for (int h = 0; h < geo_.n_kv_heads; ++h) {
      const size_t base = (static_cast<size_t>(layer) * geo_.n_kv_heads + h) * hd * hd;
      const float* kh = k + h * hd;
      const float* vh = v + h * hd;
      for (int i = 0; i < hd; ++i) {
        for (int j = 0; j < hd; ++j) {
          m_->k[base + i * hd + j] += static_cast<double>(kh[i]) * kh[j];
          m_->v[base + i * hd + j] += static_cast<double>(vh[i]) * vh[j];
        }
      }
    }
    if (layer == 0) ++m_->tokens;
  }
  void Attend(int layer, const float* q, const uint8_t* const* blocks, int n_ctx, float scale,
              float* out, float* scratch, int head_begin, int head_end) const override {
    inner_->Attend(layer, q, blocks, n_ctx, scale, out, scratch, head_begin, head_end);
  }
  size_t ScratchFloats(int n_ctx) const override { return inner_->ScratchFloats(n_ctx); }

 private:
  std::unique_ptr<KvCodec> inner_;
  KvMoments* m_;
  mutable std::vector<std::mutex> mu_;
};

// Eigen-decomposition of a symmetric n x n matrix (row-major, destroyed) by cyclic Jacobi
// rotations. vecs[j * n + i] = component i of eigenvector j; eigenvalues in descending order.
void SymmetricEigen(std::vector<double> a, int n, std::vector<double>* vals,
                    std::vector<double>* vecs) {
  std::vector<double> v(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) v[i * n + i] = 1.0;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0, diag = 0;
    for (int i = 0; i < n; ++i) {
      diag += a[i * n + i] * a[i * n + i];
      for (int j = i + 1; j < n; ++j) off += a[i * n + j] * a[i * n + j];
    }
    if (off <= 1e-24 * std::max(diag, 1e-300)) break;
    for (int p = 0; p < n; ++p) {
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int x, int y) { return a[x * n + x] > a[y * n + y]; });
  vals->resize(n);
  vecs->resize(static_cast<size_t>(n) * n);
  for (int j = 0; j < n; ++j) {
    (*vals)[j] = a[order[j] * n + order[j]];
    for (int i = 0; i < n; ++i) (*vecs)[static_cast<size_t>(j) * n + i] = v[i * n + order[j]];
  }
}

class CskvCodec : public KvCodec {
 public:
  CskvCodec(const KvGeometry& g, int rank, std::unique_ptr<KvCodec> inner, std::string name)
      : KvCodec(g), r_(rank), inner_(std::move(inner)), name_(std::move(name)) {
    const size_t n = static_cast<size_t>(g.n_layers) * g.n_kv_heads * r_ * g.head_dim;
    pk_.assign(n, 0.0f);
    pv_.assign(n, 0.0f);
    for (int l = 0; l < g.n_layers; ++l) {
      for (int h = 0; h < g.n_kv_heads; ++h) {
        for (int j = 0; j < r_; ++j)
          pk_[Off(l, h) + j * g.head_dim + j] = pv_[Off(l, h) + j * g.head_dim + j] = 1.0f;
      }
    }
    energy_.assign(2 * g.n_layers * g.n_kv_heads, 0.0);
  }
  std::string name() const override { return name_; }
  size_t LayerBlockBytes() const override { return inner_->LayerBlockBytes(); }
  bool NeedsSeal() const override { return inner_->NeedsSeal(); }
  bool SpansLayers() const override { return inner_->SpansLayers(); }
  bool SealAfterAttend() const override { return inner_->SealAfterAttend(); }
  void Seal(int layer, uint8_t* block) const override { inner_->Seal(layer, block); }
  bool NeedsCalibration() const override { return true; }
  size_t ScratchFloats(int n_ctx) const override { return inner_->ScratchFloats(n_ctx); }

  absl::Status Calibrate(const KvMoments& m) override {
    const KvGeometry& g = m.geometry;
    if (g.n_layers != geo_.n_layers || g.n_kv_heads != geo_.n_kv_heads ||
        g.head_dim != geo_.head_dim || m.tokens <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": calibration moments of another geometry or of no tokens"));
    }
    const int hd = geo_.head_dim;
    std::vector<double> vals, vecs;
    for (int l = 0; l < geo_.n_layers; ++l) {
      for (int h = 0; h < geo_.n_kv_heads; ++h) {
        const size_t base = (static_cast<size_t>(l) * geo_.n_kv_heads + h) * hd * hd;
        for (int kv = 0; kv < 2; ++kv) {
          const std::vector<double>& src = kv == 0 ? m.k : m.v;
          SymmetricEigen(std::vector<double>(src.begin() + base, src.begin() + base + hd * hd), hd,
                         &vals, &vecs);
          std::vector<float>& p = kv == 0 ? pk_ : pv_;
          for (int j = 0; j < r_; ++j) {
            for (int i = 0; i < hd; ++i)
              p[Off(l, h) + j * hd + i] = static_cast<float>(vecs[j * hd + i]);
          }
          const double total = std::accumulate(vals.begin(), vals.end(), 0.0);
          const double kept = std::accumulate(vals.begin(), vals.begin() + r_, 0.0);
          energy_[(kv * geo_.n_layers + l) * geo_.n_kv_heads + h] = total > 0 ? kept / total : 1.0;
        }
      }
    }
    calibrated_ = true;
    return absl::OkStatus();
  }

  // Fraction of the calibration K (kv = 0) or V (kv = 1) energy in the kept r directions.
  double EnergyKept(int kv, int layer, int h) const {
    return energy_[(kv * geo_.n_layers + layer) * geo_.n_kv_heads + h];
  }

  void Store(int layer, uint8_t* block, int slot, const float* k, const float* v) const override {
    if (!calibrated_) {
      std::call_once(warn_once_, [&] {
        LOG_WARN(
            "--kv-cache {}: not calibrated (CalibrateKvCodec was not called); keeping the "
            "first {} channels of each head",
            name_, r_);
      });
    }
    thread_local std::vector<float> fk, fv;
    const int nkv = geo_.n_kv_heads, hd = geo_.head_dim;
    fk.resize(static_cast<size_t>(nkv) * r_);
    fv.resize(fk.size());
    for (int h = 0; h < nkv; ++h) {
      Project(pk_.data() + Off(layer, h), k + h * hd, fk.data() + h * r_);
      Project(pv_.data() + Off(layer, h), v + h * hd, fv.data() + h * r_);
    }
    inner_->Store(layer, block, slot, fk.data(), fv.data());
  }

  void Attend(int layer, const float* q, const uint8_t* const* blocks, int n_ctx, float scale,
              float* out, float* scratch, int head_begin, int head_end) const override {
    thread_local std::vector<float> qr, outr;
    const int hd = geo_.head_dim, group = geo_.n_heads / geo_.n_kv_heads;
    qr.assign(static_cast<size_t>(geo_.n_heads) * r_, 0.0f);
    outr.assign(qr.size(), 0.0f);
    for (int h = head_begin; h < head_end; ++h) {
      Project(pk_.data() + Off(layer, h / group), q + static_cast<size_t>(h) * hd,
              qr.data() + static_cast<size_t>(h) * r_);
    }
    inner_->Attend(layer, qr.data(), blocks, n_ctx, scale, outr.data(), scratch, head_begin,
                   head_end);
    for (int h = head_begin; h < head_end; ++h) {
      const float* p = pv_.data() + Off(layer, h / group);
      const float* o = outr.data() + static_cast<size_t>(h) * r_;
      float* y = out + static_cast<size_t>(h) * hd;
      for (int i = 0; i < hd; ++i) y[i] = 0.0f;
      for (int j = 0; j < r_; ++j) {
        for (int i = 0; i < hd; ++i) y[i] += o[j] * p[j * hd + i];
      }
    }
  }

 private:
  size_t Off(int layer, int h) const {
    return (static_cast<size_t>(layer) * geo_.n_kv_heads + h) * r_ * geo_.head_dim;
  }
  void Project(const float* p, const float* x, float* f) const {
    const int hd = geo_.head_dim;
    for (int j = 0; j < r_; ++j) {
      float s = 0;
      for (int i = 0; i < hd; ++i) s += p[j * hd + i] * x[i];
      f[j] = s;
    }
  }

  int r_;
  std::unique_ptr<KvCodec> inner_;
  std::string name_;
  std::vector<float> pk_, pv_;  // [layer][kv head][r][head_dim]: rows = kept directions
  std::vector<double> energy_;
  bool calibrated_ = false;
  mutable std::once_flag warn_once_;
};

}  // namespace

std::unique_ptr<KvCodec> MakeKvMomentsRecorder(const KvGeometry& g, KvMoments* moments) {
  auto inner = MakeKvCodec("fp32", g);
  if (!inner.ok()) return nullptr;
  return std::make_unique<MomentsRecorder>(g, std::move(*inner), moments);
}

double CskvEnergyKept(const KvCodec& codec, int kv, int layer, int h) {
  const auto* c = dynamic_cast<const CskvCodec*>(&codec);
  return c == nullptr ? -1.0 : c->EnergyKept(kv, layer, h);
}

std::unique_ptr<KvCodec> MakeCskvKvCodec(const std::string& name, const KvGeometry& g,
                                         absl::Status* error) {
  std::vector<std::string> comps = absl::StrSplit(name, '+');
  int found = -1;
  for (size_t i = 0; i < comps.size(); ++i) {
    if (comps[i] == "cskv" || comps[i].rfind("cskv:", 0) == 0) {
      if (found >= 0) {
        *error = absl::InvalidArgumentError(absl::StrCat("--kv-cache '", name, "': cskv twice"));
        return nullptr;
      }
      found = static_cast<int>(i);
    }
  }
  if (found < 0) return nullptr;  // not this family
  int rank = g.head_dim / 2;
  std::vector<std::string> parts = absl::StrSplit(comps[found], absl::ByAnyChar(":,"));
  for (size_t i = 1; i < parts.size(); ++i) {
    int v = 0;
    if (parts[i].size() >= 2 && parts[i][0] == 'r' && absl::SimpleAtoi(parts[i].substr(1), &v)) {
      rank = v;
    } else {
      *error = absl::InvalidArgumentError(absl::StrCat("--kv-cache '", name, "': unknown option '",
                                                       parts[i], "' of cskv (rN: kept channels)"));
      return nullptr;
    }
  }
  if (rank < 1 || rank > g.head_dim) {
    *error = absl::InvalidArgumentError(absl::StrCat("--kv-cache '", name, "': cskv rank ", rank,
                                                     " must be in 1..head_dim (", g.head_dim, ")"));
    return nullptr;
  }
  comps.erase(comps.begin() + found);
  const std::string inner_name = comps.empty() ? "fp16" : absl::StrJoin(comps, "+");
  KvGeometry ig = g;
  ig.head_dim = rank;
  auto inner = MakeKvCodec(inner_name, ig);
  if (!inner.ok()) {
    *error = absl::InvalidArgumentError(absl::StrCat("--kv-cache '", name, "': the codec of the ",
                                                     rank, "-channel features ('", inner_name,
                                                     "') is invalid: ", inner.status().message()));
    return nullptr;
  }
  return std::make_unique<CskvCodec>(g, rank, std::move(*inner), name);
}

}  // namespace compressd
