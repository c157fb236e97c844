#include "engine/core/mmap_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <system_error>
#include <thread>
#include <vector>
#include <mutex>

namespace compressd {
namespace {

// Live read-only file mappings (start -> size), so ReleasePages() can tell file-backed
// bytes (safe to drop: they are re-read from the file) from heap bytes (never dropped).
std::mutex& MapsMutex() {
  static std::mutex mu;
  return mu;
}
std::map<uintptr_t, size_t>& Maps() {
  static auto* m = new std::map<uintptr_t, size_t>();
  return *m;
}

}  // namespace

bool MmapFile::IsMapped(const void* data, size_t bytes) {
  const auto b = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(MapsMutex());
  auto it = Maps().upper_bound(b);
  if (it == Maps().begin()) return false;
  --it;
  return b >= it->first && b + bytes <= it->first + it->second;
}

bool MmapFile::ReleasePages(const void* data, size_t bytes) {
  if (!IsMapped(data, bytes)) return false;
  const auto b = reinterpret_cast<uintptr_t>(data);
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (b + page - 1) / page * page, end = (b + bytes) / page * page;
  if (end <= begin) return false;
  return ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) == 0;
}

std::shared_ptr<const uint8_t> MmapFile::CopyToOwned(const void* data, size_t bytes) {
  if (bytes == 0) return nullptr;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
#ifdef MADV_POPULATE_READ
  {
    // Map the source's page-cache pages in one call (best effort: heap memory, old kernels).
    const auto b = reinterpret_cast<uintptr_t>(data);
    const uintptr_t begin = b / page * page, end = (b + bytes + page - 1) / page * page;
    const bool in_map = IsMapped(data, bytes);
    if (in_map) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
  }
#endif
  const size_t mapped = (bytes + page - 1) / page * page;
  // Large copies are split over threads (one per 32 MiB, at most one per core, at most 8):
  // most of their time is the kernel clearing fresh pages (40% of a 2.5 GB load's samples)
  // and the copy itself, both per page. Llama-3.2-1B bf16 safetensors load 6.7-7.2 -> 3.1-4.2 s
  // with 2 threads (docs/BENCHMARKS.md session 10).
  const size_t parts = std::min<size_t>(
      {bytes >> 25, std::max(1u, std::thread::hardware_concurrency()), size_t{8}});
  const bool split = parts > 1;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (split ? 0 : MAP_POPULATE), -1, 0);
  if (p == MAP_FAILED) {
    // Fall back to the heap (faulted page by page).
    std::shared_ptr<uint8_t[]> buf(new uint8_t[bytes]);
    std::memcpy(buf.get(), data, bytes);
    return std::shared_ptr<const uint8_t>(buf, buf.get());
  }
  auto fill = [&](size_t b, size_t e) {
    uint8_t* dst = static_cast<uint8_t*>(p);
#ifdef MADV_POPULATE_WRITE
    const size_t pb = b / page * page, pe = std::min(mapped, (e + page - 1) / page * page);
    ::madvise(dst + pb, pe - pb, MADV_POPULATE_WRITE);
#endif
    std::memcpy(dst + b, static_cast<const uint8_t*>(data) + b, e - b);
  };
  if (split) {
    std::vector<std::thread> helpers;
    for (size_t i = 1; i < parts; ++i) {
      const size_t b = bytes * i / parts / page * page;
      const size_t e = i + 1 == parts ? bytes : bytes * (i + 1) / parts / page * page;
      try {
        helpers.emplace_back(fill, b, e);
      } catch (const std::system_error&) {
        fill(b, e);  // no thread to be had: this one does the part
      }
    }
    fill(0, bytes / parts / page * page);
    for (auto& h : helpers) h.join();
  } else {
    std::memcpy(p, data, bytes);
  }
  return std::shared_ptr<const uint8_t>(static_cast<const uint8_t*>(p),
                                        [mapped](const uint8_t* q) {
                                          ::munmap(const_cast<uint8_t*>(q), mapped);
                                        });
}

absl::StatusOr<std::shared_ptr<MmapFile>> MmapFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(e)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  std::shared_ptr<MmapFile> f(new MmapFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      return absl::ResourceExhaustedError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(e)));
    }
    f->data_ = static_cast<const uint8_t*>(p);
    f->mapped_ = true;
    std::lock_guard<std::mutex> lock(MapsMutex());
    Maps()[reinterpret_cast<uintptr_t>(p)] = f->size_;
  }
  ::close(fd);
  return f;
}

std::shared_ptr<MmapFile> MmapFile::FromBytes(std::string bytes, std::string name) {
  std::shared_ptr<MmapFile> f(new MmapFile());
  f->owned_ = std::move(bytes);
  f->data_ = reinterpret_cast<const uint8_t*>(f->owned_.data());
  f->size_ = f->owned_.size();
  f->path_ = std::move(name);
  return f;
}

MmapFile::~MmapFile() {
  if (mapped_) {
    {
      std::lock_guard<std::mutex> lock(MapsMutex());
      Maps().erase(reinterpret_cast<uintptr_t>(data_));
    }
    ::munmap(const_cast<uint8_t*>(data_), size_);
  }
}

}  // namespace compressd
