#include "eval_command.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/artifact_weight_source.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/evaluation.h"
#include "bitloom/formats/tokenizer.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace bitloom::tools {
namespace {

using nlohmann::json;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--text: cannot open ", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Little-endian int32, the host order of every platform Bitloom builds for.
absl::Status WriteIds(const std::string& path, const std::vector<int32_t>& ids) {
  return WriteText(path, std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t)));
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
}

// One artifact opened for in-process evaluation.
struct LoadedArtifact {
  std::unique_ptr<modelstore::ArtifactReader> reader;
  std::unique_ptr<formats::Tokenizer> tokenizer;
  std::unique_ptr<engine::DecoderModel> model;
};

absl::StatusOr<LoadedArtifact> LoadArtifact(const modelstore::ModelStore& store, const std::string& name,
                                            ThreadPool* pool) {
  LoadedArtifact a;
  BITLOOM_ASSIGN_OR_RETURN(a.reader, store.OpenReader(name));
  const v1::ArtifactManifest& manifest = a.reader->manifest();
  if (manifest.tokenizer().source_case() == v1::TokenizerSpec::SOURCE_NOT_SET) {
    return absl::FailedPreconditionError(absl::StrCat(name, ": the manifest has no tokenizer"));
  }
  BITLOOM_ASSIGN_OR_RETURN(a.tokenizer, formats::Tokenizer::FromSpec(manifest.tokenizer()));
  engine::ArtifactWeightSource weights(*a.reader, pool);
  auto model = engine::DecoderModel::Load(manifest.config(), weights, pool);
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat(name, ": ", model.status().message()));
  }
  a.model = *std::move(model);
  return a;
}

// "\reval: 1234/8190 tokens, 12.3 tok/s, 1m2s left" on stderr.
engine::EvaluationProgress ProgressPrinter(absl::Time start) {
  return [start](int64_t done, int64_t total) {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
    const double left = rate > 0 ? static_cast<double>(total - done) / rate : 0.0;
    std::cerr << absl::StrFormat("\reval: %d/%d tokens scored, %.1f tok/s, %s left   ", done, total, rate,
                                 absl::FormatDuration(absl::Trunc(absl::Seconds(left), absl::Seconds(1))))
              << std::flush;
    if (done == total) std::cerr << "\n";
  };
}

json Metrics(const engine::ModelScoreSums& s) {
  return json{{"perplexity", s.Perplexity()},
              {"mean_nll", s.targets > 0 ? s.nll_sum / static_cast<double>(s.targets) : 0.0},
              {"top1_accuracy", s.Top1Accuracy()},
              {"tokens_scored", s.targets}};
}

std::string Markdown(const json& report) {
  std::string md = absl::StrCat("Protocol: ", report["protocol"]["description"].get<std::string>(), "; text ",
                                report["text"].get<std::string>(), "; ", report["mode"].get<std::string>(),
                                ".\n\n");
  const bool divergence = report.contains("kl_divergence");
  absl::StrAppend(&md, "| model | bits/weight | perplexity | vs reference | top-1 accuracy |",
                  divergence ? " KL (nats/token) | top-1 agreement |" : "", "\n");
  absl::StrAppend(&md, "|---|---:|---:|---:|---:|", divergence ? "---:|---:|" : "", "\n");
  auto bits = [](const json& side) {
    return side.contains("bits_per_weight") ? absl::StrFormat("%.3f", side["bits_per_weight"].get<double>())
                                            : std::string("n/a");
  };
  const json& m = report["model"];
  const double ppl = m["perplexity"].get<double>();
  std::string vs = "";
  if (report.contains("reference")) {
    const double ref_ppl = report["reference"]["perplexity"].get<double>();
    vs = absl::StrFormat("%+.2f%%", 100.0 * (ppl / ref_ppl - 1.0));
  }
  absl::StrAppend(&md, "| ", m["name"].get<std::string>(), " | ", bits(m), " | ", absl::StrFormat("%.4f", ppl),
                  " | ", vs, " | ", absl::StrFormat("%.4f", m["top1_accuracy"].get<double>()), " |");
  if (divergence) {
    absl::StrAppend(&md, absl::StrFormat(" %.5f | %.4f |", report["kl_divergence"]["mean"].get<double>(),
                                         report["top1_agreement"].get<double>()));
  }
  absl::StrAppend(&md, "\n");
  if (report.contains("reference")) {
    const json& r = report["reference"];
    absl::StrAppend(&md, "| ", r["name"].get<std::string>(), " (reference) | ", bits(r), " | ",
                    absl::StrFormat("%.4f", r["perplexity"].get<double>()), " | | ",
                    absl::StrFormat("%.4f", r["top1_accuracy"].get<double>()), " |", divergence ? " 0 | 1 |" : "",
                    "\n");
  }
  if (report.contains("note")) absl::StrAppend(&md, "\n", report["note"].get<std::string>(), "\n");
  return md;
}

// Context capped at the model's, stride defaulting to it.
absl::StatusOr<engine::EvaluationProtocol> Protocol(const EvalOptions& o, int model_context) {
  engine::EvaluationProtocol p;
  if (o.context_length < 2) {
    return absl::InvalidArgumentError(absl::StrCat("--context: ", o.context_length, " must be >= 2"));
  }
  if (o.stride < 0) return absl::InvalidArgumentError(absl::StrCat("--stride: ", o.stride, " must be >= 0"));
  if (o.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--max_tokens: ", o.max_tokens, " must be >= 0"));
  }
  p.context_length = model_context > 0 ? std::min(o.context_length, model_context) : o.context_length;
  p.stride = o.stride == 0 ? p.context_length : o.stride;
  if (p.stride > p.context_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("--stride: ", p.stride, " is larger than the context (", p.context_length, ")"));
  }
  p.max_tokens = o.max_tokens;
  return p;
}

json ProtocolJson(const engine::EvaluationProtocol& p, int64_t total_tokens) {
  return json{{"context_length", p.context_length},
              {"stride", p.stride},
              {"max_tokens", p.max_tokens},
              {"text_tokens", total_tokens},
              {"bos", "the tokenizer's own rule (add_special_tokens), text as one string"},
              {"description", p.Describe(total_tokens)}};
}

absl::StatusOr<json> EvalInProcess(const EvalOptions& o) {
  BITLOOM_ASSIGN_OR_RETURN(auto store, modelstore::ModelStore::Open(o.store_path));
  const int threads =
      o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // The caller's thread works in ParallelFor too.
  std::unique_ptr<ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<ThreadPool>(threads - 1);

  std::cerr << "eval: loading " << o.model << "\n";
  BITLOOM_ASSIGN_OR_RETURN(LoadedArtifact model, LoadArtifact(*store, o.model, pool.get()));
  std::optional<LoadedArtifact> reference;
  if (!o.reference.empty()) {
    std::cerr << "eval: loading reference " << o.reference << "\n";
    BITLOOM_ASSIGN_OR_RETURN(reference, LoadArtifact(*store, o.reference, pool.get()));
  }
  BITLOOM_ASSIGN_OR_RETURN(const std::string text, ReadText(o.text_path));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<int32_t> ids,
                           model.tokenizer->Encode(text, /*add_bos=*/true, /*parse_special=*/false));
  if (reference.has_value()) {
    BITLOOM_ASSIGN_OR_RETURN(const std::vector<int32_t> ref_ids,
                             reference->tokenizer->Encode(text, true, false));
    if (ref_ids != ids) {
      return absl::InvalidArgumentError(absl::StrCat("--reference: ", o.reference, " tokenizes the text into ",
                                                     ref_ids.size(), " ids, ", o.model, " into ", ids.size(),
                                                     " (or into different ids): not the same tokenizer"));
    }
  }
  if (!o.ids_out.empty()) BITLOOM_RETURN_IF_ERROR(WriteIds(o.ids_out, ids));
  BITLOOM_ASSIGN_OR_RETURN(const engine::EvaluationProtocol protocol,
                           Protocol(o, static_cast<int>(model.model->resolved().max_position_embeddings)));
  std::cerr << "eval: " << protocol.Describe(static_cast<int64_t>(ids.size())) << ", " << threads
            << " threads\n";
  const absl::Time start = absl::Now();
  BITLOOM_ASSIGN_OR_RETURN(
      const engine::EvaluationResult r,
      engine::EvaluateModels(*model.model, reference.has_value() ? reference->model.get() : nullptr, ids,
                             protocol, ProgressPrinter(start)));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  json report;
  report["mode"] = "in-process CPU engine";
  report["protocol"] = ProtocolJson(protocol, static_cast<int64_t>(ids.size()));
  report["windows"] = r.windows;
  report["tokens_scored"] = r.targets;
  auto side = [](const std::string& name, const LoadedArtifact& a, const engine::ModelScoreSums& s) {
    json j = Metrics(s);
    j["name"] = name;
    j["bits_per_weight"] = a.reader->manifest().bits_per_weight();
    j["file_bytes"] = a.reader->file_size();
    return j;
  };
  report["model"] = side(o.model, model, r.model);
  if (reference.has_value()) {
    report["reference"] = side(o.reference, *reference, r.reference);
    report["kl_divergence"] = json{{"mean", r.MeanKl()}, {"max", r.kl_max}, {"direction", "KL(reference || model)"},
                                   {"unit", "nats per token"}};
    report["top1_agreement"] = r.Top1Agreement();
  }
  report["seconds"] = seconds;
  report["models_run"] = reference.has_value() ? 2 : 1;
  report["threads"] = threads;
  return report;
}

absl::StatusOr<json> EvalOverInferd(const EvalOptions& o) {
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel(o.inferd_address, grpc::InsecureChannelCredentials()));
  auto context = [&] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(absl::ToChronoTime(absl::Now() + o.rpc_timeout));
    return c;
  };
  // The served context of the model caps the windows (ScoreTokens takes at most that many ids).
  v1::ListModelsResponse models;
  grpc::Status s = stub->ListModels(context().get(), {}, &models);
  if (!s.ok()) return FromGrpc(s, absl::StrCat("ListModels on ", o.inferd_address));
  auto info = [&](const std::string& id) -> absl::StatusOr<v1::ModelInfo> {
    for (const v1::ModelInfo& m : models.models()) {
      if (m.model_id() == id) return m;
    }
    return absl::NotFoundError(absl::StrCat("model id '", id, "' is not loaded in inferd at ", o.inferd_address,
                                            " (bitloom models load ARTIFACT)"));
  };
  BITLOOM_ASSIGN_OR_RETURN(const v1::ModelInfo model_info, info(o.model));
  int served_context = static_cast<int>(model_info.context_length());
  std::optional<v1::ModelInfo> ref_info;
  if (!o.reference.empty()) {
    BITLOOM_ASSIGN_OR_RETURN(ref_info, info(o.reference));
    served_context = std::min(served_context, static_cast<int>(ref_info->context_length()));
  }

  BITLOOM_ASSIGN_OR_RETURN(const std::string text, ReadText(o.text_path));
  auto tokenize = [&](const std::string& id) -> absl::StatusOr<std::vector<int32_t>> {
    v1::TokenizeRequest req;
    req.set_model_id(id);
    req.set_text(text);
    req.set_add_bos(true);
    req.set_parse_special(false);
    v1::TokenizeResponse resp;
    grpc::Status st = stub->Tokenize(context().get(), req, &resp);
    if (!st.ok()) return FromGrpc(st, absl::StrCat("Tokenize(", id, ")"));
    return std::vector<int32_t>(resp.ids().begin(), resp.ids().end());
  };
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, tokenize(o.model));
  if (ref_info.has_value()) {
    BITLOOM_ASSIGN_OR_RETURN(const std::vector<int32_t> ref_ids, tokenize(o.reference));
    if (ref_ids != ids) {
      return absl::InvalidArgumentError(
          absl::StrCat("--reference: ", o.reference, " tokenizes the text differently from ", o.model));
    }
  }
  if (!o.ids_out.empty()) BITLOOM_RETURN_IF_ERROR(WriteIds(o.ids_out, ids));
  BITLOOM_ASSIGN_OR_RETURN(const engine::EvaluationProtocol protocol, Protocol(o, served_context));
  std::cerr << "eval: " << protocol.Describe(static_cast<int64_t>(ids.size())) << ", through inferd at "
            << o.inferd_address << "\n";

  auto scorer = [&](const std::string& id) -> engine::WindowScorer {
    return [&, id](absl::Span<const int32_t> window) -> absl::StatusOr<engine::TokenScores> {
      v1::ScoreTokensRequest req;
      req.set_model_id(id);
      for (int32_t t : window) req.add_ids(static_cast<uint32_t>(t));
      v1::ScoreTokensResponse resp;
      grpc::Status st = stub->ScoreTokens(context().get(), req, &resp);
      if (!st.ok()) return FromGrpc(st, absl::StrCat("ScoreTokens(", id, ")"));
      engine::TokenScores scores;
      scores.logprobs.assign(resp.logprobs().begin(), resp.logprobs().end());
      scores.greedy.assign(resp.greedy().begin(), resp.greedy().end());
      return scores;
    };
  };
  const engine::WindowScorer model_scorer = scorer(o.model);
  const engine::WindowScorer ref_scorer = ref_info.has_value() ? scorer(o.reference) : engine::WindowScorer();
  const absl::Time start = absl::Now();
  BITLOOM_ASSIGN_OR_RETURN(const engine::EvaluationResult r,
                           engine::EvaluateScorers(model_scorer, ref_info.has_value() ? &ref_scorer : nullptr, ids,
                                                   protocol, ProgressPrinter(start)));
  json report;
  report["mode"] = absl::StrCat("inferd ScoreTokens at ", o.inferd_address);
  report["protocol"] = ProtocolJson(protocol, static_cast<int64_t>(ids.size()));
  report["windows"] = r.windows;
  report["tokens_scored"] = r.targets;
  report["model"] = Metrics(r.model);
  report["model"]["name"] = o.model;
  report["model"]["bits_per_weight"] = model_info.bits_per_weight();
  if (ref_info.has_value()) {
    report["reference"] = Metrics(r.reference);
    report["reference"]["name"] = o.reference;
    report["reference"]["bits_per_weight"] = ref_info->bits_per_weight();
  }
  report["note"] =
      "KL divergence and top-1 agreement need both full next-token distributions, which ScoreTokens does not "
      "return (only the target's log-probability and whether it was the argmax): over gRPC only perplexity "
      "and top-1 accuracy are reported. Run without --inferd for KL.";
  report["seconds"] = absl::ToDoubleSeconds(absl::Now() - start);
  return report;
}

}  // namespace

absl::Status RunEval(const EvalOptions& o) {
  if (o.model.empty()) return absl::InvalidArgumentError("eval: the model (artifact name or model id) is empty");
  absl::StatusOr<json> report = o.inferd_address.empty() ? EvalInProcess(o) : EvalOverInferd(o);
  if (!report.ok()) return report.status();
  (*report)["text"] = o.text_path;
  const std::string json_text = report->dump(2);
  const std::string md = Markdown(*report);
  std::cout << json_text << "\n";
  std::cerr << "\n" << md;
  if (!o.json_out.empty()) BITLOOM_RETURN_IF_ERROR(WriteText(o.json_out, json_text + "\n"));
  if (!o.markdown_out.empty()) BITLOOM_RETURN_IF_ERROR(WriteText(o.markdown_out, md));
  return absl::OkStatus();
}

}  // namespace bitloom::tools
