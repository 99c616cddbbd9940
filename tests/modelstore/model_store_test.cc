#include "bitloom/modelstore/model_store.h"

#include <sys/stat.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace bitloom::modelstore {
namespace {

using testing::BaseManifest;
using testing::ListDir;
using testing::Meta;
using testing::PatternBytes;
using testing::ScratchDir;

class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(dir_.Join("store"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // Publishes `name` with one f32 tensor whose bytes depend on `seed`.
  absl::Status Publish(const std::string& name, uint32_t seed, bool overwrite = false) {
    auto writer = store_->NewWriter(name, overwrite);
    if (!writer.ok()) return writer.status();
    absl::Status s = (*writer)->AddTensor(Meta("w", v1::CODEC_F32, {16}), PatternBytes(64, seed));
    if (!s.ok()) return s;
    return (*writer)->Finish(BaseManifest(std::to_string(seed)));
  }

  ScratchDir dir_;
  std::unique_ptr<ModelStore> store_;
};

TEST(ModelStoreNameTest, Validation) {
  const std::vector<std::string> good_names = {"a", "llama-3.1-8b_q2.5", "A.b-C_d", "x..y",
                                               std::string(128, 'z')};
  for (const std::string& good : good_names) {
    EXPECT_TRUE(ModelStore::ValidateArtifactName(good).ok()) << good;
  }
  const std::vector<std::string> bad_names = {std::string(),
                                              std::string("."),
                                              std::string(".."),
                                              std::string("../x"),
                                              std::string("a/b"),
                                              std::string("/abs"),
                                              std::string(".hidden"),
                                              std::string(".tmp"),
                                              std::string(129, 'z'),
                                              std::string("caf\xc3\xa9"),
                                              std::string("sp ace"),
                                              std::string("nul\0x", 5),
                                              std::string("back\\slash")};
  for (const std::string& bad : bad_names) {
    const absl::Status s = ModelStore::ValidateArtifactName(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << "'" << bad << "'";
    EXPECT_TRUE(absl::StartsWith(s.message(), "name: ")) << s;
  }
  EXPECT_NE(ModelStore::ValidateArtifactName(std::string(129, 'z')).message().find("1 to 128"),
            std::string::npos);
  EXPECT_NE(ModelStore::ValidateArtifactName("a/b").message().find("0x2f"), std::string::npos);
}

TEST_F(ModelStoreTest, OpenCreatesLayoutAndPathOfValidates) {
  struct stat st {};
  ASSERT_EQ(::stat(store_->temp_dir().c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(*store_->PathOf("m"), dir_.Join("store/m.bitloom"));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->PathOf("../etc/passwd").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->NewWriter("../x", true).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Delete("a/b")));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->OpenReader("..").status()));
  // Reopening an existing store is fine.
  EXPECT_TRUE(ModelStore::Open(dir_.Join("store/")).ok());
}

TEST_F(ModelStoreTest, PublishListDescribeOpen) {
  ASSERT_TRUE(Publish("zeta", 1).ok());
  ASSERT_TRUE(Publish("alpha", 2).ok());
  auto list = store_->List();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name(), "alpha");
  EXPECT_EQ((*list)[1].name(), "zeta");
  EXPECT_EQ((*list)[0].architecture(), "llama");
  EXPECT_EQ((*list)[0].num_tensors(), 1u);
  EXPECT_EQ((*list)[0].format_version(), kFormatVersion);
  EXPECT_DOUBLE_EQ((*list)[0].bits_per_weight(), 16);
  EXPECT_GT((*list)[0].created_unix_ms(), 0);
  struct stat st {};
  ASSERT_EQ(::stat(store_->PathOf("alpha")->c_str(), &st), 0);
  EXPECT_EQ((*list)[0].size_bytes(), static_cast<uint64_t>(st.st_size));

  auto described = store_->Describe("alpha", /*verify_checksums=*/true);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->manifest.name(), "alpha");  // the store names the manifest
  EXPECT_EQ(described->manifest.quantizer_version(), "2");
  EXPECT_EQ(described->summary.name(), "alpha");

  auto reader = store_->OpenReader("zeta", {.verify_checksums = true});
  ASSERT_TRUE(reader.ok());
  auto bytes = (*reader)->TensorBytes("w");
  ASSERT_TRUE(bytes.ok());
  const auto want = PatternBytes(64, 1);
  EXPECT_TRUE(std::equal(bytes->begin(), bytes->end(), want.begin(), want.end()));

  EXPECT_TRUE(absl::IsNotFound(store_->Describe("nope", false).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->OpenReader("nope").status()));
}

TEST_F(ModelStoreTest, OverwriteRules) {
  ASSERT_TRUE(Publish("m", 1).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(Publish("m", 2)));
  EXPECT_EQ((*store_->Describe("m", false)).manifest.quantizer_version(), "1");
  ASSERT_TRUE(Publish("m", 3, /*overwrite=*/true).ok());
  EXPECT_EQ((*store_->Describe("m", true)).manifest.quantizer_version(), "3");
  EXPECT_TRUE(ListDir(store_->temp_dir()).empty());
}

TEST_F(ModelStoreTest, ConcurrentPublishersOfOneNameExactlyOneWins) {
  constexpr int kThreads = 8;
  for (int round = 0; round < 5; ++round) {
    const std::string name = "race" + std::to_string(round);
    std::barrier sync(kThreads);
    std::atomic<int> wins{0}, already_exists{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        auto writer = store_->NewWriter(name, /*overwrite=*/false);
        ASSERT_TRUE(writer.ok()) << writer.status();
        ASSERT_TRUE((*writer)->AddTensor(Meta("w", v1::CODEC_F32, {16}), PatternBytes(64, i)).ok());
        sync.arrive_and_wait();  // everyone passed the early existence check; publish together
        const absl::Status s = (*writer)->Finish(BaseManifest(std::to_string(i)));
        if (s.ok()) {
          ++wins;
        } else if (absl::IsAlreadyExists(s)) {
          ++already_exists;
        } else {
          ADD_FAILURE() << s;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(wins.load(), 1);
    EXPECT_EQ(already_exists.load(), kThreads - 1);
    auto reader = store_->OpenReader(name, {.verify_checksums = true});
    ASSERT_TRUE(reader.ok()) << reader.status();
    // The file is the winner's, whole.
    const int winner = std::stoi((*reader)->manifest().quantizer_version());
    const auto want = PatternBytes(64, static_cast<uint32_t>(winner));
    auto got = (*reader)->TensorBytes("w");
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(std::equal(got->begin(), got->end(), want.begin(), want.end()));
  }
  EXPECT_TRUE(ListDir(store_->temp_dir()).empty());
}

TEST_F(ModelStoreTest, ConcurrentOverwritersAllSucceedAndTheFileIsAlwaysValid) {
  constexpr int kThreads = 6;
  ASSERT_TRUE(Publish("hot", 100).ok());
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::thread reader_thread([&] {
    while (!done.load()) {
      auto reader = store_->OpenReader("hot", {.verify_checksums = true});
      ASSERT_TRUE(reader.ok()) << reader.status();  // never missing, never partial
      ++reads;
    }
  });
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 5; ++k)
        EXPECT_TRUE(Publish("hot", static_cast<uint32_t>(i * 10 + k), true).ok());
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  reader_thread.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_TRUE(store_->OpenReader("hot", {.verify_checksums = true}).ok());
}

TEST_F(ModelStoreTest, DeleteWhileAReaderHoldsTheMapping) {
  ASSERT_TRUE(Publish("m", 7).ok());
  auto reader = store_->OpenReader("m");
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(store_->Delete("m").ok());
  EXPECT_TRUE(absl::IsNotFound(store_->OpenReader("m").status()));
  EXPECT_TRUE(absl::IsNotFound(store_->Delete("m")));
  EXPECT_TRUE(store_->List()->empty());
  // The open reader still sees the whole, valid artifact.
  EXPECT_TRUE((*reader)->VerifyChecksums().ok());
  auto bytes = (*reader)->TensorBytes("w");
  ASSERT_TRUE(bytes.ok());
  const auto want = PatternBytes(64, 7);
  EXPECT_TRUE(std::equal(bytes->begin(), bytes->end(), want.begin(), want.end()));
  // The name is free again.
  EXPECT_TRUE(Publish("m", 8).ok());
}

TEST_F(ModelStoreTest, ListShowsOnlyPublishedReadableArtifacts) {
  ASSERT_TRUE(Publish("real", 1).ok());
  // An in-progress writer's temp file.
  auto writer = store_->NewWriter("pending", false);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->AddTensor(Meta("w", v1::CODEC_F32, {1}), PatternBytes(4, 1)).ok());
  // Junk a person or a crashed tool might leave in the root.
  testing::WriteFileBytes(dir_.Join("store/garbage.bitloom"), PatternBytes(100, 1));
  testing::WriteFileBytes(dir_.Join("store/.hidden.bitloom"), PatternBytes(100, 1));
  testing::WriteFileBytes(dir_.Join("store/notes.txt"), PatternBytes(10, 1));
  ASSERT_EQ(::mkdir(dir_.Join("store/dir.bitloom").c_str(), 0755), 0);
  ASSERT_EQ(::mkfifo(dir_.Join("store/fifo.bitloom").c_str(), 0644), 0);  // must not block List
  // A temp file that was put in the root by a writer whose temp_dir is the root.
  auto root_writer = ArtifactWriter::Create(*store_->PathOf("other"), store_->root());
  ASSERT_TRUE(root_writer.ok());

  auto list = store_->List();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name(), "real");

  ASSERT_TRUE((*writer)->Finish(BaseManifest()).ok());
  list = store_->List();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name(), "pending");
}

TEST_F(ModelStoreTest, AbandonedWriterLeavesNoArtifact) {
  {
    auto writer = store_->NewWriter("gone", false);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->AddTensor(Meta("w", v1::CODEC_F32, {16}), PatternBytes(64, 1)).ok());
    EXPECT_EQ(ListDir(store_->temp_dir()).size(), 1u);
  }
  EXPECT_TRUE(ListDir(store_->temp_dir()).empty());
  EXPECT_TRUE(absl::IsNotFound(store_->OpenReader("gone").status()));
  EXPECT_TRUE(store_->List()->empty());
}

TEST_F(ModelStoreTest, OpenSweepsStaleTempFiles) {
  const std::string stale = store_->temp_dir() + "/.old.bitloom.0123.tmp";
  const std::string fresh = store_->temp_dir() + "/.new.bitloom.4567.tmp";
  testing::WriteFileBytes(stale, PatternBytes(10, 1));
  testing::WriteFileBytes(fresh, PatternBytes(10, 1));
  struct timeval old_times[2] = {{1000000000, 0}, {1000000000, 0}};  // 2001
  ASSERT_EQ(::utimes(stale.c_str(), old_times), 0);

  ASSERT_TRUE(ModelStore::Open(store_->root(), {.stale_temp_age = absl::ZeroDuration()}).ok());
  EXPECT_EQ(ListDir(store_->temp_dir()).size(), 2u);  // sweep disabled
  ASSERT_TRUE(ModelStore::Open(store_->root()).ok());
  EXPECT_EQ(ListDir(store_->temp_dir()), std::vector<std::string>{".new.bitloom.4567.tmp"});
}

TEST_F(ModelStoreTest, UnreadableArtifactIsReportedAsDataLoss) {
  ASSERT_TRUE(Publish("m", 1).ok());
  const std::string path = *store_->PathOf("m");
  auto bytes = testing::ReadFileBytes(path);
  bytes.resize(bytes.size() - 1);
  testing::WriteFileBytes(path, bytes);
  EXPECT_TRUE(absl::IsDataLoss(store_->Describe("m", false).status()));
  EXPECT_TRUE(store_->List()->empty());   // skipped, logged
  EXPECT_TRUE(store_->Delete("m").ok());  // and still deletable
}

TEST(ModelStoreOpenTest, RootThatIsAFileIsAnError) {
  ScratchDir dir;
  testing::WriteFileBytes(dir.Join("file"), PatternBytes(1, 1));
  EXPECT_TRUE(absl::IsFailedPrecondition(ModelStore::Open(dir.Join("file")).status()));
}

}  // namespace
}  // namespace bitloom::modelstore
