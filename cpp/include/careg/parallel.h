// parallel_for: split [0, n) into contiguous chunks, one std::thread each.
// Threads are spawned per call on purpose: a scoring call is milliseconds long,
// so a pool would save ~50 us at the price of global state in an embedded library.
#pragma once
#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

#include "careg/error.h"
#include "careg/info.h"

namespace careg {

// 0 = hardware concurrency; negative is a caller mistake.
inline int resolve_threads(int threads) {
  CAREG_CHECK(threads >= 0, "threads must be >= 0 (0 = hardware concurrency), got " << threads);
  return threads == 0 ? default_threads() : threads;
}

// fn(begin, end) runs on each chunk; at most `threads` chunks of at least
// `min_chunk` items. The first exception thrown by any chunk is rethrown here.
template <class Fn>
void parallel_for(std::size_t n, int threads, std::size_t min_chunk, Fn&& fn) {
  if (n == 0) return;
  std::size_t t = static_cast<std::size_t>(resolve_threads(threads));
  t = std::max<std::size_t>(1, std::min(t, (n + min_chunk - 1) / std::max<std::size_t>(min_chunk, 1)));
  if (t == 1) {
    fn(std::size_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(t);
  std::size_t step = (n + t - 1) / t;
  for (std::size_t i = 0; i < t; ++i) {
    std::size_t b = i * step, e = std::min(n, b + step);
    if (b >= e) break;
    pool.emplace_back([&, i, b, e] {
      try {
        fn(b, e);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

}  // namespace careg
