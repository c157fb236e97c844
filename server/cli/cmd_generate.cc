// compressd generate: one request through the real engine, text streamed to stdout as it
// is produced; statistics and logs go to stderr.
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>

#include "engine/core/logging.h"
#include "engine/engine.h"
#include "engine/model/tokenizer.h"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"

namespace compressd::cli {

int RunGenerate(int argc, char** argv) {
  EngineOptions eo;
  eo.max_running = 1;
  eo.max_queue = 1;
  std::string log_level = "warn";
  std::string prompt, system;
  bool chat = false, ignore_eos = false, stats = true;
  int32_t max_tokens = 256, top_logprobs = -1;
  SamplingParams sp;
  sp.temperature = 0.8f;
  sp.top_p = 0.95f;
  int64_t seed = -1;
  std::vector<std::string> stop;
  Args a("generate", "Generates text from --prompt (or from BOS when no prompt is given) and "
                     "streams it to stdout.");
  AddEngineOptions(a, &eo, &log_level);
  a.Add("prompt", &prompt, "prompt text (empty = start from BOS)");
  a.Add("chat", &chat, "treat --prompt as a user message and apply the model's chat template");
  a.Add("system", &system, "system message for --chat");
  a.Add("max-tokens", &max_tokens, "tokens to generate (0 = until the context is full)");
  a.Add("temperature", &sp.temperature, "sampling temperature; 0 = greedy");
  a.Add("top-k", &sp.top_k, "keep the k most likely tokens (0 = off)");
  a.Add("top-p", &sp.top_p, "nucleus sampling mass (1 = off)");
  a.Add("min-p", &sp.min_p, "drop tokens below min-p x the top probability (0 = off)");
  a.Add("repetition-penalty", &sp.repetition_penalty, "CTRL-style repetition penalty (1 = off)");
  a.Add("presence-penalty", &sp.presence_penalty, "OpenAI-style presence penalty");
  a.Add("frequency-penalty", &sp.frequency_penalty, "OpenAI-style frequency penalty");
  a.Add("seed", &seed, "sampling seed (-1 = random); same seed => same text");
  a.AddList("stop", &stop, "stop string (repeatable); not printed");
  a.Add("ignore-eos", &ignore_eos, "keep generating past the end-of-sequence token");
  a.Add("stats", &stats, "print tokens/s and timings to stderr at the end");
  a.AddNote(
      "Chat templates: the model's tokenizer_config.json chat_template is rendered with a\n"
      "Jinja2 subset (for/if/set, loop variables, filters trim/length/tojson/upper/lower,\n"
      "raise_exception) that covers the Llama 3, Qwen2/ChatML, Mistral and SmolLM templates;\n"
      "models without a template get ChatML.");
  if (int rc = a.Parse(argc, argv); rc >= 0) return rc;
  InitLogging(log_level);
  eo.model = ResolveModel(eo.model);
  if (seed >= 0) sp.seed = static_cast<uint64_t>(seed);
  if (!a.Given("seed")) sp.seed = std::random_device{}();

  auto engine_or = Engine::Create(eo);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "compressd generate: %s\n", engine_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<Engine> engine = std::move(*engine_or);
  GenerationRequest req;
  req.request_id = "generate";
  req.max_tokens = max_tokens;
  req.sampling = sp;
  req.stop = stop;
  req.ignore_eos = ignore_eos;
  req.top_logprobs = top_logprobs;
  if (chat) {
    std::vector<ChatMessage> msgs;
    if (!system.empty()) msgs.push_back({"system", system});
    msgs.push_back({"user", prompt});
    auto ids = engine->TokenizeChat(msgs, true);
    if (!ids.ok()) {
      std::fprintf(stderr, "compressd generate: %s\n", ids.status().ToString().c_str());
      return 1;
    }
    req.prompt_tokens = *ids;
  } else if (prompt.empty()) {
    const int32_t bos = engine->tokenizer().bos_id();
    if (bos < 0) {
      std::fprintf(stderr, "compressd generate: the model has no BOS token; give --prompt\n");
      return 2;
    }
    req.prompt_tokens = {bos};
  } else {
    req.prompt_tokens = engine->Tokenize(prompt, true);
  }
  if (req.max_tokens > 0) {
    const int32_t room = engine->Summary().context_length -
                         static_cast<int32_t>(req.prompt_tokens.size());
    if (req.max_tokens > room && room > 0) {
      LOG_WARN("--max-tokens {} capped to {} by the context length", req.max_tokens, room);
      req.max_tokens = room;
    }
  }

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  GenerationEvent final_event;
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = engine->Submit(req, [&](GenerationEvent&& ev) {
    if (!ev.text.empty()) {
      std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
      std::fflush(stdout);
    }
    if (ev.finished) {
      std::lock_guard<std::mutex> lock(mu);
      final_event = std::move(ev);
      done = true;
      cv.notify_one();
    }
  });
  if (!st.ok()) {
    std::fprintf(stderr, "compressd generate: %s\n", st.ToString().c_str());
    return 1;
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  engine->Shutdown();
  std::fputc('\n', stdout);  // end the text with a newline, as llama2.c and llama.cpp do
  std::fflush(stdout);
  if (final_event.finish_reason == FinishReason::kError) {
    std::fprintf(stderr, "\ncompressd generate: %s\n", final_event.error.ToString().c_str());
    return 1;
  }
  if (stats) {
    const Usage& u = final_event.usage;
    const double decode_s = secs - u.time_to_first_token_s;
    std::fprintf(stderr,
                 "\n[%d prompt tokens, %d generated, finish: %s%s%s; time to first token %.3f s, "
                 "decode %.1f tokens/s]\n",
                 u.prompt_tokens, u.completion_tokens, FinishReasonName(final_event.finish_reason),
                 final_event.stop_reason.empty() ? "" : " ", final_event.stop_reason.c_str(),
                 u.time_to_first_token_s,
                 u.completion_tokens > 1 && decode_s > 0 ? (u.completion_tokens - 1) / decode_s : 0.0);
  }
  return 0;
}

}  // namespace compressd::cli
