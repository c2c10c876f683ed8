#include "libs/auth/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <memory>

#include "absl/strings/escaping.h"
#include "libs/core/status.h"

namespace mkt::auth {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;

std::string ToHex(const unsigned char* data, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(data), n));
}

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  }
  return s.size() % 2 == 0;
}

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

}  // namespace

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return ToHex(digest, sizeof(digest));
}

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, &len);
  return ToHex(digest, len);
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<SecretBox> SecretBox::FromHexKey(std::string_view hex_key) {
  if (hex_key.size() != 64 || !IsHex(hex_key)) {
    return InvalidArgument(
        "secret_key",
        "the secret encryption key must be 64 hexadecimal characters (32 bytes); "
        "generate one with `openssl rand -hex 32`");
  }
  return SecretBox(absl::HexStringToBytes(AsAbsl(hex_key)));
}

std::string SecretBox::Seal(std::string_view plaintext, std::string_view associated) const {
  unsigned char nonce[kNonceBytes];
  RAND_bytes(nonce, kNonceBytes);
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr);
  EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr,
                     reinterpret_cast<const unsigned char*>(key_.data()), nonce);
  int len = 0;
  EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                    reinterpret_cast<const unsigned char*>(associated.data()),
                    static_cast<int>(associated.size()));
  std::string out(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  std::copy(nonce, nonce + kNonceBytes, o);
  EVP_EncryptUpdate(ctx.get(), o + kNonceBytes, &len,
                    reinterpret_cast<const unsigned char*>(plaintext.data()),
                    static_cast<int>(plaintext.size()));
  int total = len;
  EVP_EncryptFinal_ex(ctx.get(), o + kNonceBytes + total, &len);
  total += len;
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, o + kNonceBytes + total);
  return ToHex(o, kNonceBytes + static_cast<size_t>(total) + kTagBytes);
}

absl::StatusOr<std::string> SecretBox::Open(std::string_view sealed_hex,
                                            std::string_view associated) const {
  if (!IsHex(sealed_hex) || sealed_hex.size() < 2 * (kNonceBytes + kTagBytes)) {
    return Internal("sealed secret is malformed");
  }
  std::string sealed = absl::HexStringToBytes(AsAbsl(sealed_hex));
  const auto* s = reinterpret_cast<const unsigned char*>(sealed.data());
  size_t body = sealed.size() - kNonceBytes - kTagBytes;
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr);
  EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr,
                     reinterpret_cast<const unsigned char*>(key_.data()), s);
  int len = 0;
  EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                    reinterpret_cast<const unsigned char*>(associated.data()),
                    static_cast<int>(associated.size()));
  std::string out(body, '\0');
  EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, s + kNonceBytes,
                    static_cast<int>(body));
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes,
                      const_cast<unsigned char*>(s + kNonceBytes + body));
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len,
                          &final_len) != 1) {
    return Internal("sealed secret does not open: wrong key, or the stored value was altered");
  }
  return out;
}

}  // namespace mkt::auth
