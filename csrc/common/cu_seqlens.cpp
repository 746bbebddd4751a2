#include "common/cu_seqlens.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/searchsorted.h>

#include "common/checks.h"

namespace mamba_ext {
namespace {

// Whether t's values can be read here: a CPU tensor with real data, not a fake or functional tensor that
// torch.compile traces with (those carry the Python or Functionalize dispatch key and have no values).
bool has_readable_cpu_values(const at::Tensor& t) {
  const auto traced = c10::DispatchKeySet({c10::DispatchKey::Python, c10::DispatchKey::Functionalize});
  return t.is_cpu() && !t.key_set().has_any(traced) && t.has_storage();
}

std::vector<int64_t> checked_values(const char* op, const at::Tensor& cu_seqlens, int64_t seqlen) {
  const at::Tensor cu = cu_seqlens.to(at::kLong).contiguous();
  const int64_t* v = cu.const_data_ptr<int64_t>();
  const int64_t n = cu.numel();
  MAMBA_CHECK(v[0] == 0, op, "cu_seqlens[0] must be 0, got ", v[0]);
  for (int64_t i = 1; i < n; ++i) {
    MAMBA_CHECK(v[i] >= v[i - 1], op, "cu_seqlens must be non-decreasing, got cu_seqlens[", i - 1, "] = ", v[i - 1],
                " > cu_seqlens[", i, "] = ", v[i]);
  }
  MAMBA_CHECK(v[n - 1] == seqlen, op, "cu_seqlens[-1] must equal seqlen = ", seqlen, ", got ", v[n - 1]);
  return std::vector<int64_t>(v, v + n);
}

}  // namespace

c10::SymInt check_cu_seqlens(const char* op, const at::Tensor& cu_seqlens, const at::Tensor& ref,
                             const char* ref_name, const c10::SymInt& batch, const c10::SymInt& seqlen) {
  check_device(op, "cu_seqlens", cu_seqlens, ref, ref_name);
  MAMBA_CHECK(cu_seqlens.dim() == 1 && cu_seqlens.sym_size(0) >= 1, op,
              "cu_seqlens must have shape (num_seqs + 1,), got shape ", cu_seqlens.sym_sizes());
  const auto dtype = cu_seqlens.scalar_type();
  MAMBA_CHECK(dtype == at::kInt || dtype == at::kLong, op, "cu_seqlens must have dtype int32 or int64, got ", dtype);
  MAMBA_CHECK(batch == 1, op, "cu_seqlens packs sequences into one row, so batch must be 1, got batch = ", batch);
  const c10::SymInt num_seqs = cu_seqlens.sym_size(0) - 1;
  MAMBA_CHECK(num_seqs > 0 || seqlen == 0, op, "cu_seqlens holds no sequence (shape (1,)), but seqlen = ", seqlen);
  if (has_readable_cpu_values(cu_seqlens)) checked_values(op, cu_seqlens, seqlen.guard_int(__FILE__, __LINE__));
  return num_seqs;
}

void check_not_both(const char* op, const std::optional<at::Tensor>& seq_idx,
                    const std::optional<at::Tensor>& cu_seqlens) {
  MAMBA_CHECK(!(seq_idx && cu_seqlens), op,
              "seq_idx and cu_seqlens are two ways to describe packed sequences; pass only one of them");
}

at::Tensor seq_idx_from_cu_seqlens(const at::Tensor& cu_seqlens, const c10::SymInt& seqlen) {
  // Token t belongs to the sequence i with cu[i] <= t < cu[i + 1]: the number of ends cu[1:] that are <= t.
  // Clamped to the last sequence: the values of a CUDA cu_seqlens are not checked (that would synchronize),
  // and a malformed one (cu_seqlens[-1] < seqlen) must not send tokens past the (num_seqs, ...) state rows
  // the kernels index by these ids.
  const at::Tensor tokens = at::arange(c10::Scalar(seqlen), cu_seqlens.options());
  const at::Tensor ids = at::searchsorted(cu_seqlens.slice(0, 1), tokens, /*out_int32=*/true, /*right=*/true);
  return ids.clamp_max(c10::Scalar(cu_seqlens.sym_size(0) - 2)).unsqueeze(0);
}

std::vector<int64_t> cpu_sequence_bounds(const char* op, const at::Tensor& cu_seqlens,
                                         const std::optional<at::Tensor>& seq_idx, int64_t seqlen) {
  std::vector<int64_t> bounds = checked_values(op, cu_seqlens, seqlen);
  if (seq_idx) {
    const int32_t* ids = seq_idx->const_data_ptr<int32_t>();
    for (int64_t i = 0; i + 1 < static_cast<int64_t>(bounds.size()); ++i) {
      for (int64_t t = bounds[i]; t < bounds[i + 1]; ++t) {
        MAMBA_CHECK(ids[t] == i, op, "seq_idx must be the ids derived from cu_seqlens (", i, " at token ", t,
                    "), got ", ids[t]);
      }
    }
  }
  return bounds;
}

}  // namespace mamba_ext
