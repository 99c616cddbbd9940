#include "bitloom/core/mapped_file.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace bitloom {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "." + std::to_string(::getpid());
}

TEST(MappedFileTest, ViewsAreBoundsChecked) {
  const std::string path = TempPath("mapped");
  { std::ofstream(path, std::ios::binary) << "0123456789"; }
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->size(), 10u);
  auto view = file->View(2, 3);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(std::string(view->begin(), view->end()), "234");
  EXPECT_TRUE(file->View(10, 0).ok());
  EXPECT_EQ(file->View(10, 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(file->View(3, UINT64_MAX).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(file->View(UINT64_MAX, 2).status().code(), absl::StatusCode::kOutOfRange);
  std::remove(path.c_str());
}

TEST(MappedFileTest, MappingSurvivesUnlink) {
  const std::string path = TempPath("unlinked");
  { std::ofstream(path, std::ios::binary) << "still here"; }
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok());
  ASSERT_EQ(std::remove(path.c_str()), 0);
  EXPECT_EQ(std::string(file->bytes().begin(), file->bytes().end()), "still here");
}

TEST(MappedFileTest, MissingFileAndDirectoryAreErrors) {
  EXPECT_EQ(MappedFile::Open("/nonexistent/bitloom").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MappedFile::Open(::testing::TempDir()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(MappedFileTest, EmptyFileMapsToEmptyView) {
  const std::string path = TempPath("empty");
  { std::ofstream(path, std::ios::binary); }
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->size(), 0u);
  EXPECT_TRUE(file->View(0, 0).ok());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace bitloom
