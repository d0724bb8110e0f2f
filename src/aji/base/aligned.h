// Cache-line aligned storage for buffers that vector kernels stream: a 64-byte AVX-512 load
// from an address 16 bytes past a line boundary (what malloc gives a large block) touches two
// lines, and a weight-streaming product ran 20% slower from such a buffer (measured on the
// tiny model's decode step).
//
// Large buffers (8 MiB and more: weights, gradients, optimizer moments, activations, the KV
// cache, packed low-bit weights) are 2 MiB aligned and marked MADV_HUGEPAGE, so that where
// transparent huge pages are enabled for madvise (the common default) each 2 MiB is one TLB
// entry: a decode step streams every weight once, 437 MB for llama-small, and with 4 KiB pages
// that was a page walk every 4 KiB (measured: `aji bench generate --config llama-small` 47-53
// -> 59-66 tok/s at 1 thread, 61-66 -> 71-75 at 2; `aji serve`'s one-client decode 15.4-16.2
// -> 10.7-13.6 ms a token). Elsewhere madvise is a harmless no-op.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <vector>

namespace aji {

template <class T, std::size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() noexcept = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes >= kHugeFrom) {
      void* p = ::operator new(bytes, std::align_val_t(kHugePage));
      ::madvise(p, bytes, MADV_HUGEPAGE);  // this buffer only (a partial last 2 MiB stays small)
      return static_cast<T*>(p);
    }
    return static_cast<T*>(::operator new(bytes, std::align_val_t(Align)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) >= kHugeFrom)
      ::operator delete(p, std::align_val_t(kHugePage));
    else
      ::operator delete(p, std::align_val_t(Align));
  }
  static constexpr std::size_t kHugePage = std::size_t(2) << 20, kHugeFrom = std::size_t(8) << 20;
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const noexcept {
    return true;
  }
};

// A vector whose data() is 64-byte aligned; from 8 MiB on, 2 MiB aligned and marked for
// transparent huge pages (see AlignedAllocator).
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;
using AlignedFloats = AlignedVector<float>;

}  // namespace aji
