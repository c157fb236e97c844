// The engine thread: continuous batching over the paged KV cache.
// Every step: take new requests and cancels, plan (sched/scheduler), apply the plan to the
// block pool, run one forward over the batch, sample, stream text, finish sequences.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/backend.h"
#include "engine/core/logging.h"
#include "engine/engine.h"
#include "engine/exec/evaluator.h"
#include "engine/exec/runner.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/model_loader.h"
#include "engine/sched/ladder.h"
#include "engine/sched/scheduler.h"
#include "engine/sched/sequence.h"
#include "xxhash.h"

#if defined(COMPRESSD_HAVE_CUDA)
#include "engine/exec/cuda/cuda_runner.h"
#endif

namespace compressd {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "?";
}

namespace {

constexpr int kMaxStopStrings = 16;
constexpr size_t kMaxStopBytes = 256;
constexpr int kMaxStopTokenIds = 64;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Length of the longest prefix of s that ends on a UTF-8 character boundary, at most n.
size_t Utf8Floor(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

class EngineImpl : public Engine {
 public:
  explicit EngineImpl(const EngineOptions& o)
      : opts_(o),
        pool_(o.threads > 0 ? o.threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))) {}

  ~EngineImpl() override { Shutdown(); }

  absl::Status Init() {
    if (opts_.tensor_parallel < 1 || opts_.tensor_parallel > 8) {
      return absl::InvalidArgumentError("--tensor-parallel must be in [1, 8]");
    }
    if (opts_.tensor_parallel > 1) {
      // The sharding and communicators exist (engine/exec/tensor_parallel.h) but the engine
      // does not run sharded yet.
      return absl::UnimplementedError(absl::StrFormat(
          "--tensor-parallel %d: sharded execution is not wired into the engine yet",
          opts_.tensor_parallel));
    }
    LoadOptions lo;
    lo.model = opts_.model;
    lo.weights = opts_.weights;
    lo.weight_memory_budget = static_cast<uint64_t>(std::max<int64_t>(0, opts_.weight_memory_budget));
    lo.calibration_file = opts_.calibration_file;
    lo.mmap_weights = opts_.mmap_weights;
    lo.cpu_kernel_layouts = opts_.device == "cpu";
    lo.random_seed = opts_.random_seed;
    lo.threads = pool_.num_threads();
    ASSIGN_OR_RETURN(model_, LoadModel(lo));
    const ModelConfig& c = model_->config;
    context_ = opts_.context_length > 0 ? opts_.context_length
                                        : std::min<int32_t>(c.max_position_embeddings, 8192);
    if (opts_.context_length > c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--context-length %d exceeds the model's max_position_embeddings %d",
          opts_.context_length, c.max_position_embeddings));
    }
    if (c.sliding_window > 0 && context_ > c.sliding_window) {
      LOG_WARN("context capped to the model's sliding window of {} tokens", c.sliding_window);
      context_ = c.sliding_window;
    }
    if (opts_.kv_block_size < 1 || opts_.kv_block_size > 256) {
      return absl::InvalidArgumentError("--kv-block-size must be in [1, 256]");
    }
    if (opts_.max_batch_tokens < 1) return absl::InvalidArgumentError("--max-batch-tokens must be >= 1");
    if (opts_.max_running < 1) return absl::InvalidArgumentError("--max-running must be >= 1");
    KvGeometry g;
    g.n_layers = c.num_hidden_layers;
    g.n_heads = c.num_attention_heads;
    g.n_kv_heads = c.num_key_value_heads;
    g.head_dim = c.head_dim;
    g.block_size = opts_.kv_block_size;
    ASSIGN_OR_RETURN(std::unique_ptr<KvCodec> codec, MakeKvCodec(opts_.kv_cache, g));
    if (codec->NeedsCalibration()) {
      // CSKV: projections from K/V statistics on calibration text (--calibration-file, else
      // the model folder's calibration.txt); without text the codec keeps its uncalibrated
      // fallback and says so.
      std::string text = opts_.calibration_file;
      if (text.empty()) {
        const std::string candidate = opts_.model + "/calibration.txt";
        if (FILE* f = std::fopen(candidate.c_str(), "rb")) {
          std::fclose(f);
          text = candidate;
        }
      }
      if (!text.empty()) {
        RETURN_IF_ERROR(CalibrateKvCodec(model_, codec.get(), text, context_, 32768, &pool_));
        LOG_INFO("KV codec {} calibrated on {}", opts_.kv_cache, text);
      }
    }
    int64_t mem = opts_.kv_cache_memory;
    const double bpt = codec->BytesPerToken();
    if (mem <= 0) {
      // Default: room for max_running full contexts, capped at 1 GiB but never less than
      // one full context.
      const double want = bpt * context_ * opts_.max_running;
      mem = static_cast<int64_t>(std::min(want, double{1 << 30}));
      mem = std::max<int64_t>(mem, static_cast<int64_t>(bpt * (context_ + g.block_size)));
    }
    ASSIGN_OR_RETURN(cache_, KvCache::Create(std::move(codec), mem));
    if (opts_.kv_pressure_min_bits != 2 && opts_.kv_pressure_min_bits != 4 &&
        opts_.kv_pressure_min_bits != 8) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--kv-pressure-min-bits %d: allowed 2, 4 or 8", opts_.kv_pressure_min_bits));
    }
    // The ladder runs where the codec can demote and the CPU runner reads the blocks (the
    // CUDA runner's arena is fp16 only). demote_from_/to_ are written once, before the thread.
    ladder_ = opts_.kv_pressure_ladder && opts_.device == "cpu" &&
              cache_->codec().CanDemote(opts_.kv_pressure_min_bits, &demote_from_, &demote_to_);
    if (!ladder_) demote_from_.clear(), demote_to_.clear();
    // Per-request codec (GenerationRequest::kv_cache): the pool's block layout is shared, so a
    // request may only ask for the server's codec or the one its ladder demotes to.
    request_codecs_.push_back(cache_->codec().name());
    if (!demote_from_.empty() && demote_from_ != request_codecs_.front()) {
      request_codecs_.push_back(demote_from_);
    }
    if (ladder_ && demote_to_ != demote_from_) request_codecs_.push_back(demote_to_);
    // The device is validated before anything runs on it: without CUDA compiled in or
    // without a GPU, --device cuda:N is a clear error, never a silent fallback.
    ASSIGN_OR_RETURN(DeviceSpec device, ParseDevice(opts_.device));
    if (device.kind != DeviceKind::kCpu) {
      ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(opts_.device));
      (void)backend;
#if defined(COMPRESSD_HAVE_CUDA)
      ASSIGN_OR_RETURN(cuda_runner_, MakeCudaRunner(model_, cache_.get(), context_, opts_.device));
#else
      return absl::UnavailableError("this build has no CUDA backend");
#endif
    } else {
      runner_ = std::make_unique<ModelRunner>(model_, cache_.get(), &pool_, context_);
    }

    summary_.model_id = model_->id;
    summary_.architecture = c.architecture;
    summary_.context_length = context_;
    summary_.vocab_size = c.vocab_size;
    summary_.parameters = model_->Parameters();
    summary_.weight_bytes = model_->WeightBytes();
    for (const auto& gr : model_->Groups()) {
      summary_.groups.push_back({gr.name, gr.format, gr.params, gr.bytes});
    }
    summary_.kv_codec = cache_->codec().name();
    summary_.kv_bytes_per_token = cache_->codec().BytesPerToken();
    summary_.kv_block_size = cache_->block_size();
    summary_.kv_capacity_tokens = cache_->CapacityTokens();
    summary_.backend = opts_.device == "cpu" ? absl::StrFormat("cpu (%d threads)", pool_.num_threads())
                                             : opts_.device;
    summary_.max_batch_tokens = opts_.max_batch_tokens;
    summary_.max_running = opts_.max_running;
    summary_.kv_cache_request_codecs = request_codecs_;
    if (ladder_)
      LOG_INFO("KV pressure ladder: {} -> {} before preemption", demote_from_, demote_to_);
    LOG_INFO("engine ready: {} ({}), {} params, {:.1f} MB weights, kv {} {:.0f} B/token, "
             "capacity {} tokens, context {}",
             model_->id, c.architecture, summary_.parameters, summary_.weight_bytes / 1e6,
             summary_.kv_codec, summary_.kv_bytes_per_token, summary_.kv_capacity_tokens,
             context_);
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

  absl::Status Submit(GenerationRequest req, EventCallback cb) override {
    const int32_t vocab = model_->config.vocab_size;
    if (req.prompt_tokens.empty()) {
      return absl::InvalidArgumentError("prompt is empty: give a prompt, prompt_token_ids or chat messages");
    }
    for (size_t i = 0; i < req.prompt_tokens.size(); ++i) {
      const int32_t t = req.prompt_tokens[i];
      if (t < 0 || t >= vocab) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "prompt_token_ids[%d] = %d is out of range; allowed [0, %d)", i, t, vocab));
      }
    }
    const int32_t plen = static_cast<int32_t>(req.prompt_tokens.size());
    if (plen >= context_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "prompt has %d tokens; the context length is %d", plen, context_));
    }
    if (req.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
    if (req.max_tokens > 0 && static_cast<int64_t>(plen) + req.max_tokens > context_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "max_tokens = %d with a %d-token prompt exceeds the context length %d; allowed "
          "max_tokens in [0, %d]",
          req.max_tokens, plen, context_, context_ - plen));
    }
    RETURN_IF_ERROR(ValidateSamplingParams(req.sampling, vocab));
    if (req.stop.size() > kMaxStopStrings) {
      return absl::InvalidArgumentError(absl::StrFormat("stop has %d strings; at most %d allowed",
                                                        req.stop.size(), kMaxStopStrings));
    }
    for (size_t i = 0; i < req.stop.size(); ++i) {
      if (req.stop[i].empty() || req.stop[i].size() > kMaxStopBytes) {
        return absl::InvalidArgumentError(
            absl::StrFormat("stop[%d] must be 1 to %d bytes", i, kMaxStopBytes));
      }
    }
    if (req.stop_token_ids.size() > kMaxStopTokenIds) {
      return absl::InvalidArgumentError(absl::StrFormat("stop_token_ids has more than %d ids",
                                                        kMaxStopTokenIds));
    }
    for (size_t i = 0; i < req.stop_token_ids.size(); ++i) {
      if (req.stop_token_ids[i] < 0 || req.stop_token_ids[i] >= vocab) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "stop_token_ids[%d] = %d is out of range; allowed [0, %d)", i, req.stop_token_ids[i], vocab));
      }
    }
    if (req.top_logprobs > 20) {
      return absl::InvalidArgumentError("top_logprobs must be in [0, 20]");
    }
    if (!req.kv_cache.empty()) {
      if (std::find(request_codecs_.begin(), request_codecs_.end(), req.kv_cache) ==
          request_codecs_.end()) {
        return absl::InvalidArgumentError(KvCacheRequestError(req.kv_cache));
      }
      // Normalised: empty = the server's codec, else the ladder's smaller codec (eager).
      if (!ladder_ || req.kv_cache != demote_to_) req.kv_cache.clear();
    }
    const int32_t max_total = req.max_tokens > 0 ? plen + req.max_tokens : context_;
    const int64_t blocks_needed = (max_total + cache_->block_size() - 1) / cache_->block_size();
    if (blocks_needed > cache_->pool().num_blocks()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "request needs up to %d KV tokens but the whole cache holds %d; lower max_tokens or "
          "raise --kv-cache-memory",
          max_total, cache_->CapacityTokens()));
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || draining_) {
      return absl::UnavailableError("server is draining; not accepting new requests");
    }
    if (queued_ >= opts_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "request queue is full (%d waiting); retry later", opts_.max_queue));
    }
    if (req.request_id.empty()) req.request_id = absl::StrFormat("req-%d", next_id_ + 1);
    if (live_ids_.contains(req.request_id)) {
      return absl::AlreadyExistsError(absl::StrCat("request_id '", req.request_id,
                                                   "' is already in flight"));
    }
    const uint64_t seed = req.sampling.seed.has_value() ? *req.sampling.seed
                                                        : opts_.random_seed ^ (next_id_ * 0x9e37ull);
    auto seq = std::make_unique<Sequence>(++next_id_, std::move(req), std::move(cb),
                                          *model_->tokenizer, seed);
    seq->tokens = seq->req.prompt_tokens;
    seq->prompt_len = plen;
    seq->max_total = max_total;
    seq->arrival = seq->id;
    live_ids_.insert(seq->req.request_id);
    inbox_.push_back(std::move(seq));
    ++queued_;
    cv_.notify_one();
    return absl::OkStatus();
  }

  void Cancel(const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(request_id);
    cv_.notify_one();
  }

  void StartDraining() override {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }

  bool Idle() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return queued_ == 0 && running_count_.load() == 0 && inbox_.empty();
  }

  void Shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

  EngineStats Stats() const override {
    EngineStats s;
    s.running = running_count_.load();
    s.waiting = waiting_count_.load();
    s.kv_blocks_total = cache_ ? cache_->pool().num_blocks() : 0;
    s.kv_blocks_used = kv_used_.load();
    s.kv_usage_ratio = s.kv_blocks_total ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0;
    s.preemptions_total = preemptions_.load();
    s.kv_demotions_total = demotions_.load();
    s.kv_demotions_requested_total = demotions_requested_.load();
    s.kv_demotion_from = demote_from_;
    s.kv_demotion_to = demote_to_;
    s.kv_demotion_seconds_total = demotion_ns_.load() * 1e-9;
    s.prompt_tokens_total = prompt_tokens_.load();
    s.generation_tokens_total = gen_tokens_.load();
    s.prefix_cache_hits_total = prefix_hits_.load();
    s.steps_total = steps_.load();
    return s;
  }

  const ModelSummary& Summary() const override { return summary_; }
  const Tokenizer& tokenizer() const override { return *model_->tokenizer; }

  std::vector<int32_t> Tokenize(const std::string& text, bool add_special) const override {
    return model_->tokenizer->Encode(text, add_special);
  }

  absl::StatusOr<std::vector<int32_t>> TokenizeChat(const std::vector<ChatMessage>& messages,
                                                    bool add_generation_prompt) const override {
    const Tokenizer& tok = *model_->tokenizer;
    const std::string& tmpl =
        tok.chat_template().empty() ? DefaultChatTemplate() : tok.chat_template();
    ChatTemplateOptions o;
    o.add_generation_prompt = add_generation_prompt;
    if (tok.bos_id() >= 0) o.bos_token = tok.Piece(tok.bos_id());
    if (tok.eos_id() >= 0) o.eos_token = tok.Piece(tok.eos_id());
    ASSIGN_OR_RETURN(std::string text, RenderChatTemplate(tmpl, messages, o));
    // The template writes BOS itself where the model wants it.
    return tok.Encode(text, /*add_special=*/false, /*parse_special=*/true);
  }

 private:
  // ---- engine thread ---------------------------------------------------------------
  void Loop() {
    for (;;) {
      std::vector<std::unique_ptr<Sequence>> incoming;
      std::vector<std::string> cancels;
      bool stopping;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (running_.empty() && waiting_.empty() && inbox_.empty() && cancels_.empty() &&
            !stopping_) {
          cv_.wait(lock, [&] { return !inbox_.empty() || !cancels_.empty() || stopping_; });
        }
        while (!inbox_.empty()) {
          incoming.push_back(std::move(inbox_.front()));
          inbox_.pop_front();
        }
        cancels.swap(cancels_);
        stopping = stopping_;
      }
      for (auto& s : incoming) waiting_.push_back(std::move(s));
      for (const auto& id : cancels) MarkCancelled(id);
      if (stopping) {
        for (auto& s : running_) s->cancelled = true;
        for (auto& s : waiting_) s->cancelled = true;
      }
      ReapCancelled();
      if (stopping) return;
      if (running_.empty() && waiting_.empty()) continue;
      Step();
    }
  }

  void MarkCancelled(const std::string& id) {
    for (auto& s : running_) {
      if (s->req.request_id == id) s->cancelled = true;
    }
    for (auto& s : waiting_) {
      if (s->req.request_id == id) s->cancelled = true;
    }
  }

  void ReapCancelled() {
    auto reap = [&](std::vector<std::unique_ptr<Sequence>>& v) {
      for (auto& s : v) {
        if (s && s->cancelled) {
          Finish(*s, FinishReason::kCancelled, "", absl::OkStatus());
          s.reset();
        }
      }
      v.erase(std::remove(v.begin(), v.end(), nullptr), v.end());
    };
    reap(running_);
    reap(waiting_);
    UpdateGauges();
    DeliverFinals();
  }

  // Final events go out after the gauges are updated, so a client that sees its request
  // finish also sees it gone from Stats().
  void DeliverFinals() {
    for (auto& [cb, ev] : finals_) cb(std::move(ev));
    finals_.clear();
  }

  void UpdateGauges() {
    running_count_ = static_cast<int32_t>(running_.size());
    waiting_count_ = static_cast<int32_t>(waiting_.size());
    kv_used_ = cache_->pool().NumUsed();
    std::lock_guard<std::mutex> lock(mu_);
    queued_ = static_cast<int32_t>(waiting_.size() + inbox_.size());
  }

  // Chained hash of block i's tokens (prefix cache key), computed lazily.
  void HashFullBlocks(Sequence& s, int32_t upto_tokens) {
    const int bs = cache_->block_size();
    const int32_t full = upto_tokens / bs;
    while (static_cast<int32_t>(s.block_hashes.size()) < full) {
      const size_t i = s.block_hashes.size();
      const uint64_t parent = i == 0 ? 0x5eedull : s.block_hashes[i - 1];
      s.block_hashes.push_back(
          XXH3_64bits_withSeed(s.tokens.data() + i * bs, bs * sizeof(int32_t), parent));
    }
  }

  void Step() {
    const int bs = cache_->block_size();
    BlockPool& pool = cache_->pool();
    SchedulerConfig cfg;
    cfg.block_size = bs;
    cfg.max_batch_tokens = opts_.max_batch_tokens;
    cfg.max_running = opts_.max_running;
    cfg.watermark_blocks = std::max(1, pool.num_blocks() / 100);
    cfg.aging_steps = 256;

    std::vector<SchedSeq> run, wait;
    for (const auto& s : running_) {
      SchedSeq q;
      q.id = s->id;
      q.priority = s->req.priority;
      q.arrival = s->arrival;
      q.num_tokens = static_cast<int32_t>(s->tokens.size());
      q.num_computed = s->num_computed;
      q.blocks_held = static_cast<int32_t>(s->blocks.size());
      q.demoted_blocks = s->demoted_blocks;
      if (ladder_) {
        q.demotable_blocks = static_cast<int32_t>(
            PlanBlockMerges(ladder_cfg_, LadderTable(*s), s->num_computed / bs, INT32_MAX).size());
        q.eager_demotion = !s->req.kv_cache.empty();
      }
      run.push_back(q);
    }
    for (const auto& s : waiting_) {
      SchedSeq q;
      q.id = s->id;
      q.priority = s->req.priority;
      q.arrival = s->arrival;
      q.waited_steps = s->waited_steps;
      q.num_tokens = static_cast<int32_t>(s->tokens.size());
      if (opts_.prefix_caching) {
        const int32_t max_hit_blocks = (q.num_tokens - 1) / bs;
        HashFullBlocks(*s, max_hit_blocks * bs);
        int32_t hits = 0, hits_free = 0;
        for (int32_t i = 0; i < max_hit_blocks; ++i) {
          bool in_free = false;
          if (!pool.Peek(s->block_hashes[i], &in_free)) break;
          ++hits;
          hits_free += in_free ? 1 : 0;
        }
        q.prefix_hit_tokens = hits * bs;
        q.prefix_hit_blocks_free = hits_free;
      }
      wait.push_back(q);
    }
    SchedulePlan plan = Schedule(cfg, run, wait, pool.NumFree());

    absl::flat_hash_map<int64_t, Sequence*> by_id;
    for (auto& s : running_) by_id[s->id] = s.get();
    for (auto& s : waiting_) by_id[s->id] = s.get();

    // Preemption by recompute: free blocks, requeue (keeps arrival order and priority).
    for (int64_t id : plan.preempted) {
      Sequence* s = by_id[id];
      ReleaseBlocks(*s);
      s->num_computed = 0;
      ++s->preemptions;
      ++preemptions_;
      auto it = std::find_if(running_.begin(), running_.end(),
                             [&](const auto& p) { return p.get() == s; });
      waiting_.push_back(std::move(*it));
      running_.erase(it);
    }
    for (int64_t id : plan.admitted) {
      Sequence* s = by_id[id];
      auto it = std::find_if(waiting_.begin(), waiting_.end(),
                             [&](const auto& p) { return p.get() == s; });
      running_.push_back(std::move(*it));
      waiting_.erase(it);
      // Take the cached prefix blocks.
      if (opts_.prefix_caching) {
        const int32_t max_hit_blocks = (static_cast<int32_t>(s->tokens.size()) - 1) / bs;
        for (int32_t i = 0; i < max_hit_blocks; ++i) {
          const int32_t b = pool.Lookup(s->block_hashes[i]);
          if (b < 0) break;
          s->blocks.push_back(b);
        }
        s->num_computed = static_cast<int32_t>(s->blocks.size()) * bs;
        s->hashed_blocks = static_cast<int32_t>(s->blocks.size());
      }
      if (!s->admitted_once) {
        s->admitted_once = true;
        s->admitted = Clock::now();
        s->cached_tokens = s->num_computed;
        prefix_hits_ += s->num_computed;
      }
    }
    for (auto& s : waiting_) ++s->waited_steps;
    // Demotions after admission: a step that demotes under pressure admits nothing, and the
    // requested (eager) ones then skip any block an admitted request has just started sharing.
    if (!plan.demotions.empty()) ApplyDemotions(plan.demotions, by_id);

    std::vector<BatchEntry> batch;
    std::vector<Sequence*> batch_seqs;
    for (const auto& c : plan.chunks) {
      Sequence* s = by_id[c.id];
      // The scheduler's count may differ from the live one by prefix hits taken above.
      const int32_t target_blocks =
          (s->num_computed + c.num_tokens + bs - 1) / bs - s->demoted_blocks;
      while (static_cast<int32_t>(s->blocks.size()) < target_blocks) {
        const int32_t b = pool.Allocate();
        CHECK_MSG(b >= 0, "scheduler planned more blocks than are free");
        s->blocks.push_back(b);
      }
      BatchEntry e;
      e.tokens = s->tokens.data() + s->num_computed;
      e.n_tokens = c.num_tokens;
      e.start_pos = s->num_computed;
      e.block_table = s->blocks.data();
      e.n_blocks = static_cast<int32_t>(s->blocks.size());
      e.n_demoted = s->demoted_blocks;
      const bool reaches_end = s->num_computed + c.num_tokens == static_cast<int32_t>(s->tokens.size());
      e.logits = reaches_end ? LogitsMode::kLast : LogitsMode::kNone;
      batch.push_back(e);
      batch_seqs.push_back(s);
      s->peak_kv_bytes = std::max<uint64_t>(s->peak_kv_bytes, s->blocks.size() * cache_->BlockBytes());
    }
    if (batch.empty()) {
      UpdateGauges();
      return;
    }
    int64_t rows = 0;
    const float* logits = nullptr;
#if defined(COMPRESSD_HAVE_CUDA)
    if (cuda_runner_) {
      absl::StatusOr<const float*> r = cuda_runner_->Forward(batch, &rows);
      if (!r.ok()) {
        // A device error fails the sequences in this batch, not the server.
        LOG_ERROR("forward failed on {}: {}", opts_.device, r.status().ToString());
        for (Sequence* s : batch_seqs) {
          Finish(*s, FinishReason::kError, "", r.status());
          finished_.insert(s->id);
        }
        running_.erase(std::remove_if(running_.begin(), running_.end(),
                                      [&](const auto& p) { return finished_.contains(p->id); }),
                       running_.end());
        finished_.clear();
        UpdateGauges();
        DeliverFinals();
        return;
      }
      logits = *r;
    } else {
      logits = runner_->Forward(batch, &rows);
    }
#else
    logits = runner_->Forward(batch, &rows);
#endif
    ++steps_;
    const int32_t V = model_->config.vocab_size;
    // Sample every sequence that produced logits, on the pool: each Sampler only touches its
    // own sequence and logits row, and at 64 streams the samplers cost as much as a matmul.
    std::vector<SampleResult> sampled;
    {
      std::vector<std::pair<Sequence*, float*>> todo;
      int64_t r = 0;
      for (size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].logits != LogitsMode::kLast) continue;
        todo.push_back({batch_seqs[i], const_cast<float*>(logits) + r * V});
        ++r;
      }
      sampled.resize(todo.size());
      pool_.ParallelFor(static_cast<int64_t>(todo.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          Sequence& s = *todo[k].first;
          sampled[k] = s.sampler.Sample(todo[k].second, V, s.tokens, s.counts, s.req.top_logprobs);
        }
      }, /*cost_per_unit=*/int64_t{8} * V);
    }
    size_t next_sample = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      Sequence& s = *batch_seqs[i];
      const bool was_prefill = s.num_computed < s.prompt_len;
      s.num_computed += batch[i].n_tokens;
      if (was_prefill) prompt_tokens_ += std::min(s.num_computed, s.prompt_len) -
                                         std::min(s.num_computed - batch[i].n_tokens, s.prompt_len);
      if (opts_.prefix_caching) {
        HashFullBlocks(s, s.num_computed);
        // Only blocks whose KV is computed: block_hashes may already cover the whole prompt
        // (hashed while waiting) when a chunked prefill has filled only some blocks.
        const int32_t computed_full = s.num_computed / bs;
        while (s.hashed_blocks < computed_full &&
               s.hashed_blocks < static_cast<int32_t>(s.block_hashes.size())) {
          // Demoted blocks all precede the blocks not yet registered (ladder.h: only full,
          // computed blocks are merged), so logical block i sits at table index i - D.
          pool.SetHash(s.blocks[s.hashed_blocks - s.demoted_blocks],
                       s.block_hashes[s.hashed_blocks]);
          ++s.hashed_blocks;
        }
      }
      if (batch[i].logits != LogitsMode::kLast) continue;
      OnSampled(s, std::move(sampled[next_sample++]));
    }
    // Finished sequences were marked by OnSampled.
    for (auto& s : running_) {
      if (s && finished_.contains(s->id)) {
        s.reset();
      }
    }
    running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
    finished_.clear();
    UpdateGauges();
    DeliverFinals();
  }

  // Appends the sampled token and emits its event (finishing the sequence when it ends).
  void OnSampled(Sequence& s, SampleResult r) {
    const int32_t tok = r.token;
    s.tokens.push_back(tok);
    ++s.counts[tok];
    ++gen_tokens_;
    if (!s.has_first_token) {
      s.has_first_token = true;
      s.first_token = Clock::now();
    }
    GenerationEvent ev;
    ev.token_ids.push_back(tok);
    if (s.req.top_logprobs >= 0) {
      ev.chosen_logprobs.push_back({tok, r.logprob});
      ev.top_logprobs.push_back(std::move(r.top));
    }
    FinishReason fin = FinishReason::kNone;
    std::string stop_reason;
    const Tokenizer& tk = *model_->tokenizer;
    bool emit_token_text = true;
    if (!s.req.ignore_eos && tk.IsEndOfGeneration(tok)) {
      fin = FinishReason::kStop;
      stop_reason = "eos";
      emit_token_text = false;
    } else if (std::find(s.req.stop_token_ids.begin(), s.req.stop_token_ids.end(), tok) !=
               s.req.stop_token_ids.end()) {
      fin = FinishReason::kStop;
      stop_reason = absl::StrCat("token:", tok);
      emit_token_text = false;
    }
    if (emit_token_text) s.held += s.decoder.Append(tok);
    // Stop strings: search the held-back text; emit only what cannot start a match.
    size_t max_stop = 0;
    for (const auto& st : s.req.stop) max_stop = std::max(max_stop, st.size());
    if (fin == FinishReason::kNone && !s.req.stop.empty()) {
      size_t best = std::string::npos;
      std::string which;
      for (const auto& st : s.req.stop) {
        const size_t p = s.held.find(st);
        if (p != std::string::npos && p < best) {
          best = p;
          which = st;
        }
      }
      if (best != std::string::npos) {
        s.held.resize(best);
        fin = FinishReason::kStop;
        stop_reason = which;
      }
    }
    if (fin == FinishReason::kNone &&
        (static_cast<int32_t>(s.tokens.size()) >= s.max_total ||
         static_cast<int32_t>(s.tokens.size()) >= context_)) {
      fin = FinishReason::kLength;
    }
    if (fin != FinishReason::kNone) {
      if (fin == FinishReason::kLength) s.held += s.decoder.Flush();
      ev.text = std::move(s.held);
      s.held.clear();
      Finish(s, fin, stop_reason, absl::OkStatus(), &ev);
      finished_.insert(s.id);
      return;
    }
    const size_t keep = max_stop > 0 ? max_stop - 1 : 0;
    if (s.held.size() > keep) {
      const size_t n = Utf8Floor(s.held, s.held.size() - keep);
      ev.text = s.held.substr(0, n);
      s.held.erase(0, n);
    }
    s.callback(std::move(ev));
  }

  // INVALID_ARGUMENT text for a kv_cache value this engine cannot give a request.
  std::string KvCacheRequestError(const std::string& value) const {
    std::string allowed = "\"\" (the server's codec)";
    for (const std::string& c : request_codecs_) absl::StrAppend(&allowed, ", \"", c, "\"");
    std::string why;
    if (!ladder_) {
      why = absl::StrFormat(
          "; the server's KV codec %s has no smaller codec for requests "
          "(its KV pressure ladder is off, below --kv-pressure-min-bits, or "
          "the codec cannot demote)",
          request_codecs_.front());
    } else {
      why = absl::StrFormat(
          "; the server's KV codec is %s, and a request may only ask for the "
          "smaller codec its KV pressure ladder demotes to (%s)",
          request_codecs_.front(), demote_to_);
    }
    return absl::StrFormat("kv_cache is '%s'; allowed on this server: %s%s",
                           value.size() > 32 ? value.substr(0, 32) + "..." : value, allowed, why);
  }

  void ReleaseBlocks(Sequence& s) {
    for (int32_t b : s.blocks) cache_->pool().DecRef(b);
    s.blocks.clear();
    s.hashed_blocks = 0;
    s.demoted_blocks = 0;
  }

  std::vector<LadderBlock> LadderTable(const Sequence& s) const {
    const BlockPool& pool = cache_->pool();
    std::vector<LadderBlock> t(s.blocks.size());
    for (size_t i = 0; i < s.blocks.size(); ++i) {
      t[i].demoted = pool.Demoted(s.blocks[i]);
      t[i].shared = pool.RefCount(s.blocks[i]) > 1;
    }
    return t;
  }

  // Ladder step 1 (engine/sched/ladder.h): re-encode the planned pairs, all layers, on the
  // thread pool (one unit per pair and layer: disjoint regions), then fix the metadata: the
  // first block of each pair keeps the merged tokens, the second goes back to the pool. Both
  // leave the prefix cache first, since their bytes no longer match their hashes. Pressure
  // merges (d.merges) are exact: the scheduler counted their freed blocks. Requested ones
  // (d.requested) are as many as are still mergeable.
  void ApplyDemotions(const std::vector<ScheduledDemotion>& demotions,
                      const absl::flat_hash_map<int64_t, Sequence*>& by_id) {
    const auto t0 = Clock::now();
    const int bs = cache_->block_size();
    const int n_layers = model_->config.num_hidden_layers;
    BlockPool& pool = cache_->pool();
    struct Pair {
      Sequence* s;
      int32_t index;
    };
    std::vector<Pair> pairs;
    size_t requested = 0;
    for (const ScheduledDemotion& d : demotions) {
      Sequence* s = by_id.at(d.id);
      const std::vector<int32_t> idx = PlanBlockMerges(
          ladder_cfg_, LadderTable(*s), s->num_computed / bs, d.merges + d.requested);
      CHECK_MSG(static_cast<int32_t>(idx.size()) >= d.merges,
                "scheduler planned more demotions than the sequence has");
      requested += idx.size() - static_cast<size_t>(d.merges);
      for (int32_t i : idx) pairs.push_back({s, i});
    }
    const KvCodec& codec = cache_->codec();
    pool_.ParallelFor(
        static_cast<int64_t>(pairs.size()) * n_layers, 1,
        [&](int64_t b, int64_t e) {
          for (int64_t u = b; u < e; ++u) {
            const Pair& p = pairs[u / n_layers];
            const int l = static_cast<int>(u % n_layers);
            const int32_t a = p.s->blocks[p.index], c = p.s->blocks[p.index + 1];
            codec.Demote(l, cache_->Block(a, l), cache_->Block(c, l), cache_->Block(a, l));
          }
        },
        int64_t{1} << 20);
    // Metadata, last pair first so that earlier indices stay valid.
    for (auto it = pairs.rbegin(); it != pairs.rend(); ++it) {
      Sequence& s = *it->s;
      const int32_t a = s.blocks[it->index], c = s.blocks[it->index + 1];
      pool.Forget(a);
      pool.Forget(c);
      pool.SetDemoted(a);
      pool.DecRef(c);
      s.blocks.erase(s.blocks.begin() + it->index + 1);
      ++s.demoted_blocks;
    }
    demotions_ += pairs.size();
    demotions_requested_ += requested;
    demotion_ns_ += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    LOG_DEBUG("KV ladder: demoted {} block pairs ({} requested) {} -> {} in {:.3f} ms",
              pairs.size(), requested, demote_from_, demote_to_, Seconds(Clock::now() - t0) * 1e3);
  }

  // Sends the final event (merging `ev` if given) and releases the sequence's blocks.
  void Finish(Sequence& s, FinishReason reason, const std::string& stop_reason,
              absl::Status error, GenerationEvent* ev = nullptr) {
    GenerationEvent local;
    GenerationEvent& e = ev != nullptr ? *ev : local;
    if (reason == FinishReason::kCancelled) {
      e.text += s.held;
      s.held.clear();
    }
    e.finished = true;
    e.finish_reason = reason;
    e.stop_reason = stop_reason;
    e.error = std::move(error);
    const auto now = Clock::now();
    Usage& u = e.usage;
    u.prompt_tokens = s.prompt_len;
    u.completion_tokens = s.generated();
    u.cached_tokens = s.cached_tokens;
    u.time_to_first_token_s = s.has_first_token ? Seconds(s.first_token - s.submitted) : 0;
    u.e2e_latency_s = Seconds(now - s.submitted);
    u.queue_time_s = s.admitted_once ? Seconds(s.admitted - s.submitted) : Seconds(now - s.submitted);
    u.kv_bytes = s.peak_kv_bytes;
    u.preemptions = s.preemptions;
    ReleaseBlocks(s);
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_ids_.erase(s.req.request_id);
    }
    finals_.emplace_back(std::move(s.callback), std::move(e));
  }

  EngineOptions opts_;
  ThreadPool pool_;
  std::shared_ptr<Model> model_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<ModelRunner> runner_;
#if defined(COMPRESSD_HAVE_CUDA)
  std::unique_ptr<CudaModelRunner> cuda_runner_;
#endif
  ModelSummary summary_;
  int32_t context_ = 0;
  bool ladder_ = false;
  LadderConfig ladder_cfg_;
  std::string demote_from_, demote_to_;
  std::vector<std::string> request_codecs_;  // allowed GenerationRequest::kv_cache values

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> inbox_;
  std::vector<std::string> cancels_;
  absl::flat_hash_set<std::string> live_ids_;
  bool draining_ = false;
  bool stopping_ = false;
  int32_t queued_ = 0;
  int64_t next_id_ = 0;
  std::thread thread_;

  // Engine thread only.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<std::unique_ptr<Sequence>> waiting_;
  absl::flat_hash_set<int64_t> finished_;
  std::vector<std::pair<EventCallback, GenerationEvent>> finals_;

  std::atomic<int32_t> running_count_{0}, waiting_count_{0};
  std::atomic<int64_t> kv_used_{0};
  std::atomic<uint64_t> preemptions_{0}, prompt_tokens_{0}, gen_tokens_{0}, prefix_hits_{0},
      steps_{0}, demotions_{0}, demotions_requested_{0}, demotion_ns_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  auto e = std::make_unique<EngineImpl>(options);
  RETURN_IF_ERROR(e->Init());
  return std::unique_ptr<Engine>(std::move(e));
}

}  // namespace compressd
