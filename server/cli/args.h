// Per-subcommand option parsing for the `compressd` binary. absl flags are process-global,
// while each subcommand accepts its own set: this declares options per command, prints
// --help from the declarations, and rejects unknown options with a clear message.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace compressd::cli {

class Args {
 public:
  Args(std::string command, std::string summary);

  // Declare options before Parse(). `target` keeps its current value as the default.
  void Add(const std::string& name, std::string* target, const std::string& help);
  void Add(const std::string& name, int32_t* target, const std::string& help);
  void Add(const std::string& name, int64_t* target, const std::string& help);
  void Add(const std::string& name, double* target, const std::string& help);
  void Add(const std::string& name, float* target, const std::string& help);
  void Add(const std::string& name, bool* target, const std::string& help);
  // Byte sizes: "512MB", "2GiB", "1000000".
  void AddBytes(const std::string& name, int64_t* target, const std::string& help);
  // Repeatable string option (each occurrence appends).
  void AddList(const std::string& name, std::vector<std::string>* target, const std::string& help);
  void AddNote(const std::string& text);

  // Parses argv[1..]; returns -1 to go on, or an exit code (0 after --help, 2 on error,
  // with the message printed to stderr).
  int Parse(int argc, char** argv);
  // Whether the option was given explicitly on the command line.
  bool Given(const std::string& name) const;
  std::string Help() const;

 private:
  enum class Kind { kString, kInt32, kInt64, kDouble, kFloat, kBool, kBytes, kList };
  struct Opt {
    std::string name;
    Kind kind;
    void* target;
    std::string help;
    std::string def;
    bool given = false;
  };
  std::string Set(Opt& o, const std::string& value);
  std::string command_, summary_;
  std::vector<Opt> opts_;
  std::vector<std::string> notes_;
};

// "512MB" -> 512000000, "2GiB" -> 2147483648; -1 on error.
int64_t ParseBytes(const std::string& s);

}  // namespace compressd::cli
