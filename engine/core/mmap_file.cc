#include "engine/core/mmap_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
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

bool MmapFile::ReleasePages(const void* data, size_t bytes) {
  const auto b = reinterpret_cast<uintptr_t>(data);
  {
    std::lock_guard<std::mutex> lock(MapsMutex());
    auto it = Maps().upper_bound(b);
    if (it == Maps().begin()) return false;
    --it;
    if (b < it->first || b + bytes > it->first + it->second) return false;
  }
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (b + page - 1) / page * page, end = (b + bytes) / page * page;
  if (end <= begin) return false;
  return ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) == 0;
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
