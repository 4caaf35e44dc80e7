#include "server/grpc/grpc_convert.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "engine/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace switchyard {
namespace {

absl::StatusOr<std::optional<OutputConstraint>> ConstraintFromProto(
    const v1::GenerateRequest& req) {
  if (!req.has_constraint()) return std::nullopt;
  const v1::OutputConstraint& c = req.constraint();
  OutputConstraint out;
  switch (c.kind_case()) {
    case v1::OutputConstraint::kJsonSchema:
      out = {OutputConstraint::Kind::kJsonSchema, c.json_schema(), "constraint.json_schema"};
      break;
    case v1::OutputConstraint::kJsonObject:
      if (!c.json_object()) return std::nullopt;
      out = {OutputConstraint::Kind::kJsonObject, "", "constraint.json_object"};
      break;
    case v1::OutputConstraint::kRegex:
      out = {OutputConstraint::Kind::kRegex, c.regex(), "constraint.regex"};
      break;
    case v1::OutputConstraint::kChoice: {
      if (c.choice().choices().empty()) {
        return absl::InvalidArgumentError("constraint.choice: give at least one string");
      }
      nlohmann::json list = nlohmann::json::array();
      for (const std::string& s : c.choice().choices()) list.push_back(s);
      out = {OutputConstraint::Kind::kChoice,
             list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
             "constraint.choice"};
      break;
    }
    case v1::OutputConstraint::kGrammar:
      out = {OutputConstraint::Kind::kGrammar, c.grammar(), "constraint.grammar"};
      break;
    default:
      return std::nullopt;
  }
  return out;
}

}  // namespace

absl::StatusOr<GenerateInput> GenerateInputFromProto(const v1::GenerateRequest& req,
                                                     std::optional<absl::Time> deadline) {
  GenerateInput in;
  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText:
      in.text = req.text();
      break;
    case v1::GenerateRequest::kTokenIds:
      in.token_ids.emplace(req.token_ids().ids().begin(), req.token_ids().ids().end());
      break;
    case v1::GenerateRequest::kMessages: {
      const v1::ChatMessages& chat = req.messages();
      std::vector<ChatMessage> messages;
      for (const v1::ChatMessage& m : chat.messages()) messages.push_back({m.role(), m.content()});
      in.chat = ChatInput::FromMessages(messages);
      if (chat.has_add_generation_prompt()) {
        in.chat->add_generation_prompt = chat.add_generation_prompt();
      }
      if (!chat.chat_template_kwargs_json().empty()) {
        in.chat->template_kwargs = nlohmann::ordered_json::parse(
            chat.chat_template_kwargs_json(), nullptr, /*allow_exceptions=*/false);
        if (!in.chat->template_kwargs.is_object()) {
          return absl::InvalidArgumentError(
              "messages.chat_template_kwargs_json: must be a JSON object");
        }
      }
      break;
    }
    default:
      return absl::InvalidArgumentError("prompt: set one of text, token_ids or messages");
  }
  if (req.has_add_special_tokens()) in.add_special_tokens = req.add_special_tokens();
  in.adapter = req.adapter();
  for (const v1::AdapterWeight& a : req.adapters()) {
    in.mixture.push_back({a.name(), a.has_weight() ? a.weight() : 1.0f});
  }
  in.echo = req.echo();
  GenerationRequest& r = in.request;
  const v1::SamplingParams& s = req.sampling();
  if (s.has_temperature()) r.sampling.temperature = s.temperature();
  if (s.has_top_p()) r.sampling.top_p = s.top_p();
  r.sampling.top_k = s.top_k();
  r.sampling.min_p = s.min_p();
  if (s.has_repetition_penalty()) r.sampling.repetition_penalty = s.repetition_penalty();
  r.sampling.presence_penalty = s.presence_penalty();
  r.sampling.frequency_penalty = s.frequency_penalty();
  for (const auto& [token, bias] : s.logit_bias()) r.sampling.logit_bias.emplace_back(token, bias);
  // Map order is unspecified; sort so equal requests sample alike.
  std::sort(r.sampling.logit_bias.begin(), r.sampling.logit_bias.end());
  if (s.has_seed()) r.sampling.seed = s.seed();
  if (req.has_logprobs()) r.sampling.logprobs = req.logprobs();
  if (req.has_max_tokens()) r.max_tokens = req.max_tokens();
  r.stop_strings.assign(req.stop().begin(), req.stop().end());
  r.stop_token_ids.assign(req.stop_token_ids().begin(), req.stop_token_ids().end());
  r.ignore_eos = req.ignore_eos();
  r.record_routing = req.include_routing();
  if (req.has_skip_special_tokens()) r.skip_special_tokens = req.skip_special_tokens();
  if (deadline.has_value()) r.deadline = *deadline;
  SY_ASSIGN_OR_RETURN(in.constraint, ConstraintFromProto(req));
  return in;
}

void ExpertReportToProto(const ExpertReport& report, v1::GetExpertDiagnosticsResponse* out) {
  out->set_adapter(report.adapter);
  out->set_version(report.version);
  out->set_similarity_threshold(report.similarity_threshold);
  for (const SiteDiagnostics& d : report.diagnostics->sites) {
    v1::SiteDiagnostics* s = out->add_sites();
    s->set_layer(d.layer);
    s->set_site(d.site);
    s->set_experts(d.experts);
    s->mutable_rank()->Add(d.rank.begin(), d.rank.end());
    s->mutable_norm()->Add(d.norm.begin(), d.norm.end());
    s->mutable_effective_rank()->Add(d.effective_rank.begin(), d.effective_rank.end());
    s->mutable_similarity()->Add(d.similarity.begin(), d.similarity.end());
    s->mutable_router_norm()->Add(d.router_norm.begin(), d.router_norm.end());
  }
  for (const RedundantPair& p : report.redundant) {
    v1::RedundantExpertPair* r = out->add_redundant_pairs();
    r->set_layer(p.layer);
    r->set_site(p.site);
    r->set_first(p.first);
    r->set_second(p.second);
    r->set_similarity(p.similarity);
  }
  out->set_window_full(report.window_full);
  for (const ExpertReport::DeadExperts& d : report.dead) {
    v1::DeadExperts* x = out->add_dead_experts();
    x->set_layer(d.layer);
    x->set_site(d.site);
    x->mutable_experts()->Add(d.experts.begin(), d.experts.end());
  }
  out->set_max_similarity(report.summary.max_similarity);
  out->set_min_effective_rank(report.summary.min_effective_rank);
  out->set_mean_effective_rank(report.summary.mean_effective_rank);
}

}  // namespace switchyard
