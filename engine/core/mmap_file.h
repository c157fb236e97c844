// Read-only memory map of a whole file. Owned by whoever holds the shared_ptr; views
// into it (TensorView) stay valid while any holder lives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/core/status.h"

namespace compressd {

class MmapFile {
 public:
  static absl::StatusOr<std::shared_ptr<MmapFile>> Open(const std::string& path);
  // A copy of `bytes` kept in memory (tests, fuzzers): same interface as a mapped file.
  static std::shared_ptr<MmapFile> FromBytes(std::string bytes, std::string name = "<memory>");
  ~MmapFile();
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;

  // Drops the resident pages wholly inside [data, data + bytes) when that range lies in a
  // live file mapping (read-only, MAP_PRIVATE: the bytes are re-read from the file if
  // touched again); does nothing for any other memory. Compression on load calls it after
  // each tensor so that resident memory stays near the compressed size. True if dropped.
  static bool ReleasePages(const void* data, size_t bytes);

  // True when [data, data + bytes) lies wholly inside one live file mapping.
  static bool IsMapped(const void* data, size_t bytes);

  // A copy of [data, data + bytes) in fresh anonymous memory that the returned pointer owns
  // (freed with the last reference). The destination is faulted in by one mmap call
  // (MAP_POPULATE) and a mapped source by one madvise (MADV_POPULATE_READ) instead of one
  // fault per 4 KiB page each, which on this VM cost more than the copy itself (a 1.3 GB GGUF
  // load: memcpy 31%, page-fault entry/exit 29%, page clearing 17% of samples).
  // Does not release the source's pages (see ReleasePages). Empty for bytes == 0.
  static std::shared_ptr<const uint8_t> CopyToOwned(const void* data, size_t bytes);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MmapFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::string owned_;
  std::string path_;
};

}  // namespace compressd
