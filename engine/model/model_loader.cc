#include "engine/model/model_loader.h"

#include "engine/core/mmap_file.h"

#include "absl/strings/match.h"
#include "engine/compress/checkpoint_io.h"
#include "engine/compress/sparse_util.h"
#include "engine/compress/register.h"
#include "engine/core/logging.h"
#include "engine/core/mmap_file.h"
#include "engine/model/checkpoint.h"
#include "engine/model/gguf.h"
#include "engine/model/random_model.h"
#include "kernels/gemm.h"

namespace compressd {
namespace {

CompressionFactoryMaker& FactoryMaker() {
  static CompressionFactoryMaker maker;
  return maker;
}

absl::StatusOr<LinearFactory> DenseFactory(const std::string& spec) {
  if (spec == "auto" || spec.empty()) {
    return LinearFactory([](const std::string&, const TensorView& t) -> absl::StatusOr<Linear> {
      // Keep the checkpoint's own format where a kernel reads it directly: plain
      // F32/F16/BF16, and GGUF Q8_0/Q4_0 blocks (kernels/ggml_quant.h).
      // (Where a build's kernels cannot run them, GemmSupports() says no and the blocks are
      // converted to BF16 as before.)
      if (t.storage == StorageType::kQ8_0 || t.storage == StorageType::kQ4_0) {
        auto l = MakeGgufLinear(t);
        if (!l.ok() || kernels::GemmSupports(l->w.format)) return l;
      }
      const bool direct = t.storage == StorageType::kPlain &&
                          (t.dtype == DType::kF32 || t.dtype == DType::kF16 ||
                           t.dtype == DType::kBF16);
      return MakeDenseLinear(t, direct ? t.dtype : DType::kBF16);
    });
  }
  DType target;
  if (spec == "f32" || spec == "fp32") {
    target = DType::kF32;
  } else if (spec == "f16" || spec == "fp16") {
    target = DType::kF16;
  } else if (spec == "bf16") {
    target = DType::kBF16;
  } else {
    return absl::NotFoundError(spec);
  }
  return LinearFactory([target](const std::string&, const TensorView& t) {
    return MakeDenseLinear(t, target);
  });
}

}  // namespace

bool LinearHoldsOwner(const Linear& l, const std::shared_ptr<const void>& owner) {
  if (!owner) return false;
  for (const auto& s : l.storage) {
    if (!s.owner_before(owner) && !owner.owner_before(s)) return true;
  }
  return l.first != nullptr && LinearHoldsOwner(*l.first, owner);
}

void RegisterCompressionFactoryMaker(CompressionFactoryMaker maker) {
  FactoryMaker() = std::move(maker);
}

absl::StatusOr<std::shared_ptr<Model>> LoadModel(const LoadOptions& options_in) {
  LoadOptions options = options_in;
  if (options.weight_memory_budget > 0) {
    if (!options.weights.empty() && options.weights != "auto") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--weight-memory-budget picks the weight formats itself: leave --weights at auto, not '",
          options.weights, "'"));
    }
    options.weights = absl::StrCat("budget:", options.weight_memory_budget);
    options.weight_memory_budget = 0;  // consumed: calibration loads a dense copy with these
  }
  auto model = std::make_shared<Model>();
  model->id = options.model;
  std::shared_ptr<TensorSource> source;
  if (absl::StartsWith(options.model, "random:")) {
    const std::string shape = options.model.substr(7);
    ASSIGN_OR_RETURN(model->config, RandomShapeConfig(shape));
    DType dt = DType::kBF16;
    if (options.weights == "f32" || options.weights == "fp32") dt = DType::kF32;
    if (options.weights == "f16" || options.weights == "fp16") dt = DType::kF16;
    source = MakeRandomSource(model->config, dt, options.random_seed);
    ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok,
                     Tokenizer::FromVocab(RandomVocab(model->config.vocab_size)));
    model->tokenizer = std::move(tok);
  } else {
    ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, OpenCheckpoint(options.model));
    model->config = ckpt.config;
    source = std::move(ckpt.tensors);
    if (ckpt.gguf) {
      ASSIGN_OR_RETURN(VocabData vocab, ReadGgufVocab(*ckpt.gguf));
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::FromVocab(std::move(vocab)));
      model->tokenizer = std::move(tok);
    } else {
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::FromDirectory(ckpt.dir));
      model->tokenizer = std::move(tok);
    }
  }
  RETURN_IF_ERROR(model->config.Validate());
  if (model->tokenizer->vocab_size() > model->config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer has ", model->tokenizer->vocab_size(), " tokens but the model's vocab_size is ",
        model->config.vocab_size));
  }
  model->source = source;
  ASSIGN_OR_RETURN(const ArchitectureSpec* arch, FindArchitecture(model->config));

  RegisterBuiltinCompression();  // engine/compress presets/recipes (idempotent)
  LinearFactory factory;
  auto dense = DenseFactory(options.weights);
  const auto* stored = dynamic_cast<const StoredLinearSource*>(source.get());
  const bool as_stored =
      options.weights == "auto" || options.weights == "stored" || options.weights.empty();
  if (stored != nullptr && (as_stored || !stored->AllowsRecompression())) {
    // Compressed / GPTQ / AWQ checkpoints load as stored (engine/compress/checkpoint_io.h).
    if (!as_stored) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.model, " is a compressed checkpoint: use --weights auto (or stored), not '",
          options.weights, "'"));
    }
    factory = StoredLinearFactory(stored);
  } else if (dense.ok()) {
    factory = *dense;
  } else if (FactoryMaker()) {
    ASSIGN_OR_RETURN(factory, FactoryMaker()(options.weights, options, *model));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown --weights '", options.weights,
                                                   "'; known: auto, f32, f16, bf16"));
  }
  model->weight_recipe = options.weights;
  // Count linears for progress output.
  const int total = model->config.num_hidden_layers * 7 + 1;
  int done = 0;
  // Weights read in place from the file are copied into memory the model owns unless
  // --mmap-weights (LoadOptions::mmap_weights: decode reads the copies faster). Then one rule
  // for every factory: once the built Linear no longer reads the checkpoint's bytes (it holds
  // no reference to the tensor's owner: it compressed, converted or copied them), the source
  // pages leave resident memory. Peak RSS of such a load ~ built weights + one tensor, for
  // compressing recipes, `--weights bf16` conversions, copies and compressed checkpoints
  // alike; a Linear that views the file in place keeps its pages.
  LinearFactory counted = [&](const std::string& name, const TensorView& t) {
    auto r = factory(name, t);
    if (r.ok() && !options.mmap_weights) *r = OwnMappedBuffers(*r);
    if (r.ok() && options.cpu_kernel_layouts) {
      // Bytes the model reads elsewhere too (TensorView::shared: a tied lm_head's embedding
      // table) are rewritten into a copy, never in place; every other view is this Linear's
      // alone (e.g. GGUF Q/K rows un-permuted into a buffer of their own).
      *r = UseCpuKernelLayouts(*r, t.shared ? t.data : nullptr);
    }
    if (r.ok() && !LinearHoldsOwner(*r, t.owner)) MmapFile::ReleasePages(t.data, t.bytes);
    if (options.progress) options.progress(++done, total);
    return r;
  };
  RETURN_IF_ERROR(arch->build(*source, counted, model.get()));
  return model;
}

}  // namespace compressd
