// compressd: one binary, subcommands. Placeholder until the CLI lands.
#include <cstdio>
int main() { std::puts("compressd"); return 0; }
