// Subcommands of the `compressd` binary. Each takes the arguments after its name
// (argv[0] is the subcommand name) and returns the process exit code.
#pragma once

namespace compressd::cli {

int RunServe(int argc, char** argv);     // cmd_serve.cc
int RunGenerate(int argc, char** argv);  // cmd_generate.cc
int RunInfo(int argc, char** argv);      // cmd_info.cc
int RunBench(int argc, char** argv);     // cmd_bench.cc
int RunEval(int argc, char** argv);      // cmd_eval.cc
int RunCompress(int argc, char** argv);  // cmd_compress.cc

}  // namespace compressd::cli
