// SafetensorsFile on synthetic files: a valid one, truncation, and hostile headers.
#include "bitloom/formats/safetensors_file.h"

#include "gtest/gtest.h"
#include "test_files.h"

namespace bitloom::formats {
namespace {

using testing::Bytes;
using testing::TempDir;

std::string Safetensors(const std::string& header, const std::string& data) {
  return Bytes().Put<uint64_t>(header.size()).Raw(header).Raw(data).str();
}

TEST(SafetensorsTest, ReadsF32F16Bf16) {
  TempDir dir;
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]},"c":{"dtype":"BF16","shape":[1],"data_offsets":[12,14]}})";
  const std::string data = Bytes().Put<float>(1.5f).Put<float>(-2.f).Put<uint16_t>(0x3c00).Put<uint16_t>(0xc000)
                               .Put<uint16_t>(0x3f80).str();
  auto f = SafetensorsFile::Open(dir.Write("m.safetensors", Safetensors(header, data)));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  std::vector<float> a(2), b(2), c(1);
  ASSERT_TRUE((*f)->ReadF32(*(*f)->Find("a"), absl::MakeSpan(a)).ok());
  ASSERT_TRUE((*f)->ReadF32(*(*f)->Find("b"), absl::MakeSpan(b)).ok());
  ASSERT_TRUE((*f)->ReadF32(*(*f)->Find("c"), absl::MakeSpan(c)).ok());
  EXPECT_EQ(a, (std::vector<float>{1.5f, -2.f}));
  EXPECT_EQ(b, (std::vector<float>{1.f, -2.f}));
  EXPECT_EQ(c, (std::vector<float>{1.f}));
  EXPECT_EQ((*f)->Find("b")->shape, (std::vector<uint64_t>{1, 2}));
  // Every truncation of the file fails cleanly (the last tensor ends the file).
  const std::string full = Safetensors(header, data);
  for (size_t len = 0; len < full.size(); ++len) {
    EXPECT_FALSE(SafetensorsFile::Open(dir.Write("t.safetensors", full.substr(0, len))).ok()) << len;
  }
}

void ExpectInvalid(const std::string& bytes, const std::string& fragment) {
  TempDir dir;
  auto f = SafetensorsFile::Open(dir.Write("bad.safetensors", bytes));
  ASSERT_FALSE(f.ok()) << "expected an error containing '" << fragment << "'";
  EXPECT_NE(std::string(f.status().message()).find(fragment), std::string::npos) << f.status();
}

TEST(SafetensorsTest, HostileHeadersAreRejected) {
  ExpectInvalid("1234", "no header");
  ExpectInvalid(Bytes().Put<uint64_t>(1ull << 40).Raw("{}").str(), "header length");
  ExpectInvalid(Safetensors("{not json", ""), "not valid JSON");
  ExpectInvalid(Safetensors("[1]", ""), "not a JSON object");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", "x"), "unknown dtype");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "xxxx"), "need 2 x 4");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}})", "xxxx"),
                "outside the data section");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "xxxx"),
                "outside the data section");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "xxxx"), "non-integer");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "xxxx"),
                "overflows");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"F16","shape":[2],"data_offsets":[2,6]}})",
                            "xxxxxx"),
                "overlap");
  ExpectInvalid(Safetensors(R"({"a":{"dtype":"F32","shape":[1]}})", "xxxx"), "data_offsets");
}

}  // namespace
}  // namespace bitloom::formats
