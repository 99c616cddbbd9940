#include "sha256.h"

#include <openssl/evp.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/core/mapped_file.h"
#include "bitloom/core/status_macros.h"

namespace bitloom::formats {

void Sha256::FreeContext::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

absl::StatusOr<Sha256> Sha256::Create() {
  std::unique_ptr<evp_md_ctx_st, FreeContext> ctx(EVP_MD_CTX_new());
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("SHA-256: libcrypto could not set up a digest context");
  }
  return Sha256(std::move(ctx));
}

absl::Status Sha256::Update(absl::Span<const uint8_t> data) {
  if (!data.empty() && EVP_DigestUpdate(ctx_.get(), data.data(), data.size()) != 1) {
    return absl::InternalError("SHA-256: libcrypto digest update failed");
  }
  return absl::OkStatus();
}

absl::Status Sha256::UpdateFromFile(const std::string& path) {
  BITLOOM_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  constexpr uint64_t kPiece = uint64_t{64} << 20;
  for (uint64_t offset = 0; offset < file.size(); offset += kPiece) {
    const uint64_t length = std::min(kPiece, file.size() - offset);
    file.WillNeed(offset, length);
    BITLOOM_ASSIGN_OR_RETURN(auto bytes, file.View(offset, length));
    BITLOOM_RETURN_IF_ERROR(Update(bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Sha256::FinishHex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), digest, &length) != 1 || length != 32) {
    return absl::InternalError("SHA-256: libcrypto digest finish failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(64, '0');
  for (int i = 0; i < 32; ++i) {
    hex[2 * i] = kHex[digest[i] >> 4];
    hex[2 * i + 1] = kHex[digest[i] & 15];
  }
  return hex;
}

}  // namespace bitloom::formats
