// Thread helper shared by spikemlp's C++ kernels (standard library only).
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace spikemlp {

// Runs f(first_block, end_block) on up to n_threads threads over contiguous ranges of blocks.
template <typename F>
inline void parallel_blocks(int64_t n_blocks, int64_t work_per_block, int n_threads, const F& f) {
  constexpr int64_t kMinWorkPerThread = 1 << 15;  // below this a thread costs more than it saves
  int64_t threads = std::min<int64_t>(n_threads, (n_blocks * work_per_block) / kMinWorkPerThread);
  threads = std::max<int64_t>(1, std::min(threads, n_blocks));
  if (threads == 1) {
    f(0, n_blocks);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  const int64_t per = (n_blocks + threads - 1) / threads;
  for (int64_t k = 1; k < threads; ++k) {
    const int64_t b0 = std::min(n_blocks, k * per), b1 = std::min(n_blocks, (k + 1) * per);
    pool.emplace_back([&f, b0, b1] { f(b0, b1); });
  }
  f(0, std::min(n_blocks, per));
  for (auto& th : pool) th.join();
}

}  // namespace spikemlp
