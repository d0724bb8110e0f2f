// Cache-line aligned storage for buffers that vector kernels stream: a 64-byte AVX-512 load
// from an address 16 bytes past a line boundary (what malloc gives a large block) touches two
// lines, and a weight-streaming product ran 20% slower from such a buffer (measured on the
// tiny model's decode step).
#pragma once

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
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(Align))); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(Align)); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const noexcept {
    return true;
  }
};

// A float vector whose data() is 64-byte aligned.
using AlignedFloats = std::vector<float, AlignedAllocator<float>>;

}  // namespace aji
