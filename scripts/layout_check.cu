// Host-side checks of the CUDA scan's launch layout (csrc/selective_scan/scan_layout.cuh), run without a GPU
// by scripts/nvcc_check_layout.sh (part of the test command): over many shapes, SM counts and both
// directions, the zero-start passes' parts must tile every split they run in order, with no empty part, and
// the grid must fit the hardware's limits. The kernels trust these; the GPU tests only see a few shapes.
#include <cstdio>
#include <cstdlib>

#include "selective_scan/scan_layout.cuh"

using mamba_ext::SelectiveScanParams;
using namespace mamba_ext::cuda;

static int failures = 0;

#define CHECK(cond, ...)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      if (++failures <= 20) {                                                                \
        std::printf("layout_check: %s failed at batch %lld dim %lld seqlen %lld: ", #cond,    \
                    (long long)p.batch, (long long)p.dim, (long long)p.seqlen);              \
        std::printf(__VA_ARGS__);                                                            \
        std::printf("\n");                                                                   \
      }                                                                                      \
    }                                                                                        \
  } while (0)

// The layout as cuda_launch.h's device_layout builds it, for a given SM count.
static ScanLayout layout_for(const SelectiveScanParams& p, int sms, int blocks_per_sm, double split_cost,
                             int input_bytes) {
  ScanLayout l = make_layout(p, sms, blocks_per_sm, split_cost);
  set_local_parts(l, p, sms, input_bytes);
  return l;
}

static void check_layout(const SelectiveScanParams& p, const ScanLayout& l) {
  CHECK(l.n_splits >= 1 && l.n_splits * l.chunks_per_split >= p.n_chunks &&
            (l.n_splits - 1) * l.chunks_per_split < p.n_chunks,
        "splits %lld of %lld chunks for %lld chunks", (long long)l.n_splits, (long long)l.chunks_per_split,
        (long long)p.n_chunks);
  CHECK(l.local_parts >= 1 && (l.n_splits == 1 || l.local_parts <= l.chunks_per_split), "parts %lld",
        (long long)l.local_parts);
  CHECK((l.n_splits - 1) * l.local_parts <= 65535 && l.n_splits <= 65535, "grid z %lld",
        (long long)((l.n_splits - 1) * l.local_parts));
  // Every split but the last runs the zero-start pass (forward: splits 0..S-2; the backward's 1..S-1 hold
  // the same part sizes, the last split excepted, whose parts may be shorter but never start past its end).
  for (int64_t split = 0; split < l.n_splits; ++split) {
    const int64_t begin = split * l.chunks_per_split;
    const int64_t end = begin + l.chunks_per_split < p.n_chunks ? begin + l.chunks_per_split : p.n_chunks;
    int64_t at = begin;
    for (int64_t part = 0; part < l.local_parts; ++part) {
      const ChunkRange r = split_part_chunks(p, l, split, part, l.local_parts);
      CHECK(r.begin == at && r.end >= r.begin && r.end <= end, "split %lld part %lld: [%lld, %lld)",
            (long long)split, (long long)part, (long long)r.begin, (long long)r.end);
      if (split < l.n_splits - 1) CHECK(r.end > r.begin, "empty part %lld of split %lld", (long long)part, (long long)split);
      at = r.end;
    }
    CHECK(at == end, "split %lld: parts end at %lld, the split at %lld", (long long)split, (long long)at,
          (long long)end);
  }
}

int main() {
  const long long shapes[][3] = {{1, 64, 16384},  {1, 256, 8192},   {1, 1536, 672},    {1, 1536, 896},
                                 {1, 1536, 131072}, {1, 4096, 16384}, {1, 2048, 262144}, {1, 768, 1048576},
                                 {2, 64, 100003},  {8, 1536, 2048},  {16, 1536, 512},   {1, 32, 33},
                                 {1, 8, 1048576},  {3, 200, 5000},   {1, 4096, 131072}, {4, 4096, 2048}};
  int checked = 0;
  for (const auto& s : shapes) {
    for (int sms : {16, 108, 132, 170}) {
      for (int input_bytes : {2, 4}) {
        for (int N : {16, 256}) {
          SelectiveScanParams p;
          p.batch = s[0], p.dim = s[1], p.seqlen = s[2], p.dstate = N, p.n_groups = 1;
          p.chunk_size = kTile, p.n_chunks = (p.seqlen + kTile - 1) / kTile;
          check_layout(p, layout_for(p, sms, 4, 0.0, input_bytes));   // forward (cuda_fwd.cu)
          check_layout(p, layout_for(p, sms, 3, 0.15, input_bytes));  // backward (cuda_bwd.cu)
          checked += 2;
        }
      }
    }
  }
  // The example in set_local_parts' comment: the bf16 forward at (1, 1536, 131072) on 132 SMs runs 480
  // zero-start blocks on 1056 slots; 11 parts make 5 full rounds.
  SelectiveScanParams p;
  p.batch = 1, p.dim = 1536, p.seqlen = 131072, p.dstate = 16, p.chunk_size = kTile, p.n_chunks = 4096;
  const ScanLayout l = layout_for(p, 132, 4, 0.0, 2);
  CHECK(l.n_splits == 11 && l.local_parts == 11 && l.n_cblocks * (l.n_splits - 1) * l.local_parts == 5 * 1056,
        "%lld splits, %lld parts", (long long)l.n_splits, (long long)l.local_parts);
  std::printf("layout_check: %d layouts checked, %d failures\n", checked, failures);
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
