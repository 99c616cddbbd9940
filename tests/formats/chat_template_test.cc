// Chat template tests: the Jinja interpreter on small cases and malformed templates, then golden
// tests against Python jinja2 configured as transformers' apply_chat_template (run through
// chat_template_golden.py in the project venv) for the supported families' templates.
#include "bitloom/formats/chat_template.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace bitloom::formats {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string Render(std::string_view source, jinja::ValueDict context = {}) {
  auto t = jinja::Template::Parse(source);
  if (!t.ok()) return "PARSE ERROR: " + std::string(t.status().message());
  auto out = t->Render(jinja::Value(std::move(context)));
  if (!out.ok()) return "RENDER ERROR: " + std::string(out.status().message());
  return *out;
}

TEST(JinjaTest, ExpressionsAndStatements) {
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 8 }}"),
            "7 3 2 3.5 256");
  EXPECT_EQ(Render("{{ 'a' ~ 1 ~ none }} {{ 'ab' + 'cd' }} {{ [1, 'x', none, 1.0, true] }}"),
            "a1None abcd [1, 'x', None, 1.0, True]");
  EXPECT_EQ(Render("{{ 'abcdef'[1:4] }}{{ 'abcdef'[::-2] }}{{ [1,2,3][-1] }}"), "bcdfdb3");
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index0 }}{{ x }}{% if not loop.last %},{% endif %}"
                   "{% endfor %}",
                   {{"xs", jinja::Value(jinja::ValueList{"a", "b"})}}),
            "0a,1b");
  EXPECT_EQ(Render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
                   "{% endfor %}{{ ns.n }}"),
            "6");
  // A plain set inside a loop does not leak out of it (jinja2 scoping).
  EXPECT_EQ(Render("{% set n = 1 %}{% for i in [1] %}{% set n = 5 %}{% endfor %}{{ n }}"), "1");
  EXPECT_EQ(Render("{{ ' Hi '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'Xy'.startswith('X') }}"),
            "Hi|['a', 'b']|True");
  EXPECT_EQ(Render("{{ x | default('d') }}{{ x is defined }}{{ 3 is odd }}{{ 'b' in 'abc' }}"),
            "dFalseTrueTrue");
  EXPECT_EQ(Render("{{ {'k': [1, 'é\"'], 'f': 0.5} | tojson }}"), R"({"k": [1, "é\""], "f": 0.5})");
  EXPECT_EQ(Render("{% macro m(a, b='!') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b='?') }}"),
            "<1!><2?>");
  EXPECT_EQ(Render("{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 100.0 }}"),
            "0.30000000000000004 1e+20 1.5e-07 100.0");
}

TEST(JinjaTest, WhitespaceControl) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before one.
  EXPECT_EQ(Render("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(Render("a  {{- ' b ' -}}  c"), "a b c");
  EXPECT_EQ(Render("x\n{%- if true -%}\n  y  \n{%- endif %}"), "xy");
  EXPECT_EQ(Render("{# comment #}\nz"), "z");
}

TEST(JinjaTest, ErrorsAreStatuses) {
  const std::vector<std::string> bad = {
      "{{ 1 + }}", "{% if x %}", "{% for %}{% endfor %}", "{{ 'unterminated }}", "{{ x.y.z }}",
      "{{ [1] | no_such_filter }}", "{% endfor %}", "{{ raise_exception('boom') }}",
      "{{ 1 / 0 }}", "{{ range(100000000) | length }}", "{% set x.y = 1 %}", "{{ 'a' + 1 }}",
      "{% break %}", "{{ none | length }}", "{{ " + std::string(2000, '(') + "1" +
          std::string(2000, ')') + " }}",
      "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
  };
  for (const std::string& source : bad) {
    auto t = jinja::Template::Parse(source);
    if (!t.ok()) continue;
    auto out = t->Render(jinja::Value(jinja::ValueDict{}));
    EXPECT_FALSE(out.ok()) << source << " rendered " << *out;
  }
  auto t = ChatTemplate::Parse("{{ raise_exception('roles must alternate') }}");
  ASSERT_TRUE(t.ok());
  auto out = t->Apply({}, {});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("roles must alternate"), std::string_view::npos);
}

// ---- Golden tests against jinja2 ----

// Public chat templates of the supported families (from their tokenizer_config.json files).
const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ "
    "content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const char* kLlama32 = R"({{- bos_token }}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)";

const char* kQwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const char* kQwen3 = R"({%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %})";

const char* kMistral =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % "
    "2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' "
    "+ message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are "
    "supported!') }}{% endif %}{% endfor %}";

const char* kMistralV3 = R"({%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
)";

const char* kGemma3 = R"({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
)";

// Not a model's template: exercises the interpreter's breadth against jinja2.
const char* kFeatures = R"({%- macro fmt(role, text, suffix='!') -%}[{{ role|upper }}] {{ text }}{{ suffix }}{%- endmacro -%}
{%- set ns = namespace(count=0) -%}
{%- for m in messages if m.role != 'system' -%}
{{ loop.index }}/{{ loop.length }}{{ ' first' if loop.first }}{{ ' last' if loop.last else '' }}: {{ fmt(m.role, m['content']|trim) }}
{% set ns.count = ns.count + m.content|length %}
{%- endfor %}
total={{ ns.count }} half={{ ns.count // 2 }} quarter={{ ns.count / 4 }} mod={{ ns.count % 7 }} pow={{ 2 ** 10 }}
roles={{ messages|map(attribute='role')|join(',') }} users={{ messages|selectattr('role', 'equalto', 'user')|list|length }}
json={{ {'a': 1, 'b': [true, none, 'x"y'], 'c': 1.5}|tojson }} repr={{ [1, 'two', none, 2.0] }} {{ none }} {{ true }}
{% set block %}captured {{ messages|length }}{% endset %}{{ block|replace('captured', 'got') }}
{{ "=" * 5 }}{{ 'abc'[::-1] }}{{ 'hello world'.split() }}{{ ' x '.strip() ~ '|' }}{{ messages[-1].content[:3] }}
{% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}={{ v }}{{ ',' if not loop.last }}{% endfor %}
{% for i in range(6) %}{% if i == 5 %}{% break %}{% endif %}{% if i is odd %}{% continue %}{% endif %}{{ i }}{% endfor %}
{{ 'yes' if 'world' in 'hello world' else 'no' }} {{ 3 in [1, 2, 3] }} {{ 'b' not in {'a': 1} }}
    {%+ if add_generation_prompt %}gen{% endif %}
{{ undefined_thing|default('dflt') }} {{ ''|default('empty', true) }} {{ missing is defined }} {{ messages|first|length }}
{%- for m in [] %}never{% else %} empty-loop{% endfor %}
)";

fs::path VenvPython() {
  if (const char* env = std::getenv("BITLOOM_VENV")) return fs::path(env) / "bin/python";
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache/bitloom/venv/bin/python";
}

fs::path ModelCache() {
  if (const char* env = std::getenv("BITLOOM_MODEL_CACHE")) return env;
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache/bitloom/models";
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json Conversations() {
  auto msg = [](const char* role, const char* content) {
    return json{{"role", role}, {"content", content}};
  };
  return json::array({
      json::array({msg("user", "Hello!")}),
      json::array({msg("system", "You are terse."), msg("user", "What is 2+2?")}),
      json::array({msg("system", "Be kind."), msg("user", "Hi"), msg("assistant", "Hello! How can I help?"),
                   msg("user", "Tell me a joke.")}),
      json::array({msg("user", "  Héllo 🌍  \n"), msg("assistant", "Hi!\n\n"), msg("user", "日本語?")}),
      json::array({msg("user", "q"), msg("assistant", "<think>\nreasoning\n</think>\n\nanswer"),
                   msg("user", "q2")}),
      // Starts with the assistant: the templates that check alternation raise.
      json::array({msg("assistant", "I speak first"), msg("user", "ok")}),
  });
}

TEST(ChatTemplateGoldenTest, MatchesJinja2) {
  if (!fs::exists(VenvPython())) {
    GTEST_SKIP() << "no Python venv at " << VenvPython() << "; run scripts/python-env.sh";
  }
  struct Family {
    const char* name;
    json source;
    const char* bos;
    const char* eos;
  };
  std::vector<Family> families = {
      {"llama3", kLlama3, "<|begin_of_text|>", "<|eot_id|>"},
      {"llama3.2", kLlama32, "<|begin_of_text|>", "<|eot_id|>"},
      {"qwen2", kQwen2, "", "<|im_end|>"},
      {"qwen3", kQwen3, "", "<|im_end|>"},
      {"mistral", kMistral, "<s>", "</s>"},
      {"mistral-v3", kMistralV3, "<s>", "</s>"},
      {"gemma3", kGemma3, "<bos>", "<eos>"},
      {"features", kFeatures, "<s>", "</s>"},
  };
  const fs::path smollm = ModelCache() / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (fs::exists(smollm)) {
    families.push_back({"smollm2 (GGUF)", json{{"gguf", smollm.string()}}, "<|im_start|>", "<|im_end|>"});
  } else {
    std::printf("SmolLM2 GGUF not cached; its own template is not checked\n");
  }
  json cases = json::array();
  std::vector<std::string> names;
  for (const Family& f : families) {
    int conv_index = 0;
    for (const json& conv : Conversations()) {
      for (bool gen : {false, true}) {
        cases.push_back({{"template", f.source}, {"messages", conv}, {"add_generation_prompt", gen},
                         {"bos_token", f.bos}, {"eos_token", f.eos}, {"extra", json::object()}});
        names.push_back(std::string(f.name) + " conversation " + std::to_string(conv_index) +
                        (gen ? " +generation prompt" : ""));
      }
      ++conv_index;
    }
    if (std::string(f.name) == "qwen3") {
      cases.push_back({{"template", f.source}, {"messages", Conversations()[0]},
                       {"add_generation_prompt", true}, {"bos_token", ""}, {"eos_token", ""},
                       {"extra", {{"enable_thinking", false}}}});
      names.push_back("qwen3 enable_thinking=false");
    }
  }
  char tmpl[] = "/tmp/bitloom_chatgold_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const fs::path dir = tmpl;
  std::ofstream(dir / "in.json") << json{{"cases", cases}}.dump();
  const std::string cmd = "'" + VenvPython().string() + "' '" BITLOOM_SOURCE_DIR
                          "/tests/formats/chat_template_golden.py' '" + (dir / "in.json").string() +
                          "' '" + (dir / "out.json").string() + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const json want = json::parse(ReadFile(dir / "out.json"));
  ASSERT_EQ(want.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    auto tmpl_or = ChatTemplate::Parse(want[i]["source"].get<std::string>());
    ASSERT_TRUE(tmpl_or.ok()) << names[i] << ": " << tmpl_or.status();
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    ChatTemplateOptions options;
    options.add_generation_prompt = c["add_generation_prompt"];
    options.bos_token = c["bos_token"];
    options.eos_token = c["eos_token"];
    if (c["extra"].contains("enable_thinking")) {
      options.extra.emplace_back("enable_thinking", jinja::Value(c["extra"]["enable_thinking"].get<bool>()));
    }
    auto got = tmpl_or->Apply(messages, options);
    if (want[i]["ok"].get<bool>()) {
      ASSERT_TRUE(got.ok()) << names[i] << ": " << got.status();
      EXPECT_EQ(*got, want[i]["text"].get<std::string>()) << names[i];
    } else {
      ASSERT_FALSE(got.ok()) << names[i] << ": jinja2 raised \"" << want[i]["error"]
                             << "\" but we rendered:\n" << *got;
      EXPECT_NE(got.status().message().find(want[i]["error"].get<std::string>()),
                std::string_view::npos)
          << names[i] << ": " << got.status();
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bitloom::formats
